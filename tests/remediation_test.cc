// Dead-letter remediation on a real JobStore with a FakeClock: the marks a death gets in its own
// write (each way a job dies), compensation jobs enqueued exactly once (across a reopen, with
// racing passes, again after a redrive), attention resolved, parent/child links, and the
// on-dead-letter config keys.
#include "server/remediation.h"

#include <catch2/catch.hpp>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "scheduler/transitions.h"
#include "server/config.h"
#include "storage/job_store.h"
#include "tests/support/temp_dir.h"

using namespace ledgerq;
using namespace ledgerq::storage;
using ledgerq::testing::TempDir;
using namespace std::chrono_literals;
namespace sched = ledgerq::scheduler;
namespace srv = ledgerq::server;

namespace {

// charge.v1: a compensation in "refunds" and a person; mail.v1: a person only; other types:
// nothing.
srv::Policies TestPolicies() {
  srv::Policies p;
  p.retry.max_attempts = 4;
  p.types["charge.v1"].on_dead_letter =
      srv::OnDeadLetter{.queue = "refunds", .type = "charge.compensate", .needs_attention = true};
  p.types["mail.v1"].on_dead_letter =
      srv::OnDeadLetter{.queue = "", .type = "", .needs_attention = true};
  p.types["charge.compensate"].max_attempts = 9;
  return p;
}

struct Fixture {
  TempDir dir;
  FakeClock clock;
  srv::LivePolicies policies{TestPolicies(), 3};
  std::function<Status()> fault;  // the store's write_fault seam
  RetentionPolicy retention;      // every queue's and type's
  std::unique_ptr<JobStore> store;

  Fixture() { Open(); }

  void Open() {
    StoreOptions o;
    o.data_dir = dir.path();
    o.clock = &clock;
    o.write_fault = [this] { return fault ? fault() : Status::Ok(); };
    o.dead_letter_marks = [this](const JobRecord& job) {
      return srv::DeadLetterMarksFor(policies.Get()->policies, job);
    };
    o.retention = [this](const std::string&, const std::string&) { return retention; };
    auto s = JobStore::Open(o);
    REQUIRE(s.ok());
    store = std::move(s).value();
  }
  void Reopen() {
    REQUIRE(store->Close().ok());
    store.reset();
    Open();
  }

  EnqueueOutcome Enqueue(NewJob job) {
    std::promise<std::vector<EnqueueOutcome>> p;
    store->Enqueue({std::move(job)}, "producer",
                   [&p](std::vector<EnqueueOutcome> o) { p.set_value(std::move(o)); });
    return p.get_future().get()[0];
  }
  std::vector<EnqueueOutcome> EnqueueMany(std::vector<NewJob> jobs) {
    std::promise<std::vector<EnqueueOutcome>> p;
    store->Enqueue(std::move(jobs), "producer",
                   [&p](std::vector<EnqueueOutcome> o) { p.set_value(std::move(o)); });
    return p.get_future().get();
  }
  Result<JobRecord> Apply(uint64_t id, TransitionFn fn, std::string principal = "worker") {
    std::promise<std::vector<Result<JobRecord>>> p;
    store->Transition({{id, std::move(fn)}}, std::move(principal),
                      [&p](std::vector<Result<JobRecord>> r) { p.set_value(std::move(r)); });
    return p.get_future().get()[0];
  }
  Result<JobRecord> Lease(uint64_t id) {
    return Apply(id, sched::LeaseFn({"w1", clock.WallMicros() + 30'000'000, "worker"}));
  }
  Result<JobRecord> Fail(const JobRecord& leased, int32_t kind, std::string code = "DECLINED") {
    sched::AttemptFailure f;
    f.kind = kind;
    f.code = std::move(code);
    f.message = "card declined";
    return Apply(leased.id(),
                 sched::FailFn({leased.id(), leased.attempts(), leased.lease_nonce()}, "worker", f,
                               std::nullopt, sched::RetryPolicy{}, [] { return 0.0; }));
  }
  // Enqueues a job of `type` in "billing" and fails it permanently on its first attempt.
  JobRecord Kill(const std::string& type = "charge.v1") {
    auto made = Enqueue(Job(type));
    REQUIRE(made.status.ok());
    auto leased = Lease(made.job.id());
    REQUIRE(leased.ok());
    auto dead = Fail(*leased, sched::kPermanent);
    REQUIRE(dead.ok());
    REQUIRE(dead->state() == v1::STATE_DEAD);
    return *dead;
  }
  std::vector<EventBody> EventsOf(uint64_t id) {
    auto evs = store->GetJobEvents(id);
    REQUIRE(evs.ok());
    return *evs;
  }
  // Every job of `queue`.
  std::vector<JobRecord> JobsIn(const std::string& queue) {
    std::vector<JobRecord> out;
    REQUIRE(store
                ->ScanJobs([&](const JobRecord& j) {
                  if (j.queue() == queue) out.push_back(j);
                  return true;
                })
                .ok());
    return out;
  }

