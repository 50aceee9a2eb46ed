// End-to-end: queue and job-type policies in the real ledgerqd. Admission checks over gRPC and
// the CLI, --strict-types, --check-config, lease bounds, and policy versions recorded in the log
// across SIGHUP reloads and restarts.
#include <signal.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "client/client.h"
#include "storage/job_store.h"
#include "tests/support/daemon.h"
#include "tests/support/e2e_helpers.h"
#include "tests/support/temp_dir.h"

namespace {

using ledgerq::Code;
using ledgerq::testing::Cli;
using ledgerq::testing::Daemon;
using ledgerq::testing::ExitInfo;
using ledgerq::testing::LeaseReq;
using ledgerq::testing::LedgerqdPath;
using ledgerq::testing::MakeClient;
using ledgerq::testing::Req;
using ledgerq::testing::RunCommand;
using ledgerq::testing::TempDir;
using ledgerq::testing::Terminate;
using ledgerq::testing::WaitFor;
using ledgerq::testing::WriteFile;
namespace v1 = ledgerq::v1;
namespace sv1 = ledgerq::storage::v1;

constexpr char kConfig[] = R"(
strict-types = true

[queues.billing]
max-attempts = 7

[types."charge.v1"]
queues = ["billing"]
max-attempts = 3
max-lease = "2s"
required = { customer = "string", amount = "integer" }
)";

// The POLICY_CHANGED events of a stopped daemon's log, in order.
std::vector<sv1::EventBody> PolicyEvents(const std::string& dir) {
  std::vector<sv1::EventBody> out;
  ledgerq::storage::StoreOptions o;
  o.data_dir = dir;
  auto store = ledgerq::storage::JobStore::Open(o);
  REQUIRE(store.ok());
  REQUIRE((*store)
              ->ScanEvents(1,
                           [&](const sv1::EventBody& ev) {
                             if (ev.type() == sv1::EVENT_POLICY_CHANGED) out.push_back(ev);
                             return true;
                           })
              .ok());
  return out;
}

}  // namespace

TEST_CASE("ledgerqd --check-config lists every error, and accepts a sound file", "[e2e][policy]") {
  TempDir dir;
  const std::string good = dir.path() + "/good.toml", bad = dir.path() + "/bad.toml";
  REQUIRE(WriteFile(good, kConfig));
  REQUIRE(WriteFile(bad, R"(
colour = "red"
[queues.q]
max-attempts = 0
[types.t]
required = { amount = "money" }
)"));
  std::string out, err;
  ExitInfo ok = RunCommand({LedgerqdPath(), "--check-config", good}, &out, &err);
  CHECK(ok.exited);
  CHECK(ok.code == 0);
  CHECK_THAT(out, Catch::Contains("ok: " + good) && Catch::Contains("1 queue and 1 type"));

  ExitInfo no = RunCommand({LedgerqdPath(), "--check-config", bad}, &out, &err);
  CHECK(no.exited);
  CHECK(no.code != 0);
  CHECK_THAT(err, Catch::Contains("unknown key \"colour\"") &&
                      Catch::Contains("queues.q.max-attempts") &&
                      Catch::Contains("types.t.required.amount"));
}

TEST_CASE("admission checks refuse bad submissions by field, and jobs carry their policy version",
          "[e2e][policy]") {
  TempDir dir;
  const std::string cfg = dir.path() + "/ledgerq.toml";
  REQUIRE(WriteFile(cfg, kConfig));
  const std::string data = dir.path() + "/data";
  Daemon d;
  REQUIRE(d.Start(data, {"--config", cfg}));
  auto c = MakeClient(d.grpc_address());

  auto undeclared = c.Enqueue(Req("billing", "refund.v1", "{}"));
  REQUIRE_FALSE(undeclared.ok());
  CHECK(undeclared.status().code() == Code::kFailedPrecondition);
  CHECK_THAT(undeclared.status().message(), Catch::Contains("type: \"refund.v1\""));

  auto wrong_queue = c.Enqueue(Req("mail", "charge.v1", R"({"customer":"c","amount":1})"));
  REQUIRE_FALSE(wrong_queue.ok());
  CHECK(wrong_queue.status().code() == Code::kFailedPrecondition);

  auto missing = c.Enqueue(Req("billing", "charge.v1", R"({"amount":1})"));
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == Code::kInvalidArgument);
  CHECK_THAT(missing.status().message(), Catch::Contains("payload.customer"));

  // The CLI shows the same error, naming the field.
  std::string out, err;
  ExitInfo cli = Cli(d.grpc_address(),
                     {"enqueue", "--queue", "billing", "--type", "charge.v1", "--payload",
                      R"({"customer":"c","amount":"12"})"},
                     &out, &err);
  CHECK(cli.code != 0);
  CHECK_THAT(err, Catch::Contains("payload.amount: must be integer, got string"));

  // A batch refuses only its bad item.
  v1::EnqueueBatchRequest batch;
  *batch.add_items() = Req("billing", "charge.v1", R"({"customer":"c","amount":5})");
  *batch.add_items() = Req("billing", "charge.v1", R"({"customer":7,"amount":5})");
  auto br = c.EnqueueBatch(batch);
  REQUIRE(br.ok());
  REQUIRE(br->results_size() == 2);
  CHECK(br->results(0).has_ok());
  REQUIRE(br->results(1).has_error());
  CHECK_THAT(br->results(1).error().message(), Catch::Contains("items[1].payload.customer"));

  auto good = c.Enqueue(Req("billing", "charge.v1", R"({"customer":"c","amount":1250})"));
  REQUIRE(good.ok());
  CHECK(good->job().policy_version() == 1);
  CHECK(good->job().max_attempts() == 3);  // the type's default over the queue's 7
  auto got = c.GetJob(good->job().id());
  REQUIRE(got.ok());
  CHECK(got->policy_version() == 1);
  ExitInfo shown = Cli(d.grpc_address(), {"job", std::to_string(good->job().id())}, &out, &err);
  CHECK(shown.code == 0);
  CHECK_THAT(out, Catch::Contains("policy_version  1"));

  // The type's max-lease (2s) bounds a 30s lease.
  auto leased = c.Lease(LeaseReq("billing", 1, 30, 5));
  REQUIRE(leased.ok());
  REQUIRE(leased->jobs_size() == 1);
  const auto& lj = leased->jobs(0);
  const int64_t granted_for =
      lj.deadline().seconds() - lj.job().updated_at().seconds();  // updated at the grant
  CHECK(granted_for <= 3);
  CHECK(granted_for >= 1);
  CHECK(Terminate(d).code == 0);
}

