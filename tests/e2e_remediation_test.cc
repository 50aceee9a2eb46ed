// End-to-end: dead-letter remediation in the real ledgerqd. A type's on-dead-letter enqueues a
// compensation job (parent, payload, history links) and marks the job for a person
// (`ledgerq dlq list --needs-attention`, `dlq resolve`); parent and child jobs through the API
// and the CLI; exactly one compensation per death across kill -9 and across a death written
// while the daemon was down.
#include <signal.h>

#include <catch2/catch.hpp>
#include <future>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
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
using ledgerq::testing::FailReq;
using ledgerq::testing::HttpGet;
using ledgerq::testing::LeaseReq;
using ledgerq::testing::MakeClient;
using ledgerq::testing::NamesNumber;
using ledgerq::testing::Req;
using ledgerq::testing::TempDir;
using ledgerq::testing::Terminate;
using ledgerq::testing::WaitFor;
using ledgerq::testing::WriteFile;
namespace v1 = ledgerq::v1;
using namespace std::chrono_literals;

constexpr char kConfig[] = R"(
[types."charge.v1"]
max-attempts = 3
on-dead-letter = { queue = "refunds", type = "charge.compensate", needs-attention = true }

[types."charge.compensate"]
max-attempts = 8
)";

// Every job of `queue` (at most 1000).
std::vector<v1::Job> JobsIn(ledgerq::client::Client& c, const std::string& queue) {
  v1::ListJobsRequest req;
  req.set_queue(queue);
  req.set_page_size(1000);
  auto r = c.ListJobs(req);
  REQUIRE(r.ok());
  return {r->jobs().begin(), r->jobs().end()};
}

// Enqueues a charge.v1 job in "billing", leases it and fails it permanently; returns its id.
uint64_t KillOne(ledgerq::client::Client& c, const std::string& code = "CARD_DECLINED") {
  auto made = c.Enqueue(Req("billing", "charge.v1", R"({"customer":"c-7","amount":1250})"));
  REQUIRE(made.ok());
  auto leased = c.Lease(LeaseReq("billing", 1, 30, 5));
  REQUIRE(leased.ok());
  REQUIRE(leased->jobs_size() == 1);
  auto failed = c.Fail(
      FailReq(leased->jobs(0).token(), v1::ERROR_KIND_PERMANENT, code, "the card was declined"));
  REQUIRE(failed.ok());
  REQUIRE(failed->job().state() == v1::JOB_STATE_DEAD);
  return leased->jobs(0).job().id();
}

}  // namespace

