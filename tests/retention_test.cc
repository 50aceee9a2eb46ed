// Retention (payload purge, record removal, idempotency expiry) and log archiving
// (TruncateLog, checkpoints, verification from the checkpoint), on a FakeClock.
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <future>
#include <thread>

#include "scheduler/dispatcher.h"
#include "storage/job_store.h"
#include "storage/testing/log_tamper.h"
#include "tests/support/temp_dir.h"

using namespace ledgerq;
using namespace ledgerq::storage;
using ledgerq::testing::TempDir;
using namespace std::chrono_literals;

namespace {

struct Store {
  Store(const std::string& dir, FakeClock* clock, RetentionPolicy policy,
        std::chrono::microseconds dedup = 24h) {
    StoreOptions o;
    o.data_dir = dir;
    o.clock = clock;
    o.dedup_window = dedup;
    o.sync = SyncMode::kNone;
    o.retention = [policy](const std::string& queue, const std::string&) {
      return queue == "keep" ? RetentionPolicy{} : policy;
    };
    auto s = JobStore::Open(o);
    REQUIRE(s.ok());
    store = std::move(s).value();
  }
  JobStore* operator->() { return store.get(); }
  JobStore& operator*() { return *store; }
  std::unique_ptr<JobStore> store;
};

NewJob Job(std::string queue = "q", std::string key = "", std::string traceparent = "") {
  NewJob j;
  j.queue = std::move(queue);
  j.type = "t";
  j.payload = R"({"secret":"s3"})";
  j.idempotency_key = std::move(key);
  j.traceparent = std::move(traceparent);
  j.max_attempts = 3;
  return j;
}

EnqueueOutcome EnqueueOne(JobStore& store, NewJob item) {
  std::promise<std::vector<EnqueueOutcome>> p;
  auto f = p.get_future();
  store.Enqueue({std::move(item)}, "producer",
                [&p](std::vector<EnqueueOutcome> o) { p.set_value(std::move(o)); });
  auto out = f.get();
  REQUIRE(out.size() == 1);
  REQUIRE(out[0].status.ok());
  return out[0];
}

// Moves a job to `to` with one event (and a result for SUCCEEDED), as a worker's outcome would.
Result<JobRecord> Move(JobStore& store, uint64_t id, State to, EventType type) {
  std::promise<std::vector<Result<JobRecord>>> p;
  auto f = p.get_future();
  store.Transition({{id,
                     [to, type](JobRecord& job, TransitionWriter& w, int64_t) {
                       EventBody ev;
                       ev.set_type(type);
                       ev.set_from_state(job.state());
                       ev.set_to_state(to);
                       job.set_state(to);
                       w.Event(ev);
                       if (to == v1::STATE_SUCCEEDED) w.PutResult("the result");
                       return Status::Ok();
                     }}},
                   "worker", [&p](std::vector<Result<JobRecord>> r) { p.set_value(std::move(r)); });
  return f.get()[0];
}

Result<JobRecord> Complete(JobStore& s, uint64_t id) {
  return Move(s, id, v1::STATE_SUCCEEDED, v1::EVENT_COMPLETED);
}
Result<JobRecord> Kill(JobStore& s, uint64_t id) {
  return Move(s, id, v1::STATE_DEAD, v1::EVENT_DEAD_LETTERED);
}

Result<JobRecord> CancelSync(JobStore& store, uint64_t id) {
  std::promise<Result<JobRecord>> p;
  auto f = p.get_future();
  store.Cancel(id, "op", "no longer needed",
               [&p](Result<JobRecord> r) { p.set_value(std::move(r)); });
  return f.get();
}

Result<Checkpoint> Truncate(JobStore& store, uint64_t to_seq, Digest hash) {
  std::promise<Result<Checkpoint>> p;
  auto f = p.get_future();
  store.TruncateLog(to_seq, hash, "archivist",
                    [&p](Result<Checkpoint> r) { p.set_value(std::move(r)); });
  return f.get();
}

std::vector<EventBody> Events(const JobStore& store) {
  std::vector<EventBody> out;
  REQUIRE(store
              .ScanEvents(0,
                          [&](const EventBody& e) {
                            out.push_back(e);
                            return true;
                          })
              .ok());
  return out;
}

RetentionStats Sweep(JobStore& store, size_t batch = 256) {
  auto r = store.RunRetention(batch);
  REQUIRE(r.ok());
  return *r;
}

const std::string kTrace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

}  // namespace