TEST_CASE(
    "policy versions: SIGHUP records a changed policy, keeps it on a bad file, restarts "
    "keep the version",
    "[e2e][policy]") {
  TempDir dir;
  const std::string cfg = dir.path() + "/ledgerq.toml";
  REQUIRE(WriteFile(cfg, kConfig));
  const std::string data = dir.path() + "/data";
  {
    Daemon d;
    REQUIRE(d.Start(data, {"--config", cfg}));
    auto c = MakeClient(d.grpc_address());
    REQUIRE_FALSE(c.Enqueue(Req("billing", "refund.v1", "{}")).ok());

    // Declare the new type and reload.
    REQUIRE(
        WriteFile(cfg, std::string(kConfig) + "\n[types.\"refund.v1\"]\nqueues = [\"billing\"]\n"));
    d.Signal(SIGHUP);
    uint64_t version = 0;
    REQUIRE(WaitFor(
        [&] {
          auto r = c.Enqueue(Req("billing", "refund.v1", "{}"));
          if (r.ok()) version = r->job().policy_version();
          return r.ok();
        },
        std::chrono::seconds(10)));
    CHECK(version == 2);

    // A broken file keeps version 2 and says why in the log.
    REQUIRE(WriteFile(cfg, "strict-types = \"maybe\"\n"));
    d.Signal(SIGHUP);
    REQUIRE(WaitFor(
        [&] { return d.stderr_text().find("keeping policy version 2") != std::string::npos; },
        std::chrono::seconds(10)));
    CHECK_THAT(d.stderr_text(), Catch::Contains("strict-types"));
    auto still = c.Enqueue(Req("billing", "refund.v1", "{}"));
    REQUIRE(still.ok());
    CHECK(still->job().policy_version() == 2);
    CHECK(Terminate(d).code == 0);
  }
  // The same policy at the next start is the same version: no new event.
  REQUIRE(
      WriteFile(cfg, std::string(kConfig) + "\n[types.\"refund.v1\"]\nqueues = [\"billing\"]\n"));
  {
    Daemon d;
    REQUIRE(d.Start(data, {"--config", cfg}));
    auto c = MakeClient(d.grpc_address());
    auto r = c.Enqueue(Req("billing", "refund.v1", "{}"));
    REQUIRE(r.ok());
    CHECK(r->job().policy_version() == 2);
    CHECK(Terminate(d).code == 0);
  }
  auto events = PolicyEvents(data);
  REQUIRE(events.size() == 2);
  CHECK(events[0].policy_version() == 1);
  CHECK(events[1].policy_version() == 2);
  CHECK(events[0].policy_digest() != events[1].policy_digest());
  CHECK_THAT(events[1].policy_text(), Catch::Contains("refund.v1"));
  CHECK_THAT(events[0].policy_text(), !Catch::Contains("refund.v1"));
  CHECK_THAT(events[1].reason(), Catch::Contains("SIGHUP"));
  CHECK(events[1].principal() == "ledgerqd");
  auto verified = ledgerq::storage::VerifyChain(data);
  REQUIRE(verified.ok());
  CHECK(verified->ok);
}