  static NewJob Job(const std::string& type, uint64_t parent = 0) {
    NewJob j;
    j.queue = "billing";
    j.type = type;
    j.payload = R"({"customer":"c-1","amount":1200})";
    j.max_attempts = 2;
    j.parent_job_id = parent;
    j.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    return j;
  }
};

const EventBody* Find(const std::vector<EventBody>& evs, EventType t) {
  for (const auto& e : evs) {
    if (e.type() == t) return &e;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("each way a job dies marks it for remediation in the death's own write",
          "[remediation]") {
  Fixture f;
  auto check_marked = [&](const JobRecord& dead) {
    INFO("job " << dead.id() << " dead_reason " << dead.dead_reason());
    CHECK(dead.state() == v1::STATE_DEAD);
    CHECK(dead.needs_attention());
    CHECK(dead.compensation_pending());
    auto stored = f.store->GetJob(dead.id());
    REQUIRE(stored.ok());
    CHECK(stored->needs_attention());
    CHECK(stored->compensation_pending());
    const auto evs = f.EventsOf(dead.id());
    const EventBody* ev = Find(evs, v1::EVENT_DEAD_LETTERED);
    REQUIRE(ev != nullptr);
    CHECK(ev->needs_attention());
    auto pending = f.store->PendingCompensations();
    REQUIRE(pending.ok());
    CHECK(std::count(pending->begin(), pending->end(), dead.id()) == 1);
    auto attention = f.store->ListNeedsAttention("billing", 0, 100);
    REQUIRE(attention.ok());
    CHECK(std::count(attention->begin(), attention->end(), dead.id()) == 1);
  };

  SECTION("a permanent failure") {
    JobRecord dead = f.Kill();
    CHECK(dead.dead_reason() == "permanent_error");
    check_marked(dead);
  }
  SECTION("transient failures until the attempts are used up") {
    auto made = f.Enqueue(Fixture::Job("charge.v1"));
    REQUIRE(made.status.ok());
    auto leased = f.Lease(made.job.id());
    REQUIRE(leased.ok());
    auto retry = f.Fail(*leased, sched::kTransient);
    REQUIRE(retry.ok());
    CHECK(retry->state() == v1::STATE_SCHEDULED);
    CHECK_FALSE(retry->compensation_pending());  // a retry is not a death
    f.clock.Advance(1h);
    leased = f.Lease(made.job.id());
    REQUIRE(leased.ok());
    auto dead = f.Fail(*leased, sched::kTransient);
    REQUIRE(dead.ok());
    CHECK(dead->dead_reason() == "attempts_exhausted");
    check_marked(*dead);
  }
  SECTION("lease expiries until the attempts are used up") {
    auto made = f.Enqueue(Fixture::Job("charge.v1"));
    REQUIRE(made.status.ok());
    Result<JobRecord> r = made.job;
    for (int i = 0; i < 2; ++i) {
      f.clock.Advance(1h);
      auto leased = f.Lease(made.job.id());
      REQUIRE(leased.ok());
      r = f.Apply(made.job.id(),
                  sched::ExpireFn({made.job.id(), leased->attempts(), {}}, sched::RetryPolicy{},
                                  [] { return 0.0; }),
                  "ledgerqd");
      REQUIRE(r.ok());
    }
    CHECK(r->dead_reason() == "lease_expired");
    check_marked(*r);
  }
  SECTION("a failed write marks nothing: the flags, the index and the event go together") {
    auto made = f.Enqueue(Fixture::Job("charge.v1"));
    REQUIRE(made.status.ok());
    auto leased = f.Lease(made.job.id());
    REQUIRE(leased.ok());
    const uint64_t head = f.store->Head().seq;
    f.fault = [] { return Status::ResourceExhausted("disk full (test)"); };
    auto failed = f.Fail(*leased, sched::kPermanent);
    CHECK(failed.status().code() == Code::kResourceExhausted);
    f.fault = nullptr;
    CHECK(f.store->Head().seq == head);
    auto stored = f.store->GetJob(made.job.id());
    REQUIRE(stored.ok());
    CHECK(stored->state() == v1::STATE_LEASED);
    CHECK_FALSE(stored->needs_attention());
    CHECK_FALSE(stored->compensation_pending());
    CHECK(f.store->PendingCompensations()->empty());
    CHECK(f.store->ListNeedsAttention("", 0, 100)->empty());
  }
}

TEST_CASE("a type's policy decides the marks: attention only, or nothing", "[remediation]") {
  Fixture f;
  JobRecord mail = f.Kill("mail.v1");
  CHECK(mail.needs_attention());
  CHECK_FALSE(mail.compensation_pending());
  JobRecord other = f.Kill("report.v1");
  CHECK_FALSE(other.needs_attention());
  CHECK_FALSE(other.compensation_pending());
  CHECK_FALSE(Find(f.EventsOf(other.id()), v1::EVENT_DEAD_LETTERED)->needs_attention());
  CHECK(*f.store->PendingCompensations() == std::vector<uint64_t>{});
  CHECK(*f.store->ListNeedsAttention("", 0, 100) == std::vector<uint64_t>{mail.id()});
  auto counts = f.store->CountNeedsAttention();
  REQUIRE(counts.ok());
  CHECK(*counts == std::map<std::string, uint64_t>{{"billing", 1}});
  CHECK(f.store->ListNeedsAttention("other-queue", 0, 100)->empty());
}

TEST_CASE("the compensation job is enqueued once, with its payload, parent and links",
          "[remediation]") {
  Fixture f;
  JobRecord dead = f.Kill();
  std::vector<JobRecord> told;
  srv::Remediation rem(f.store.get(), &f.policies,
                       [&told](const JobRecord& j) { told.push_back(j); });
  auto made = rem.RunPending();
  REQUIRE(made.ok());
  CHECK(*made == 1);
  REQUIRE(told.size() == 1);
  const JobRecord comp = told[0];

  CHECK(comp.queue() == "refunds");
  CHECK(comp.type() == "charge.compensate");
  CHECK(comp.state() == v1::STATE_READY);
  CHECK(comp.parent_job_id() == dead.id());
  CHECK(comp.submitted_by() == srv::kRemediationPrincipal);
  CHECK(comp.idempotency_key() == "compensate:" + std::to_string(dead.id()) + ":1");
  CHECK(comp.max_attempts() == 9);  // the compensation type's policy
  CHECK(comp.policy_version() == 3);
  CHECK(comp.traceparent() == dead.traceparent());  // the same trace
  auto payload = f.store->GetPayload(comp.id());
  REQUIRE(payload.ok());
  auto body = nlohmann::json::parse(*payload);
  CHECK(body["dead_job_id"] == dead.id());
  CHECK(body["queue"] == "billing");
  CHECK(body["type"] == "charge.v1");
  CHECK(body["dead_reason"] == "permanent_error");
  CHECK(body["attempts"] == 1);
  CHECK(body["last_error"]["code"] == "DECLINED");
  CHECK(body["last_error"]["message"] == "card declined");
  CHECK(body["last_error"]["kind"] == "permanent");
  CHECK(body["last_error"]["attempt"] == 1);
  CHECK_FALSE(body.contains("customer"));  // never the dead job's payload

  auto after = f.store->GetJob(dead.id());
  REQUIRE(after.ok());
  CHECK_FALSE(after->compensation_pending());
  CHECK(after->compensation_job_id() == comp.id());
  CHECK(after->needs_attention());  // compensating does not resolve it
  auto evs = f.EventsOf(dead.id());
  const EventBody* enq = Find(evs, v1::EVENT_COMPENSATION_ENQUEUED);
  REQUIRE(enq != nullptr);
  CHECK(enq->related_job_id() == comp.id());
  CHECK(enq->principal() == srv::kRemediationPrincipal);
  CHECK(enq->to_state() == v1::STATE_DEAD);
  auto cevs = f.EventsOf(comp.id());
  REQUIRE(cevs.size() == 1);
  CHECK(cevs[0].type() == v1::EVENT_SUBMITTED);
  CHECK(cevs[0].parent_job_id() == dead.id());
  CHECK(cevs[0].reason() == "compensates job " + std::to_string(dead.id()) + " (permanent_error)");
  CHECK(*f.store->ListChildren(dead.id()) == std::vector<uint64_t>{comp.id()});
  CHECK(f.store->PendingCompensations()->empty());

  // Again: nothing pending, nothing written.
  const uint64_t head = f.store->Head().seq;
  made = rem.RunPending();
  REQUIRE(made.ok());
  CHECK(*made == 0);
  auto again = rem.CompensateOne(dead.id());
  REQUIRE(again.ok());
  CHECK_FALSE(again->created);
  CHECK(again->dead.compensation_job_id() == comp.id());
  CHECK(f.store->Head().seq == head);
  CHECK(f.JobsIn("refunds").size() == 1);
  CHECK(rem.CompensateOne(999'999).status().code() == Code::kNotFound);
}

TEST_CASE("a crash between a death and its compensation: the next start enqueues exactly one",
          "[remediation]") {
  Fixture f;
  JobRecord dead = f.Kill();
  JobRecord dead2 = f.Kill();
  // Nothing compensated them before the "crash": the store closes with the deaths durable.
  f.Reopen();
  CHECK(*f.store->PendingCompensations() == std::vector<uint64_t>{dead.id(), dead2.id()});
  {
    srv::Remediation rem(f.store.get(), &f.policies, nullptr);
    auto made = rem.RunPending();
    REQUIRE(made.ok());
    CHECK(*made == 2);
  }
  // And a crash right after the compensation write: the next start finds nothing to do.
  f.Reopen();
  {
    srv::Remediation rem(f.store.get(), &f.policies, nullptr);
    auto made = rem.RunPending();
    REQUIRE(made.ok());
    CHECK(*made == 0);
  }
  auto refunds = f.JobsIn("refunds");
  REQUIRE(refunds.size() == 2);
  CHECK(refunds[0].parent_job_id() == dead.id());
  CHECK(refunds[1].parent_job_id() == dead2.id());
  CHECK(f.store->GetJob(dead.id())->compensation_job_id() == refunds[0].id());
  CHECK(f.store->GetJob(dead2.id())->compensation_job_id() == refunds[1].id());
}

TEST_CASE("recovery passes racing each other still enqueue one compensation per death",
          "[remediation]") {
  Fixture f;
  std::vector<uint64_t> dead;
  for (int i = 0; i < 5; ++i) dead.push_back(f.Kill().id());
  f.Reopen();
  srv::Remediation a(f.store.get(), &f.policies, nullptr);
  srv::Remediation b(f.store.get(), &f.policies, nullptr);
  std::atomic<uint64_t> created{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      srv::Remediation& r = t % 2 ? a : b;
      for (uint64_t id : dead) {
        auto one = r.CompensateOne(id);
        if (one.ok() && one->created) ++created;
      }
      auto pass = r.RunPending();
      if (pass.ok()) created += *pass;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(created == 5);
  auto refunds = f.JobsIn("refunds");
  CHECK(refunds.size() == 5);
  for (uint64_t id : dead) {
    auto rec = f.store->GetJob(id);
    REQUIRE(rec.ok());
    CHECK_FALSE(rec->compensation_pending());
    auto evs = f.EventsOf(id);
    CHECK(std::count_if(evs.begin(), evs.end(), [](const EventBody& e) {
            return e.type() == v1::EVENT_COMPENSATION_ENQUEUED;
          }) == 1);
  }
}

TEST_CASE("a redriven job that dies again gets a second compensation", "[remediation]") {
  Fixture f;
  JobRecord dead = f.Kill();
  srv::Remediation rem(f.store.get(), &f.policies, nullptr);
  REQUIRE(rem.RunPending().ok());
  auto redriven = f.Apply(dead.id(), sched::RedriveFn(), "operator");
  REQUIRE(redriven.ok());
  CHECK(redriven->state() == v1::STATE_READY);
  CHECK_FALSE(redriven->needs_attention());  // a redrive resolves the attention
  CHECK(f.store->ListNeedsAttention("", 0, 100)->empty());
  auto leased = f.Lease(dead.id());
  REQUIRE(leased.ok());
  auto again = f.Fail(*leased, sched::kPermanent);
  REQUIRE(again.ok());
  CHECK(again->needs_attention());
  CHECK(again->compensation_pending());
  auto made = rem.RunPending();
  REQUIRE(made.ok());
  CHECK(*made == 1);
  auto refunds = f.JobsIn("refunds");
  REQUIRE(refunds.size() == 2);
  CHECK(refunds[0].idempotency_key() == "compensate:" + std::to_string(dead.id()) + ":1");
  CHECK(refunds[1].idempotency_key() == "compensate:" + std::to_string(dead.id()) + ":2");
  CHECK(f.store->GetJob(dead.id())->compensation_job_id() == refunds[1].id());
  CHECK(*f.store->ListChildren(dead.id()) ==
        std::vector<uint64_t>{refunds[0].id(), refunds[1].id()});
}

TEST_CASE("while its compensation is owed a dead job is neither redriven nor removed",
          "[remediation]") {
  Fixture f;
  f.retention.dead = 1h;
  JobRecord dead = f.Kill();
  REQUIRE(dead.compensation_pending());
  // Redrive first would let the compensation run for a job that may then succeed.
  auto refused = f.Apply(dead.id(), sched::RedriveFn(), "operator");
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == Code::kFailedPrecondition);
  CHECK(refused.status().message().find("compensation") != std::string::npos);
  CHECK(f.store->GetJob(dead.id())->state() == v1::STATE_DEAD);
  // Past dead-letters-keep the sweep keeps it while the debt stands ...
  f.clock.Advance(2h);
  auto swept = f.store->RunRetention();
  REQUIRE(swept.ok());
  CHECK(swept->removed_records == 0);
  REQUIRE(f.store->GetJob(dead.id()).ok());
  // ... and removes it once the compensation is enqueued and the sweep comes back.
  srv::Remediation rem(f.store.get(), &f.policies, nullptr);
  REQUIRE(*rem.RunPending() == 1);
  f.clock.Advance(2h);
  auto later = f.store->RunRetention();
  REQUIRE(later.ok());
  CHECK(later->removed_records == 1);
  CHECK_FALSE(f.store->GetJob(dead.id()).ok());
  CHECK(f.JobsIn("refunds").size() == 1);  // the compensation itself stays
}

TEST_CASE("an idempotency key conflict leaves the compensation pending and writes nothing",
          "[remediation]") {
  Fixture f;
  JobRecord dead = f.Kill();
  // Someone took the key in "refunds" with another payload.
  NewJob squatter;
  squatter.queue = "refunds";
  squatter.type = "charge.compensate";
  squatter.payload = "{}";
  squatter.max_attempts = 1;
  squatter.idempotency_key = "compensate:" + std::to_string(dead.id()) + ":1";
  REQUIRE(f.Enqueue(squatter).status.ok());
  const uint64_t head = f.store->Head().seq;
  srv::Remediation rem(f.store.get(), &f.policies, nullptr);
  auto one = rem.CompensateOne(dead.id());
  CHECK(one.status().code() == Code::kAlreadyExists);
  auto pass = rem.RunPending();
  REQUIRE(pass.ok());
  CHECK(*pass == 0);
  CHECK(f.store->Head().seq == head);
  CHECK(f.store->GetJob(dead.id())->compensation_pending());
  CHECK(*f.store->PendingCompensations() == std::vector<uint64_t>{dead.id()});
}

TEST_CASE("resolving attention clears the mark with an event, and refuses other jobs",
          "[remediation]") {
  Fixture f;
  JobRecord mail = f.Kill("mail.v1");
  JobRecord plain = f.Kill("report.v1");
  auto live = f.Enqueue(Fixture::Job("mail.v1"));
  REQUIRE(live.status.ok());

  auto ok = f.Apply(mail.id(), srv::ResolveAttentionFn("refunded by hand"), "alice");
  REQUIRE(ok.ok());
  CHECK_FALSE(ok->needs_attention());
  CHECK(ok->state() == v1::STATE_DEAD);
  const auto evs = f.EventsOf(mail.id());
  const EventBody* ev = Find(evs, v1::EVENT_ATTENTION_CLEARED);
  REQUIRE(ev != nullptr);
  CHECK(ev->principal() == "alice");
  CHECK(ev->reason() == "refunded by hand");
  CHECK(f.store->ListNeedsAttention("", 0, 100)->empty());
  CHECK(f.store->CountNeedsAttention()->empty());

  const uint64_t head = f.store->Head().seq;
  auto twice = f.Apply(mail.id(), srv::ResolveAttentionFn(""), "alice");
  CHECK(twice.status().code() == Code::kFailedPrecondition);
  CHECK_THAT(twice.status().message(), Catch::Contains("does not need attention"));
  auto never = f.Apply(plain.id(), srv::ResolveAttentionFn(""), "alice");
  CHECK(never.status().code() == Code::kFailedPrecondition);
  auto alive = f.Apply(live.job.id(), srv::ResolveAttentionFn(""), "alice");
  CHECK(alive.status().code() == Code::kFailedPrecondition);
  CHECK_THAT(alive.status().message(), Catch::Contains("is READY; only dead jobs"));
  auto missing = f.Apply(424242, srv::ResolveAttentionFn(""), "alice");
  CHECK(missing.status().code() == Code::kNotFound);
  CHECK(f.store->Head().seq == head);
}

TEST_CASE("children are indexed with their creation, and a missing parent writes nothing",
          "[remediation]") {
  Fixture f;
  auto parent = f.Enqueue(Fixture::Job("report.v1"));
  REQUIRE(parent.status.ok());
  const uint64_t pid = parent.job.id();
  std::vector<uint64_t> kids;
  for (int i = 0; i < 3; ++i) {
    auto c = f.Enqueue(Fixture::Job("report.v1", pid));
    REQUIRE(c.status.ok());
    CHECK(c.job.parent_job_id() == pid);
    kids.push_back(c.job.id());
  }
  CHECK(*f.store->ListChildren(pid) == kids);
  CHECK(*f.store->ListChildren(pid, 2) == std::vector<uint64_t>{kids[0], kids[1]});
  CHECK(f.store->ListChildren(kids[0])->empty());
  CHECK(Find(f.EventsOf(kids[0]), v1::EVENT_SUBMITTED)->parent_job_id() == pid);

  const auto head = f.store->Head();
  auto orphan = f.Enqueue(Fixture::Job("report.v1", 999));
  CHECK(orphan.status.code() == Code::kNotFound);
  CHECK(orphan.status.message() == "parent_job_id: job 999 does not exist");
  CHECK(f.store->Head().seq == head.seq);
  CHECK(f.store->Head().next_job_id == head.next_job_id);
  CHECK(f.store->ListChildren(999)->empty());

  // In a batch each item stands alone; a parent created earlier in the same batch counts.
  const uint64_t next = head.next_job_id;
  auto batch = f.EnqueueMany(
      {Fixture::Job("report.v1"), Fixture::Job("report.v1", 888), Fixture::Job("report.v1", next)});
  REQUIRE(batch.size() == 3);
  CHECK(batch[0].status.ok());
  CHECK(batch[1].status.code() == Code::kNotFound);
  REQUIRE(batch[2].status.ok());
  CHECK(batch[0].job.id() == next);
  CHECK(batch[2].job.parent_job_id() == next);
  CHECK(*f.store->ListChildren(next) == std::vector<uint64_t>{batch[2].job.id()});

  f.Reopen();  // the index is durable
  CHECK(*f.store->ListChildren(pid) == kids);
}

TEST_CASE("on-dead-letter in the config file: keys, errors that name them, the policy digest",
          "[remediation][policy]") {
  auto parse = [](const std::string& text) { return srv::ParseConfigToml(text, srv::Config{}); };
  auto good = parse(R"(
[types."charge.v1"]
on-dead-letter = { queue = "refunds", type = "charge.compensate", needs-attention = true }
[types."mail.v1"]
on-dead-letter = { needs-attention = true }
)");
  REQUIRE(good.ok());
  const auto& o = *good->type_decls.at("charge.v1").on_dead_letter;
  CHECK(o.queue == "refunds");
  CHECK(o.type == "charge.compensate");
  CHECK(o.needs_attention);
  CHECK_FALSE(good->type_decls.at("mail.v1").on_dead_letter->compensates());
  // It is part of the canonical policy text, so changing it makes a new policy version.
  auto other = parse(R"(
[types."charge.v1"]
on-dead-letter = { queue = "refunds", type = "charge.compensate" }
[types."mail.v1"]
on-dead-letter = { needs-attention = true }
)");
  REQUIRE(other.ok());
  CHECK_THAT(good->MakePolicies().Canonical(), Catch::Contains("on-dead-letter"));
  CHECK(good->MakePolicies().Canonical() != other->MakePolicies().Canonical());

  auto bad = [&](const std::string& text, const std::string& expect) {
    auto r = parse(text);
    INFO(text);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.status().message(), Catch::Contains(expect));
  };
  bad("[types.t]\non-dead-letter = { queue = \"r\" }\n",
      "types.t.on-dead-letter.type: a "
      "compensation job needs both");
  bad("[types.t]\non-dead-letter = { colour = \"red\" }\n",
      "unknown key \"types.t.on-dead-letter.colour\"");
  bad("[types.t]\non-dead-letter = { needs-attention = \"yes\" }\n",
      "types.t.on-dead-letter.needs-attention: must be true or false");
  bad("[types.t]\non-dead-letter = {}\n", "types.t.on-dead-letter: asks for nothing");
  bad("[types.t]\non-dead-letter = { queue = \"a b\", type = \"x\" }\n",
      "types.t.on-dead-letter.queue");
  bad("[types.t]\non-dead-letter = \"refunds\"\n", "types.t.on-dead-letter: must be a table");
  bad("[queues.q]\non-dead-letter = { needs-attention = true }\n",
      "unknown key \"queues.q.on-dead-letter\"");
  bad("[types.t]\non-dead-letter = { queue = \"r\", type = \"t\" }\n",
      "types.t.on-dead-letter.type: the compensation chain loops back (t -> t)");
  bad(R"(
[types.a]
on-dead-letter = { queue = "r", type = "b" }
[types.b]
on-dead-letter = { queue = "r", type = "a" }
)",
      "types.a.on-dead-letter.type: the compensation chain loops back (a -> b -> a)");
  // A chain that ends is fine: the compensation's own policy applies when it dies.
  CHECK(parse(R"(
[types.a]
on-dead-letter = { queue = "r", type = "b" }
[types.b]
on-dead-letter = { needs-attention = true }
)")
            .ok());
}