TEST_CASE("a permanently failing job gets one compensation job and waits for a person",
          "[e2e][remediation]") {
  TempDir dir;
  const std::string cfg = dir.path() + "/ledgerq.toml";
  REQUIRE(WriteFile(cfg, kConfig));
  Daemon d;
  REQUIRE(d.Start(dir.path() + "/data", {"--config", cfg}));
  auto c = MakeClient(d.grpc_address());
  const std::string server = d.grpc_address();

  const uint64_t dead = KillOne(c);
  REQUIRE(WaitFor([&] { return JobsIn(c, "refunds").size() == 1; }, 10s));
  const v1::Job comp = JobsIn(c, "refunds")[0];
  CHECK(comp.type() == "charge.compensate");
  CHECK(comp.parent_job_id() == dead);
  CHECK(comp.submitted_by() == "ledgerqd");
  CHECK(comp.max_attempts() == 8);
  auto got_comp = c.GetJob(comp.id());
  REQUIRE(got_comp.ok());
  auto body = nlohmann::json::parse(got_comp->payload());
  CHECK(body["dead_job_id"] == dead);
  CHECK(body["queue"] == "billing");
  CHECK(body["type"] == "charge.v1");
  CHECK(body["dead_reason"] == "permanent_error");
  CHECK(body["attempts"] == 1);
  CHECK(body["last_error"]["code"] == "CARD_DECLINED");
  CHECK(body["last_error"]["message"] == "the card was declined");
  CHECK(body["last_error"]["kind"] == "permanent");

  auto got = c.GetJob(dead);
  REQUIRE(got.ok());
  CHECK(got->needs_attention());
  CHECK(got->compensation_job_id() == comp.id());
  REQUIRE(got->child_job_ids_size() == 1);
  CHECK(got->child_job_ids(0) == comp.id());

  // The compensation runs like any job: a worker of "refunds" leases it.
  auto leased = c.Lease(LeaseReq("refunds", 1, 30, 5));
  REQUIRE(leased.ok());
  REQUIRE(leased->jobs_size() == 1);
  CHECK(leased->jobs(0).job().id() == comp.id());

  std::string out, err;
  ExitInfo e = Cli(server, {"dlq", "list", "--needs-attention"}, &out, &err);
  INFO("dlq list --needs-attention:\n" << out << err);
  CHECK(e.code == 0);
  CHECK(NamesNumber(out, dead));
  CHECK_THAT(out, Catch::Contains("needed") && Catch::Contains("job " + std::to_string(comp.id())));
  e = Cli(server, {"dlq", "list", "--queue", "refunds", "--needs-attention"}, &out, &err);
  CHECK(e.code == 0);
  CHECK_FALSE(NamesNumber(out, dead));

  e = Cli(server, {"job", std::to_string(dead)}, &out, &err);
  INFO("job:\n" << out << err);
  CHECK(e.code == 0);
  CHECK_THAT(out, Catch::Contains("children") && Catch::Contains("compensated_by") &&
                      Catch::Contains("attention"));
  e = Cli(server, {"job", std::to_string(dead), "--history"}, &out, &err);
  INFO("history of the dead job:\n" << out << err);
  CHECK_THAT(out, Catch::Contains("needs attention") &&
                      Catch::Contains("compensated by job " + std::to_string(comp.id())));
  e = Cli(server, {"job", std::to_string(comp.id()), "--history"}, &out, &err);
  INFO("history of the compensation:\n" << out << err);
  CHECK_THAT(out, Catch::Contains("compensates job " + std::to_string(dead)));
  e = Cli(server, {"--output", "json", "job", std::to_string(comp.id()), "--history"}, &out, &err);
  auto hist = nlohmann::json::parse(out);
  CHECK(hist["events"][0]["type"] == "SUBMITTED");
  CHECK(hist["events"][0]["parent_job_id"] == dead);

  // Resolved by a person: it leaves the list; a second resolve is an error for that id.
  e = Cli(server, {"dlq", "resolve", std::to_string(dead), "--note", "refunded by hand"}, &out,
          &err);
  INFO("dlq resolve:\n" << out << err);
  CHECK(e.code == 0);
  CHECK_THAT(out, Catch::Contains(std::to_string(dead) + " resolved"));
  e = Cli(server, {"dlq", "list", "--needs-attention"}, &out, &err);
  CHECK(e.code == 0);
  CHECK_FALSE(NamesNumber(out, dead));
  e = Cli(server, {"dlq", "resolve", std::to_string(dead), "99999"}, &out, &err);
  CHECK(e.code == 1);
  CHECK_THAT(err, Catch::Contains("does not need attention") && Catch::Contains("99999"));
  e = Cli(server, {"job", std::to_string(dead), "--history"}, &out, &err);
  CHECK_THAT(out, Catch::Contains("attention resolved by anonymous: refunded by hand"));

  auto metrics = HttpGet(d.http_port(), "/metrics");
  CHECK_THAT(
      metrics.body,
      Catch::Contains(
          R"(ledgerq_compensations_enqueued_total{queue="refunds",type="charge.compensate"} 1)"));
  CHECK_THAT(metrics.body, Catch::Contains("ledgerq_dead_jobs_needing_attention"));
  CHECK(Terminate(d).code == 0);
}

TEST_CASE("parent and child jobs through the API and the CLI", "[e2e][remediation]") {
  TempDir dir;
  Daemon d;
  REQUIRE(d.Start(dir.path() + "/data"));
  auto c = MakeClient(d.grpc_address());
  const std::string server = d.grpc_address();

  auto parent = c.Enqueue(Req("q", "order.v1", "{}"));
  REQUIRE(parent.ok());
  const uint64_t pid = parent->job().id();
  std::string out, err;
  ExitInfo e =
      Cli(server, {"enqueue", "--queue", "q", "--type", "ship.v1", "--parent", std::to_string(pid)},
          &out, &err);
  REQUIRE(e.code == 0);
  auto req = Req("q", "mail.v1", "{}");
  req.set_parent_job_id(pid);
  auto child2 = c.Enqueue(req);
  REQUIRE(child2.ok());
  CHECK(child2->job().parent_job_id() == pid);

  auto got = c.GetJob(pid);
  REQUIRE(got.ok());
  REQUIRE(got->child_job_ids_size() == 2);
  CHECK(got->child_job_ids(1) == child2->job().id());
  e = Cli(server, {"job", std::to_string(pid)}, &out, &err);
  CHECK_THAT(out,
             Catch::Contains("children") && Catch::Contains(std::to_string(child2->job().id())));
  e = Cli(server, {"job", std::to_string(child2->job().id()), "--history"}, &out, &err);
  CHECK_THAT(out, Catch::Contains("child of job " + std::to_string(pid)));

  // A parent that does not exist is refused and creates nothing.
  e = Cli(server, {"enqueue", "--queue", "q", "--type", "ship.v1", "--parent", "4242"}, &out, &err);
  CHECK(e.code == 1);
  CHECK_THAT(err, Catch::Contains("parent_job_id: job 4242 does not exist"));
  req.set_parent_job_id(4242);
  auto orphan = c.Enqueue(req);
  REQUIRE_FALSE(orphan.ok());
  CHECK(orphan.status().code() == Code::kNotFound);
  CHECK(JobsIn(c, "q").size() == 3);
  CHECK(Terminate(d).code == 0);
}