TEST_CASE("retention purges payloads and results of finished jobs, the chain still verifies",
          "[retention]") {
  TempDir dir;
  FakeClock clock;
  {
    Store s(dir.path(), &clock, {.payloads = 1h});
    auto done = EnqueueOne(*s, Job());
    auto cancelled = EnqueueOne(*s, Job());
    auto ready = EnqueueOne(*s, Job());
    auto kept = EnqueueOne(*s, Job("keep"));
    REQUIRE(Complete(*s, done.job.id()).ok());
    REQUIRE(CancelSync(*s, cancelled.job.id()).ok());
    REQUIRE(Complete(*s, kept.job.id()).ok());

    clock.Advance(59min);
    auto early = Sweep(*s);
    CHECK(early.purged_payloads == 0);
    CHECK(s->GetPayload(done.job.id()).ok());

    clock.Advance(2min);
    auto stats = Sweep(*s, 1);  // one job per batch: the sweep takes several ops
    CHECK(stats.purged_payloads == 2);
    CHECK(stats.batches >= 2);
    CHECK(stats.removed_records == 0);
    for (uint64_t id : {done.job.id(), cancelled.job.id()}) {
      auto job = s->GetJob(id);
      REQUIRE(job.ok());
      CHECK(job->payload_purged());
      CHECK(s->GetPayload(id).status().code() == Code::kNotFound);
      CHECK(s->GetResult(id).status().code() == Code::kNotFound);
    }
    CHECK(s->GetPayload(ready.job.id()).ok());  // not finished
    CHECK(s->GetPayload(kept.job.id()).ok());   // its queue keeps payloads forever
    CHECK(s->GetResult(kept.job.id()).ok());

    auto history = s->GetJobEvents(done.job.id());
    REQUIRE(history.ok());
    REQUIRE(history->back().type() == v1::EVENT_PURGED);
    CHECK(history->back().payload_sha256() == done.job.payload_sha256());
    CHECK(history->back().result_sha256() == std::string(AsBytes(Sha256("the result"))));
    CHECK(history->back().principal() == "ledgerqd:retention");
    CHECK(Sweep(*s).purged_payloads == 0);  // nothing twice
    auto online = s->VerifyLog();
    REQUIRE(online.ok());
    CHECK(online->ok);
  }
  auto report = VerifyChain(dir.path());
  REQUIRE(report.ok());
  CHECK(report->ok);
}

TEST_CASE("retention removes records and their index entries, their events stay", "[retention]") {
  TempDir dir;
  FakeClock clock;
  Store s(dir.path(), &clock, {.payloads = 1h, .records = 24h, .dead = 48h}, 1h);
  auto a = EnqueueOne(*s, Job("q", "key-a", kTrace));
  auto b = EnqueueOne(*s, Job());
  auto c = EnqueueOne(*s, Job());
  auto live = EnqueueOne(*s, Job());
  REQUIRE(Complete(*s, a.job.id()).ok());
  REQUIRE(Kill(*s, b.job.id()).ok());
  REQUIRE(CancelSync(*s, c.job.id()).ok());
  REQUIRE(s->JobsByTraceId("0af7651916cd43dd8448eb211c80319c")->size() == 1);

  clock.Advance(24h + 1s);
  auto stats = Sweep(*s);
  CHECK(stats.removed_records == 2);  // a and c; the dead letter b is kept longer
  CHECK(stats.purged_payloads == 1);  // b's payload
  CHECK(s->GetJob(a.job.id()).status().code() == Code::kNotFound);
  CHECK(s->GetJob(c.job.id()).status().code() == Code::kNotFound);
  CHECK(s->GetJobEvents(a.job.id()).status().code() == Code::kNotFound);
  CHECK(s->GetPayload(a.job.id()).status().code() == Code::kNotFound);
  CHECK(s->JobsByTraceId("0af7651916cd43dd8448eb211c80319c")->empty());
  CHECK(s->GetJobByIdempotencyKey("q", "key-a").status().code() == Code::kNotFound);
  auto b_now = s->GetJob(b.job.id());
  REQUIRE(b_now.ok());
  CHECK(b_now->payload_purged());
  std::vector<uint64_t> ids;
  REQUIRE(s->ScanJobs([&](const JobRecord& j) {
             ids.push_back(j.id());
             return true;
           }).ok());
  CHECK(ids == std::vector<uint64_t>{b.job.id(), live.job.id()});

  // The removed jobs' events stay in the log, with one RECORD_REMOVED each.
  auto events = Events(*s);
  int submitted_a = 0, removed = 0;
  for (const auto& e : events) {
    if (e.job_id() == a.job.id() && e.type() == v1::EVENT_SUBMITTED) ++submitted_a;
    if (e.type() == v1::EVENT_RECORD_REMOVED) {
      ++removed;
      CHECK((e.job_id() == a.job.id() || e.job_id() == c.job.id()));
      CHECK(e.payload_sha256().size() == 32);
    }
  }
  CHECK(submitted_a == 1);
  CHECK(removed == 2);

  clock.Advance(24h);
  CHECK(Sweep(*s).removed_records == 1);
  CHECK(s->GetJob(b.job.id()).status().code() == Code::kNotFound);
  CHECK(s->GetJob(live.job.id()).ok());
  auto report = s->VerifyLog();
  REQUIRE(report.ok());
  CHECK(report->ok);
}

