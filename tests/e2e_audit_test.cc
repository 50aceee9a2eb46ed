// End-to-end audit: `ledgerq audit verify` online and offline, export files and their offline
// verification (including chaining onto an earlier export), archiving, reconciliation, and
// tampering with a stopped daemon's RocksDB files (storage/testing/log_tamper.h) caught both
// offline and online, naming the first bad sequence. Every TEST_CASE owns its TempDir and its
// Daemon, so `ctest -j` is safe.
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "client/client.h"
#include "common/sha256.h"
#include "ledgerq/storage/v1/records.pb.h"
#include "storage/testing/log_tamper.h"
#include "tests/support/daemon.h"
#include "tests/support/e2e_helpers.h"
#include "tests/support/temp_dir.h"
#include "tests/support/text.h"

using namespace ledgerq;
using namespace ledgerq::testing;
using ledgerq::client::Client;

namespace {

using ledgerq::testing::Join;
using ledgerq::testing::Lines;

// Enqueues `n` jobs on `queue` and completes `complete` of them.
void Traffic(Client& client, const std::string& queue, int n, int complete) {
  for (int i = 0; i < n; ++i) {
    REQUIRE(client.Enqueue(Req(queue, "audit-t", "{\"i\":" + std::to_string(i) + "}")).ok());
  }
  int done = 0;
  while (done < complete) {
    auto l = client.Lease(LeaseReq(queue, static_cast<uint32_t>(complete - done), 30, 2));
    REQUIRE(l.ok());
    REQUIRE(l->jobs_size() > 0);
    for (const auto& lj : l->jobs()) {
      REQUIRE(client.Complete(CompleteReq(lj.token(), "ok")).ok());
      ++done;
    }
  }
}

Result<v1::ExportAuditResponse> ExportPage(Client& client, uint64_t from, uint64_t to) {
  v1::AuditService::Stub stub(client.channel());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  client.Authorize(&ctx);
  v1::ExportAuditRequest req;
  req.set_from_seq(from);
  req.set_to_seq(to);
  req.set_page_size(10000);
  v1::ExportAuditResponse resp;
  Status st = client::FromGrpc(stub.ExportAudit(&ctx, req, &resp), "test");
  if (!st.ok()) return st;
  return resp;
}

Result<v1::VerifyAuditResponse> VerifyRpc(Client& client) {
  v1::AuditService::Stub stub(client.channel());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  client.Authorize(&ctx);
  v1::VerifyAuditResponse resp;
  Status st = client::FromGrpc(stub.VerifyAudit(&ctx, v1::VerifyAuditRequest(), &resp), "test");
  if (!st.ok()) return st;
  return resp;
}

// The sequences of the log's SUBMITTED events, and the head.
std::pair<std::vector<uint64_t>, uint64_t> Submitted(Client& client) {
  auto page = ExportPage(client, 0, 0);
  REQUIRE(page.ok());
  REQUIRE(page->next_seq() == 0);
  std::vector<uint64_t> out;
  for (const auto& e : page->events()) {
    if (e.event().type() == "SUBMITTED") out.push_back(e.seq());
  }
  REQUIRE(page->events_size() > 0);
  return {out, page->events(page->events_size() - 1).seq()};
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// `ledgerq audit export` into a file; returns the exit code.
int ExportTo(const Daemon& d, const std::vector<std::string>& range, const std::string& path) {
  std::vector<std::string> args{"audit", "export"};
  args.insert(args.end(), range.begin(), range.end());
  std::string out, err;
  auto r = Cli(d.grpc_address(), args, &out, &err);
  INFO(err);
  if (!r.exited || r.code != 0) return r.code;
  REQUIRE(WriteFile(path, out));
  return 0;
}

int VerifyArchive(const std::string& path, const std::string& after, std::string* out) {
  std::vector<std::string> args{"audit", "verify", "--archive", path};
  if (!after.empty()) args.insert(args.end(), {"--after", after});
  std::string err;
  auto r = Cli("127.0.0.1:1", args, out, &err);
  INFO(err);
  return r.exited ? r.code : -1;
}

}  // namespace

TEST_CASE("audit export files verify offline, chain onto each other, and tampering is caught",
          "[e2e][audit]") {
  TempDir tmp;
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  Client client = MakeClient(daemon.grpc_address());
  Traffic(client, "aq", 8, 3);
  const uint64_t head = Submitted(client).second;
  REQUIRE(head >= 14);  // 8 SUBMITTED, 3 LEASED, 3 COMPLETED (plus any policy event)

  // Online verification.
  std::string out, err;
  auto r = Cli(daemon.grpc_address(), {"audit", "verify"}, &out, &err);
  INFO(out << err);
  REQUIRE(r.code == 0);
  CHECK(out.rfind("ok " + std::to_string(head) + " ", 0) == 0);

  const uint64_t cut = head / 2;
  const std::string a = tmp.Sub("a.jsonl"), b = tmp.Sub("b.jsonl");
  REQUIRE(ExportTo(daemon, {"--to", std::to_string(cut)}, a) == 0);
  REQUIRE(ExportTo(daemon, {"--from", std::to_string(cut + 1)}, b) == 0);
  CHECK(Lines(ReadAll(a)).size() == cut + 1);
  CHECK(Lines(ReadAll(b)).size() == head - cut + 1);

  CHECK(VerifyArchive(a, "", &out) == 0);
  CHECK(out.rfind("ok " + std::to_string(cut) + " ", 0) == 0);
  CHECK(VerifyArchive(b, a, &out) == 0);
  // The head the archive names is the daemon's head.
  auto v = VerifyRpc(client);
  REQUIRE(v.ok());
  CHECK(out == "ok " + std::to_string(head - cut) + " " +
                   ledgerq::ToHex(std::string_view(v->head_hash())) + "\n");

  // JSON output.
  std::string json_out;
  auto rj =
      Cli("127.0.0.1:1", {"--output", "json", "audit", "verify", "--archive", a}, &json_out, &err);
  CHECK(rj.code == 0);
  auto j = nlohmann::json::parse(json_out);
  CHECK(j["ok"] == true);
  CHECK(j["manifest"]["to"] == cut);

  // Tampered copies of b.
  auto lines = Lines(ReadAll(b));
  const std::string bad = tmp.Sub("bad.jsonl");
  uint64_t expect_seq = 0;
  std::string after;
  SECTION("an edited line") {
    auto pos = lines[1].find("\"principal\":\"");
    REQUIRE(pos != std::string::npos);
    lines[1].insert(pos + 13, "x");
    expect_seq = cut + 2;
  }
  SECTION("a dropped line") {
    lines.erase(lines.begin() + 2);
    expect_seq = cut + 3;
  }
  SECTION("two swapped lines") {
    std::swap(lines[1], lines[3]);
    expect_seq = cut + 2;  // line 2 holds event cut+4 where cut+2 belongs
  }
  SECTION("a wrong manifest") {
    auto pos = lines.back().find("\"count\":");
    REQUIRE(pos != std::string::npos);
    lines.back().insert(pos + 8, "1");
    expect_seq = 0;
  }
  SECTION("not chaining onto the earlier export") {
    // b verifies on its own but does not follow an export that ends one event earlier.
    const std::string shorter = tmp.Sub("shorter.jsonl");
    REQUIRE(ExportTo(daemon, {"--to", std::to_string(cut - 1)}, shorter) == 0);
    after = shorter;
    expect_seq = cut + 1;
  }
  REQUIRE(WriteFile(bad, Join(lines)));
  CHECK(VerifyArchive(bad, after, &out) == 1);
  INFO(out);
  if (expect_seq != 0) {
    CHECK(out.rfind("broken at " + std::to_string(expect_seq) + ": ", 0) == 0);
  } else {
    CHECK(out.rfind("broken at ", 0) == 0);
    CHECK(out.find("manifest") != std::string::npos);
  }
}

TEST_CASE("audit archive writes a verifying file and leaves a chain that verifies from it",
          "[e2e][audit]") {
  TempDir tmp;
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  Client client = MakeClient(daemon.grpc_address());
  Traffic(client, "arq", 6, 2);
  const uint64_t head = Submitted(client).second;
  const uint64_t cut = head - 3;
  const std::string archive = tmp.Sub("archive-1.jsonl");

  std::string out, err;
  auto r = Cli(daemon.grpc_address(),
               {"audit", "archive", "--to", std::to_string(cut), "--out", archive}, &out, &err);
  INFO(out << err);
  REQUIRE(r.code == 0);
  CHECK(out.find("archived " + std::to_string(cut) + " events 1.." + std::to_string(cut)) == 0);
  CHECK(VerifyArchive(archive, "", &out) == 0);
  // Archiving the same file again is refused before anything happens.
  r = Cli(daemon.grpc_address(),
          {"audit", "archive", "--to", std::to_string(cut), "--out", archive}, &out, &err);
  CHECK(r.code != 0);
  CHECK(err.find("exists") != std::string::npos);

  // The daemon's chain now starts from the checkpoint and still verifies; the rest exports and
  // chains onto the archive.
  auto v = VerifyRpc(client);
  REQUIRE(v.ok());
  CHECK(v->ok());
  CHECK(v->checkpoint().seq() == cut);
  const std::string rest = tmp.Sub("rest.jsonl");
  REQUIRE(ExportTo(daemon, {}, rest) == 0);
  CHECK(VerifyArchive(rest, archive, &out) == 0);
  // Archived events cannot be exported any more.
  r = Cli(daemon.grpc_address(), {"audit", "export", "--from", "1"}, &out, &err);
  CHECK(r.code != 0);
  CHECK(err.find("archived") != std::string::npos);
}

TEST_CASE("audit reconcile: ok on a clean store, reports a record that disagrees with the log",
          "[e2e][audit]") {
  TempDir tmp;
  const std::string data = tmp.Sub("data");
  uint64_t victim = 0;
  {
    Daemon daemon;
    REQUIRE(daemon.Start(data));
    {
      // Closed before the daemon is stopped: an open connection holds up its drain.
      Client client = MakeClient(daemon.grpc_address());
      Traffic(client, "rq", 5, 2);
      auto e = client.Enqueue(Req("rq2", "audit-t", "{}"));
      REQUIRE(e.ok());
      victim = e->job().id();
    }
    std::string out, err;
    auto r = Cli(daemon.grpc_address(), {"audit", "reconcile"}, &out, &err);
    INFO(out << err);
    CHECK(r.code == 0);
    CHECK(out.find("difference:") == std::string::npos);
    CHECK(out.find("ok: 6 jobs") != std::string::npos);
    Terminate(daemon);
  }
  REQUIRE(storage::testing::SetJobState(data, victim, storage::v1::STATE_CANCELLED).ok());
  Daemon daemon;
  REQUIRE(daemon.Start(data));
  std::string out, err;
  auto r = Cli(daemon.grpc_address(), {"--output", "json", "audit", "reconcile"}, &out, &err);
  INFO(out << err);
  CHECK(r.code == 1);
  auto j = nlohmann::json::parse(out);
  CHECK(j["ok"] == false);
  REQUIRE(j["differences"].size() >= 1);
  const std::string first = j["differences"][0];
  CHECK(first.rfind("job " + std::to_string(victim) + " (queue rq2): the log says READY (event ",
                    0) == 0);
  CHECK(first.find("), its record says CANCELLED") != std::string::npos);
  bool row = false;
  for (const auto& c : j["counts"]) {
    if (c["queue"] == "rq2" && c["state"] == "READY") {
      row = true;
      CHECK(c["from_log"] == 1);
      CHECK(c["live"] == 0);
    }
  }
  CHECK(row);
}

TEST_CASE("tampering with a stopped daemon's log is caught offline and online", "[e2e][audit]") {
  TempDir tmp;
  const std::string data = tmp.Sub("data");
  std::vector<uint64_t> submitted;
  uint64_t head = 0;
  {
    Daemon daemon;
    REQUIRE(daemon.Start(data));
    {
      // Closed before the daemon is stopped: an open connection holds up its drain.
      Client client = MakeClient(daemon.grpc_address());
      Traffic(client, "tq", 6, 2);
      std::tie(submitted, head) = Submitted(client);
      REQUIRE(submitted.size() == 6);
    }
    Terminate(daemon);
  }
  uint64_t expect = 0;
  SECTION("an edited payload digest") {
    REQUIRE(storage::testing::EditPayloadDigest(data, submitted[2]).ok());
    expect = submitted[2];
  }
  SECTION("a deleted event") {
    REQUIRE(storage::testing::DeleteEvent(data, submitted[3]).ok());
    expect = submitted[3];
  }
  SECTION("two reordered events") {
    REQUIRE(storage::testing::SwapEvents(data, submitted[1], head - 1).ok());
    expect = submitted[1];
  }
  const std::string prefix = "broken at " + std::to_string(expect) + ": ";
  std::string out, err;
  auto r = Cli("127.0.0.1:1", {"audit", "verify", "--data-dir", data}, &out, &err);
  INFO(out << err);
  CHECK(r.code == 1);
  CHECK(out.rfind(prefix, 0) == 0);

  Daemon daemon;
  REQUIRE(daemon.Start(data));
  r = Cli(daemon.grpc_address(), {"audit", "verify"}, &out, &err);
  CHECK(r.code == 1);
  CHECK(out.rfind(prefix, 0) == 0);
  Client client = MakeClient(daemon.grpc_address());
  auto v = VerifyRpc(client);
  REQUIRE(v.ok());
  CHECK_FALSE(v->ok());
  CHECK(v->first_bad_seq() == expect);
  CHECK_FALSE(v->problem().empty());
}