TEST_CASE("kill -9 right after deaths, then a restart: exactly one compensation per death",
          "[e2e][remediation]") {
  TempDir dir;
  const std::string cfg = dir.path() + "/ledgerq.toml";
  REQUIRE(WriteFile(cfg, kConfig));
  const std::string data = dir.path() + "/data";
  constexpr int kJobs = 40;
  std::vector<uint64_t> dead;
  uint64_t pending_at_kill = 0;
  {
    Daemon d;
    REQUIRE(d.Start(data, {"--config", cfg}));
    auto c = MakeClient(d.grpc_address());
    v1::EnqueueBatchRequest batch;
    for (int i = 0; i < kJobs; ++i) {
      *batch.add_items() = Req("billing", "charge.v1", R"({"customer":"c","amount":1})");
    }
    REQUIRE(c.EnqueueBatch(batch).ok());
    auto leased = c.Lease(LeaseReq("billing", kJobs, 60, 5));
    REQUIRE(leased.ok());
    REQUIRE(leased->jobs_size() == kJobs);
    // Fail them all at once from several threads, and kill the daemon the moment the last
    // answer is in: some compensations are likely still to be written.
    std::vector<std::thread> threads;
    std::atomic<int> ok{0};
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        auto tc = MakeClient(d.grpc_address());
        for (int i = t; i < kJobs; i += 4) {
          auto r =
              tc.Fail(FailReq(leased->jobs(i).token(), v1::ERROR_KIND_PERMANENT, "CARD_DECLINED"));
          if (r.ok()) ++ok;
        }
      });
    }
    for (auto& t : threads) t.join();
    d.Signal(SIGKILL);
    d.Wait();
    REQUIRE(ok == kJobs);
    for (const auto& j : leased->jobs()) dead.push_back(j.job().id());
  }
  {
    // What the crash left: deaths whose compensation was not yet written.
    ledgerq::storage::StoreOptions o;
    o.data_dir = data;
    auto store = ledgerq::storage::JobStore::Open(o);
    REQUIRE(store.ok());
    auto pending = (*store)->PendingCompensations();
    REQUIRE(pending.ok());
    pending_at_kill = pending->size();
  }
  WARN("compensations still pending at the kill: " << pending_at_kill << " of " << kJobs);

  Daemon d;
  REQUIRE(d.Start(data, {"--config", cfg}));
  auto c = MakeClient(d.grpc_address());
  REQUIRE(WaitFor([&] { return JobsIn(c, "refunds").size() >= kJobs; }, 20s));
  std::this_thread::sleep_for(500ms);  // anything extra would show up now
  auto refunds = JobsIn(c, "refunds");
  CHECK(refunds.size() == kJobs);
  std::set<uint64_t> parents;
  for (const auto& j : refunds) parents.insert(j.parent_job_id());
  CHECK(parents == std::set<uint64_t>(dead.begin(), dead.end()));
  for (uint64_t id : dead) {
    auto j = c.GetJob(id);
    REQUIRE(j.ok());
    CHECK(j->compensation_job_id() != 0);
    CHECK(j->child_job_ids_size() == 1);
  }
  CHECK(Terminate(d).code == 0);
}