TEST_CASE("a record is kept while its idempotency key still names it", "[retention]") {
  TempDir dir;
  FakeClock clock;
  Store s(dir.path(), &clock, {.records = 1min}, 1h);
  auto keyed = EnqueueOne(*s, Job("q", "k"));
  auto plain = EnqueueOne(*s, Job());
  REQUIRE(Complete(*s, keyed.job.id()).ok());
  REQUIRE(Complete(*s, plain.job.id()).ok());
  clock.Advance(2min);
  CHECK(Sweep(*s).removed_records == 1);
  CHECK(s->GetJob(plain.job.id()).status().code() == Code::kNotFound);
  // A resubmission inside the window still finds the original.
  std::promise<std::vector<EnqueueOutcome>> p;
  s->Enqueue({Job("q", "k")}, "producer",
             [&p](std::vector<EnqueueOutcome> o) { p.set_value(std::move(o)); });
  auto again = p.get_future().get();
  REQUIRE(again[0].status.ok());
  CHECK(again[0].deduplicated);
  CHECK(again[0].job.id() == keyed.job.id());
  clock.Advance(1h);
  auto stats = Sweep(*s);
  CHECK(stats.removed_records == 1);
  CHECK(stats.expired_keys == 1);
  CHECK(s->GetJob(keyed.job.id()).status().code() == Code::kNotFound);
}

TEST_CASE("idempotency keys are deleted once their window has passed", "[retention]") {
  TempDir dir;
  FakeClock clock;
  Store s(dir.path(), &clock, {}, 1h);  // no job retention at all: keys still expire
  auto first = EnqueueOne(*s, Job("q", "k1"));
  EnqueueOne(*s, Job("q", "k2"));
  clock.Advance(30min);
  EnqueueOne(*s, Job("q", "k3"));
  CHECK(Sweep(*s).expired_keys == 0);
  clock.Advance(31min);
  auto stats = Sweep(*s);
  CHECK(stats.expired_keys == 2);
  CHECK(stats.removed_records == 0);
  CHECK(s->GetJob(first.job.id()).ok());  // the job keeps its key in its record
  CHECK(s->GetJob(first.job.id())->idempotency_key() == "k1");
  CHECK(s->GetJobByIdempotencyKey("q", "k3").ok());
  // The expired key is made again; the old index entry must not delete the new record.
  auto remade = EnqueueOne(*s, Job("q", "k1"));
  CHECK_FALSE(remade.deduplicated);
  CHECK(Sweep(*s).expired_keys == 0);
  CHECK(s->GetJobByIdempotencyKey("q", "k1")->id() == remade.job.id());
  clock.Advance(1h);
  CHECK(Sweep(*s).expired_keys == 2);  // k3 and the new k1
  CHECK(s->GetJobByIdempotencyKey("q", "k1").status().code() == Code::kNotFound);
}

TEST_CASE("a redriven dead letter leaves the retention index", "[retention]") {
  TempDir dir;
  FakeClock clock;
  Store s(dir.path(), &clock, {.payloads = 1h, .dead = 2h});
  auto job = EnqueueOne(*s, Job());
  REQUIRE(Kill(*s, job.job.id()).ok());
  REQUIRE(Move(*s, job.job.id(), v1::STATE_READY, v1::EVENT_REDRIVEN).ok());
  clock.Advance(3h);
  auto stats = Sweep(*s);
  CHECK(stats.purged_payloads == 0);
  CHECK(stats.removed_records == 0);
  CHECK(s->GetPayload(job.job.id()).ok());
  // Finished again: indexed again, from its new finish time.
  REQUIRE(Complete(*s, job.job.id()).ok());
  clock.Advance(1h + 1s);
  CHECK(Sweep(*s).purged_payloads == 1);
}

