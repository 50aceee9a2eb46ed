// End-to-end: cron schedules in the real ledgerqd through gRPC and the CLI. Add, list and remove;
// validation errors by field; a config file's schedule (source config) that the API can neither
// replace nor remove; SCHEDULE_ADDED / SCHEDULE_REMOVED in `ledgerq audit export`; --check-config;
// and roles (an operator may list but not add). Firing itself runs against an injected clock in
// the unit tests (tests/schedule_test.cc): a real minute is too slow here.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "client/client.h"
#include "tests/support/daemon.h"
#include "tests/support/e2e_helpers.h"
#include "tests/support/temp_dir.h"

namespace {

using ledgerq::Code;
using ledgerq::testing::Cli;
using ledgerq::testing::Daemon;
using ledgerq::testing::ExitInfo;
using ledgerq::testing::LedgerqdPath;
using ledgerq::testing::MakeClient;
using ledgerq::testing::RunCommand;
using ledgerq::testing::TempDir;
using ledgerq::testing::WriteFile;
namespace v1 = ledgerq::v1;

constexpr char kConfig[] = R"(
[schedules.nightly]
cron = "0 2 * * *"
queue = "reports"
type = "report.daily"
payload = '{"kind":"summary"}'
missed = "run-once"
)";

v1::AddScheduleRequest AddReq(const std::string& name, const std::string& cron,
                              bool replace = false) {
  v1::AddScheduleRequest req;
  auto* s = req.mutable_schedule();
  s->set_name(name);
  s->set_cron(cron);
  s->set_queue("reports");
  s->set_type("report.hourly");
  s->set_payload(R"({"kind":"hourly"})");
  req.set_replace(replace);
  return req;
}