TEST_CASE("a death written while the daemon was down is compensated at the next start",
          "[e2e][remediation]") {
  TempDir dir;
  const std::string cfg = dir.path() + "/ledgerq.toml";
  REQUIRE(WriteFile(cfg, kConfig));
  const std::string data = dir.path() + "/data";
  uint64_t id = 0;
  {
    Daemon d;
    REQUIRE(d.Start(data, {"--config", cfg}));
    auto c = MakeClient(d.grpc_address());
    auto made = c.Enqueue(Req("billing", "charge.v1", "{}"));
    REQUIRE(made.ok());
    id = made->job().id();
    REQUIRE(Terminate(d).code == 0);
  }
  {
    // The store opened offline with the marks the daemon's policy gives charge.v1, and a death
    // whose compensation never ran: exactly what a crash right after the death's write leaves.
    namespace sv1 = ledgerq::storage::v1;
    ledgerq::storage::StoreOptions o;
    o.data_dir = data;
    o.dead_letter_marks = [](const ledgerq::storage::JobRecord& job) {
      ledgerq::storage::DeadLetterMarks m;
      if (job.type() == "charge.v1") {
        m.needs_attention = true;
        m.compensate_queue = "refunds";
        m.compensate_type = "charge.compensate";
      }
      return m;
    };
    auto store = ledgerq::storage::JobStore::Open(o);
    REQUIRE(store.ok());
    std::promise<std::vector<ledgerq::Result<ledgerq::storage::JobRecord>>> pr;
    (*store)->Transition(
        {{id,
          [](ledgerq::storage::JobRecord& job, ledgerq::storage::TransitionWriter& w, int64_t now) {
            auto* e = job.add_errors();
            e->set_attempt(1);
            e->set_at_us(now);
            e->set_kind(2);
            e->set_code("OFFLINE");
            job.set_attempts(1);
            job.set_dead_reason("permanent_error");
            ledgerq::storage::EventBody ev;
            ev.set_type(sv1::EVENT_DEAD_LETTERED);
            ev.set_from_state(job.state());
            ev.set_to_state(sv1::STATE_DEAD);
            ev.set_reason(job.dead_reason());
            job.set_state(sv1::STATE_DEAD);
            w.Event(std::move(ev));
            return ledgerq::Status::Ok();
          }}},
        "test", [&pr](auto r) { pr.set_value(std::move(r)); });
    auto died = pr.get_future().get()[0];
    REQUIRE(died.ok());
    REQUIRE(died->compensation_pending());
    REQUIRE((*store)->Close().ok());
  }
  Daemon d;
  REQUIRE(d.Start(data, {"--config", cfg}));
  auto c = MakeClient(d.grpc_address());
  REQUIRE(WaitFor([&] { return JobsIn(c, "refunds").size() == 1; }, 10s));
  CHECK(JobsIn(c, "refunds")[0].parent_job_id() == id);
  auto dead = c.GetJob(id);
  REQUIRE(dead.ok());
  CHECK(dead->needs_attention());
  CHECK(dead->compensation_job_id() == JobsIn(c, "refunds")[0].id());
  // And a second restart adds nothing.
  REQUIRE(Terminate(d).code == 0);
  Daemon d2;
  REQUIRE(d2.Start(data, {"--config", cfg}));
  auto c2 = MakeClient(d2.grpc_address());
  std::this_thread::sleep_for(500ms);
  CHECK(JobsIn(c2, "refunds").size() == 1);
  CHECK(Terminate(d2).code == 0);
}

TEST_CASE("ledgerqd --check-config names bad on-dead-letter keys and a looping chain",
          "[e2e][remediation]") {
  TempDir dir;
  const std::string bad = dir.path() + "/bad.toml", loop = dir.path() + "/loop.toml",
                    good = dir.path() + "/good.toml";
  REQUIRE(WriteFile(bad, R"(
[types.a]
on-dead-letter = { queue = "r", needs-attention = "yes" }
)"));
  REQUIRE(WriteFile(loop, R"(
[types.a]
on-dead-letter = { queue = "r", type = "b" }
[types.b]
on-dead-letter = { queue = "r", type = "a", needs-attention = true }
)"));
  REQUIRE(WriteFile(good, kConfig));
  auto check = [](const std::string& file, std::string* out, std::string* err) {
    return ledgerq::testing::RunCommand({ledgerq::testing::LedgerqdPath(), "--check-config", file},
                                        out, err);
  };
  std::string out, err;
  ExitInfo e = check(bad, &out, &err);
  CHECK(e.code != 0);
  CHECK_THAT(err, Catch::Contains("types.a.on-dead-letter.needs-attention: must be true or false"));
  e = check(loop, &out, &err);
  CHECK(e.code != 0);
  CHECK_THAT(err, Catch::Contains("the compensation chain loops back (a -> b -> a)"));
  e = check(good, &out, &err);
  CHECK(e.code == 0);
  CHECK_THAT(out, Catch::Contains("2 type policies"));
}