TEST_CASE("RebuildRetentionIndex finds jobs finished before retention was configured",
          "[retention]") {
  TempDir dir;
  FakeClock clock;
  uint64_t id = 0;
  {
    StoreOptions o;
    o.data_dir = dir.path();
    o.clock = &clock;
    auto s = JobStore::Open(o);
    REQUIRE(s.ok());
    id = EnqueueOne(**s, Job("q", "old-key")).job.id();
    REQUIRE(Complete(**s, id).ok());
  }
  clock.Advance(48h);
  Store s(dir.path(), &clock, {.payloads = 1h});
  auto before = Sweep(*s);
  CHECK(before.purged_payloads == 0);  // the job is not indexed yet
  CHECK(before.expired_keys == 1);     // keys are indexed when written
  auto indexed = s->RebuildRetentionIndex();
  REQUIRE(indexed.ok());
  CHECK(*indexed == 1);
  auto stats = Sweep(*s);
  CHECK(stats.purged_payloads == 1);
  CHECK(s->GetJob(id)->payload_purged());
  auto again = s->RebuildRetentionIndex();
  REQUIRE(again.ok());
  CHECK(*again == 0);
}

TEST_CASE("TruncateLog refuses a wrong hash or a bad range and changes nothing",
          "[retention][archive]") {
  TempDir dir;
  FakeClock clock;
  Digest at5{};
  {
    Store s(dir.path(), &clock, {});
    std::vector<uint64_t> ids;
    for (int i = 0; i < 5; ++i) ids.push_back(EnqueueOne(*s, Job()).job.id());
    at5 = s->Head().hash;
    for (int i = 0; i < 5; ++i) ids.push_back(EnqueueOne(*s, Job()).job.id());
    const auto head = s->Head();
    REQUIRE(head.seq == 10);

    Digest wrong = at5;
    wrong[0] ^= 1;
    auto bad_hash = Truncate(*s, 5, wrong);
    CHECK(bad_hash.status().code() == Code::kFailedPrecondition);
    CHECK(bad_hash.status().message().find("to_hash") != std::string::npos);
    CHECK(Truncate(*s, 11, head.hash).status().code() == Code::kInvalidArgument);
    CHECK(Truncate(*s, 0, at5).status().code() == Code::kInvalidArgument);
    CHECK(s->Head().seq == 10);
    CHECK(s->Head().hash == head.hash);
    CHECK(Events(*s).size() == 10);
    CHECK(s->GetCheckpoint().seq == 0);

    auto cp = Truncate(*s, 5, at5);
    REQUIRE(cp.ok());
    CHECK(cp->seq == 5);
    CHECK(cp->hash == at5);
    CHECK(cp->principal == "archivist");
    auto events = Events(*s);
    REQUIRE(events.size() == 6);  // 6..10 and the LOG_ARCHIVED event
    CHECK(events.front().seq() == 6);
    CHECK(events.back().type() == v1::EVENT_LOG_ARCHIVED);
    CHECK(events.back().range_from_seq() == 1);
    CHECK(events.back().range_to_seq() == 5);
    CHECK(events.back().range_head_hash() == std::string(AsBytes(at5)));
    // A job whose events were archived: its record stays, its history holds what is retained.
    auto history = s->GetJobEvents(ids[0]);
    REQUIRE(history.ok());
    CHECK(history->empty());
    CHECK(s->GetJobEvents(ids[9])->size() == 1);
    // Not after the checkpoint any more.
    CHECK(Truncate(*s, 5, at5).status().code() == Code::kInvalidArgument);
    CHECK(Truncate(*s, 3, at5).status().code() == Code::kInvalidArgument);
    auto online = s->VerifyLog();
    REQUIRE(online.ok());
    CHECK(online->ok);
    CHECK(online->checkpoint_seq == 5);
    CHECK(online->checkpoint_hash == at5);
    CHECK(online->events == 6);
    CHECK(online->head_seq == 11);
    REQUIRE(s->CompactArchived().ok());
  }
  // A restart keeps the checkpoint, and the offline walk starts from it too.
  {
    Store s(dir.path(), &clock, {});
    auto cp = s->GetCheckpoint();
    CHECK(cp.seq == 5);
    CHECK(cp.hash == at5);
    CHECK(cp.principal == "archivist");
    CHECK(s->Head().seq == 11);
  }
  auto report = VerifyChain(dir.path());
  REQUIRE(report.ok());
  CHECK(report->ok);
  CHECK(report->checkpoint_seq == 5);
  CHECK(report->events == 6);
}