const nlohmann::json* Find(const nlohmann::json& arr, const std::string& name) {
  for (const auto& s : arr) {
    if (s.value("name", "") == name) return &s;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("schedules: add, list and remove through the CLI and gRPC, with config schedules",
          "[e2e][schedule]") {
  TempDir dir;
  const std::string cfg = dir.Sub("ledgerq.toml");
  REQUIRE(WriteFile(cfg, kConfig));
  Daemon d;
  REQUIRE(d.Start(dir.Sub("data"), {"--config", cfg, "--sync", "none"}));
  const std::string server = d.grpc_address();
  std::string out, err;

  ExitInfo add =
      Cli(server,
          {"schedule", "add", "every5", "--cron", "*/5 * * * *", "--queue", "reports", "--type",
           "report.daily", "--payload", R"({"a":1})", "--label", "team=ops", "--priority", "2"},
          &out, &err);
  INFO(err);
  REQUIRE(add.exited);
  REQUIRE(add.code == 0);
  CHECK_THAT(out, Catch::StartsWith("schedule every5 saved; next firing 20"));

  REQUIRE(Cli(server, {"schedule", "list"}, &out, &err).code == 0);
  CHECK_THAT(out, Catch::Contains("NAME") && Catch::Contains("NEXT_FIRE") &&
                      Catch::Contains("*/5 * * * *") && Catch::Contains("0 2 * * *"));
  CHECK_THAT(out, Catch::Contains("every5") && Catch::Contains("nightly") &&
                      Catch::Contains("config") && Catch::Contains("api"));

  REQUIRE(Cli(server, {"schedule", "list", "--output", "json"}, &out, &err).code == 0);
  auto arr = nlohmann::json::parse(out);
  REQUIRE(arr.size() == 2);
  const auto* every5 = Find(arr, "every5");
  const auto* nightly = Find(arr, "nightly");
  REQUIRE(every5);
  REQUIRE(nightly);
  CHECK((*every5)["source"] == "api");
  CHECK((*every5)["created_by"] == "anonymous");
  CHECK((*every5)["missed"] == "skip");
  CHECK((*every5)["priority"] == 2);
  CHECK((*every5)["payload"]["a"] == 1);
  CHECK((*every5)["labels"]["team"] == "ops");
  CHECK((*every5)["next_fire"].is_string());
  CHECK((*every5)["last_fire"].is_null());
  CHECK((*nightly)["source"] == "config");
  CHECK((*nightly)["missed"] == "run-once");
  CHECK((*nightly)["created_by"] == "ledgerqd:config");
  CHECK_THAT((*nightly)["next_fire"].get<std::string>(), Catch::EndsWith("T02:00:00Z"));

  auto c = MakeClient(server);
  // A duplicate name needs replace; replacing answers with the stored schedule.
  auto dup = c.AddSchedule(AddReq("every5", "0 * * * *"));
  REQUIRE_FALSE(dup.ok());
  CHECK(dup.status().code() == Code::kAlreadyExists);
  CHECK_THAT(dup.status().message(), Catch::Contains("\"every5\""));
  auto replaced = c.AddSchedule(AddReq("every5", "0 * * * *", true));
  REQUIRE(replaced.ok());
  CHECK(replaced->cron() == "0 * * * *");
  CHECK(replaced->has_next_fire());
  CHECK(replaced->next_fire().seconds() % 3600 == 0);

  // Validation errors name the field, over gRPC and in the CLI.
  auto bad = c.AddSchedule(AddReq("bad", "0 25 * * *"));
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code() == Code::kInvalidArgument);
  CHECK(bad.status().message() == "schedule.cron: field 2 (hour): 25 is out of range 0-23");
  auto bad_missed = AddReq("bad", "* * * * *");
  bad_missed.mutable_schedule()->set_missed("later");
  auto refused = c.AddSchedule(bad_missed);
  REQUIRE_FALSE(refused.ok());
  CHECK_THAT(refused.status().message(), Catch::StartsWith("schedule.missed:"));
  ExitInfo cli_bad =
      Cli(server,
          {"schedule", "add", "bad", "--cron", "* * * JAN-FOO *", "--queue", "q", "--type", "t"},
          &out, &err);
  CHECK(cli_bad.code == 2);
  CHECK_THAT(err, Catch::Contains("schedule.cron: field 4 (month): \"FOO\" is not a number or a "
                                  "name (JAN..DEC)"));

  // The config file's schedule is changed there, not through the API.
  auto over = c.AddSchedule(AddReq("nightly", "* * * * *", true));
  REQUIRE_FALSE(over.ok());
  CHECK(over.status().code() == Code::kFailedPrecondition);
  CHECK_THAT(over.status().message(), Catch::Contains("\"nightly\""));
  ExitInfo rm_config = Cli(server, {"schedule", "rm", "nightly"}, &out, &err);
  CHECK(rm_config.code == 1);
  CHECK_THAT(err, Catch::Contains("FAILED_PRECONDITION") && Catch::Contains("config file"));

  REQUIRE(Cli(server, {"schedule", "rm", "every5"}, &out, &err).code == 0);
  CHECK(out == "schedule every5 removed\n");
  ExitInfo again = Cli(server, {"schedule", "rm", "every5"}, &out, &err);
  CHECK(again.code == 1);
  CHECK_THAT(err, Catch::Contains("NOT_FOUND") && Catch::Contains("\"every5\""));
  auto listed = c.ListSchedules();
  REQUIRE(listed.ok());
  REQUIRE(listed->schedules_size() == 1);
  CHECK(listed->schedules(0).name() == "nightly");

  // Every change is in the audit log, the schedule without its payload.
  REQUIRE(Cli(server, {"audit", "export"}, &out, &err).code == 0);
  int added = 0, removed = 0;
  size_t start = 0;
  while (start < out.size()) {
    size_t end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    auto line = nlohmann::json::parse(out.substr(start, end - start), nullptr, false);
    start = end + 1;
    if (line.is_discarded() || !line.contains("event")) continue;
    if (line["event"] == "SCHEDULE_ADDED") {
      ++added;
      CHECK(line.contains("payload_sha256"));
      CHECK(line["schedule"].contains("name"));
    }
    if (line["event"] == "SCHEDULE_REMOVED") {
      ++removed;
      CHECK(line["schedule"]["name"] == "every5");
      CHECK(line["principal"] == "anonymous");
    }
  }
  CHECK(added == 3);  // nightly (config), every5, every5 replaced
  CHECK(removed == 1);
  CHECK(ledgerq::testing::Terminate(d).code == 0);

  // Restarted with the schedule gone from the file: removed, with its event.
  REQUIRE(WriteFile(cfg, "\n"));
  Daemon d2;
  REQUIRE(d2.Start(dir.Sub("data"), {"--config", cfg, "--sync", "none"}));
  auto c2 = MakeClient(d2.grpc_address());
  auto after = c2.ListSchedules();
  REQUIRE(after.ok());
  CHECK(after->schedules_size() == 0);
  REQUIRE(Cli(d2.grpc_address(), {"audit", "export"}, &out, &err).code == 0);
  CHECK_THAT(out, Catch::Contains("\"event\":\"SCHEDULE_REMOVED\"") &&
                      Catch::Contains("\"principal\":\"ledgerqd:config\""));
}

TEST_CASE("ledgerqd --check-config reports bad schedules by key", "[e2e][schedule]") {
  TempDir dir;
  const std::string good = dir.Sub("good.toml"), bad = dir.Sub("bad.toml");
  REQUIRE(WriteFile(good, kConfig));
  REQUIRE(WriteFile(bad, R"(
[schedules.a]
cron = "*/0 * * * *"
queue = "q"
type = "t"
[schedules.b]
cron = "@daily"
queue = "q"
when = "now"
)"));
  std::string out, err;
  ExitInfo ok = RunCommand({LedgerqdPath(), "--check-config", good}, &out, &err);
  CHECK(ok.code == 0);
  CHECK_THAT(out, Catch::Contains("1 schedules"));
  ExitInfo no = RunCommand({LedgerqdPath(), "--check-config", bad}, &out, &err);
  CHECK(no.exited);
  CHECK(no.code != 0);
  CHECK_THAT(err, Catch::Contains("schedules.a.cron: field 1 (minute): step 0") &&
                      Catch::Contains("schedules.b.type: missing (required)") &&
                      Catch::Contains("unknown key \"schedules.b.when\""));
}

TEST_CASE("schedules: operators may list, only admins add and remove, payloads by role",
          "[e2e][schedule]") {
  TempDir dir;
  const std::string file = dir.Sub("auth.toml");
  auto add_principal = [&](const std::string& name, const std::string& role) {
    std::string out, err;
    ExitInfo e =
        Cli("127.0.0.1:1", {"auth", "add", "--file", file, "--principal", name, "--role", role},
            &out, &err);
    REQUIRE(e.code == 0);
    const std::string marker = "token (shown only now; the file keeps its SHA-256): ";
    auto pos = out.find(marker);
    REQUIRE(pos != std::string::npos);
    std::string token = out.substr(pos + marker.size());
    return token.substr(0, token.find('\n'));
  };
  const std::string admin = add_principal("root", "admin");
  const std::string op = add_principal("ops", "operator");
  Daemon d;
  REQUIRE(d.Start(dir.Sub("data"), {"--auth-file", file, "--sync", "none"}));
  auto as = [&](const std::string& token) {
    ledgerq::client::ClientOptions o;
    o.server = d.grpc_address();
    o.token = token;
    return ledgerq::client::Client(o);
  };
  auto admin_c = as(admin);
  auto op_c = as(op);

  auto denied = op_c.AddSchedule(AddReq("hourly", "@hourly"));
  REQUIRE_FALSE(denied.ok());
  CHECK(denied.status().code() == Code::kPermissionDenied);
  auto added = admin_c.AddSchedule(AddReq("hourly", "@hourly"));
  REQUIRE(added.ok());
  CHECK(added->created_by() == "root");
  CHECK(added->payload() == R"({"kind":"hourly"})");

  auto op_list = op_c.ListSchedules();
  REQUIRE(op_list.ok());
  REQUIRE(op_list->schedules_size() == 1);
  CHECK(op_list->schedules(0).payload().empty());  // operators see no payloads
  CHECK(op_list->schedules(0).payload_omitted());
  auto admin_list = admin_c.ListSchedules();
  REQUIRE(admin_list.ok());
  CHECK(admin_list->schedules(0).payload() == R"({"kind":"hourly"})");

  auto op_rm = op_c.RemoveSchedule("hourly");
  REQUIRE_FALSE(op_rm.ok());
  CHECK(op_rm.status().code() == Code::kPermissionDenied);
  std::string out, err;
  ExitInfo cli_rm = Cli(d.grpc_address(), {"--token", op, "schedule", "rm", "hourly"}, &out, &err);
  CHECK(cli_rm.code == 1);
  CHECK_THAT(err, Catch::Contains("PERMISSION_DENIED"));
  CHECK(admin_c.RemoveSchedule("hourly").ok());
}