TEST_CASE("verification from the checkpoint catches tampering in the retained part",
          "[retention][archive]") {
  TempDir dir;
  FakeClock clock;
  auto setup = [&] {
    Store s(dir.path(), &clock, {});
    for (int i = 0; i < 4; ++i) EnqueueOne(*s, Job());
    auto at4 = s->Head().hash;
    for (int i = 0; i < 4; ++i) EnqueueOne(*s, Job());
    REQUIRE(Truncate(*s, 4, at4).ok());
  };
  setup();
  SECTION("an edited event") {
    REQUIRE(storage::testing::EditEvent(dir.path(), 6).ok());
    auto report = VerifyChain(dir.path());
    REQUIRE(report.ok());
    CHECK_FALSE(report->ok);
    CHECK(report->first_bad_seq == 6);
    Store s(dir.path(), &clock, {});
    auto online = s->VerifyLog();
    REQUIRE(online.ok());
    CHECK_FALSE(online->ok);
    CHECK(online->first_bad_seq == 6);
  }
  SECTION("the first retained event deleted") {
    REQUIRE(storage::testing::DeleteEvent(dir.path(), 5).ok());
    auto report = VerifyChain(dir.path());
    REQUIRE(report.ok());
    CHECK_FALSE(report->ok);
    CHECK(report->first_bad_seq == 5);
  }
  SECTION("the first retained event rewritten with a consistent hash") {
    // Its own hash is recomputed, so only the next link betrays it.
    REQUIRE(storage::testing::EditEventRehash(dir.path(), 5).ok());
    auto report = VerifyChain(dir.path());
    REQUIRE(report.ok());
    CHECK_FALSE(report->ok);
    CHECK(report->first_bad_seq == 6);
  }
  SECTION("two retained events swapped") {
    REQUIRE(storage::testing::SwapEvents(dir.path(), 6, 7).ok());
    auto report = VerifyChain(dir.path());
    REQUIRE(report.ok());
    CHECK_FALSE(report->ok);
    CHECK(report->first_bad_seq == 6);
  }
}

TEST_CASE("recovery copes with removed records", "[retention]") {
  TempDir dir;
  FakeClock clock;
  uint64_t ready_id = 0;
  {
    Store s(dir.path(), &clock, {.records = 1h, .dead = 1h});
    for (int i = 0; i < 3; ++i) REQUIRE(Complete(*s, EnqueueOne(*s, Job()).job.id()).ok());
    REQUIRE(Kill(*s, EnqueueOne(*s, Job()).job.id()).ok());
    REQUIRE(Complete(*s, EnqueueOne(*s, Job("keep")).job.id()).ok());
    ready_id = EnqueueOne(*s, Job()).job.id();
    clock.Advance(2h);
    CHECK(Sweep(*s).removed_records == 4);
  }
  Store s(dir.path(), &clock, {.records = 1h, .dead = 1h});
  boost::asio::io_context ioc;
  auto guard = boost::asio::make_work_guard(ioc);
  scheduler::DispatcherOptions dopts;
  dopts.clock = &clock;
  dopts.random = [] { return 0.5; };
  scheduler::Dispatcher d(&*s, ioc, dopts);
  REQUIRE(d.Recover().ok());
  std::thread io([&] { ioc.run(); });
  std::promise<std::vector<scheduler::QueueStats>> p;
  d.ListQueues([&p](std::vector<scheduler::QueueStats> qs) { p.set_value(std::move(qs)); });
  auto qs = p.get_future().get();
  d.Stop();
  guard.reset();
  ioc.stop();
  io.join();
  std::map<std::string, scheduler::QueueStats> by_name;
  for (auto& q : qs) by_name[q.name] = q;
  CHECK(by_name["q"].ready == 1);
  CHECK(by_name["q"].succeeded == 0);
  CHECK(by_name["q"].dead == 0);
  CHECK(by_name["keep"].succeeded == 1);
  CHECK(s->GetJob(ready_id).ok());
}
