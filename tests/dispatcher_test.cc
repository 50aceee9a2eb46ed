// Unit tests of scheduler::Dispatcher against a real JobStore and a FakeClock.
//
// Each test owns a Harness: a TempDir, a FakeClock, a JobStore and a Dispatcher running on its own
// io_context thread. Every asynchronous call is made synchronous with a promise and a bounded
// wait; time moves only through FakeClock::Advance followed by Poke and a settle barrier (a
// strand Sync, then a store barrier so the committer's callbacks have posted back, then Sync
// again). Nothing relies on a real-time sleep for correctness.
#include "scheduler/dispatcher.h"

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/sha256.h"
#include "scheduler/retry_policy.h"
#include "scheduler/transitions.h"
#include "storage/job_store.h"
#include "tests/support/temp_dir.h"

using namespace ledgerq;
using namespace ledgerq::scheduler;
using ledgerq::storage::EventBody;
using ledgerq::storage::JobRecord;
using ledgerq::storage::JobStore;
using ledgerq::storage::NewJob;
using ledgerq::testing::TempDir;
using namespace std::chrono_literals;
using std::chrono::microseconds;
namespace sv1 = ledgerq::storage::v1;

namespace {

constexpr auto kTimeout = 5s;

// A one-shot answer slot whose callback may outlive the test body (it holds only shared state)
// and counts how many times it was called, so "exactly once" can be checked without throwing
// on the dispatcher's threads.
template <typename T>
class Slot {
 public:
  Slot() : state_(std::make_shared<State>()), future_(state_->promise.get_future().share()) {}

  std::function<void(T)> Callback() const {
    auto s = state_;
    return [s](T value) {
      if (s->calls.fetch_add(1) == 0) s->promise.set_value(std::move(value));
    };
  }
  bool Ready() const { return future_.wait_for(0s) == std::future_status::ready; }
  bool WaitFor(std::chrono::milliseconds d) const {
    return future_.wait_for(d) == std::future_status::ready;
  }
  T Get() const {
    REQUIRE(future_.wait_for(kTimeout) == std::future_status::ready);
    return future_.get();
  }
  int Calls() const { return state_->calls.load(); }

 private:
  struct State {
    std::promise<T> promise;
    std::atomic<int> calls{0};
  };
  std::shared_ptr<State> state_;
  std::shared_future<T> future_;
};

// Blocks the store's committer (through StoreOptions::write_fault) while closed, so a test can
// hold a transition "in flight" deterministically. Waits are bounded so nothing can hang.
class Gate {
 public:
  void Close() {
    std::lock_guard lock(mu_);
    open_ = false;
  }
  void Open() {
    {
      std::lock_guard lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  void Pass() {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, 10s, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
};

using LeaseResult = Result<std::vector<LeasedJob>>;
using JobResult = Result<JobRecord>;

class Harness {
 public:
  explicit Harness(DispatcherOptions opts = {}) : opts_(std::move(opts)) {
    opts_.clock = &clock;
    auto jitter = jitter_;
    if (!opts_.random) opts_.random = [jitter] { return jitter->load(); };
    OpenStore();
    Start();
  }
  ~Harness() {
    Shutdown();
    CloseStore();
  }
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  Dispatcher& d() { return *dispatcher_; }
  JobStore& store() { return *store_; }
  void SetJitter(double u) { jitter_->store(u); }

  // A full restart: the dispatcher goes away, the store is closed and reopened, and a new
  // dispatcher recovers from it.
  void Restart() {
    Shutdown();
    CloseStore();
    OpenStore();
    Start();
  }

  // Runs on the strand after everything posted before it.
  void Barrier() {
    Slot<bool> done;
    auto cb = done.Callback();
    dispatcher_->Sync([cb] { cb(true); });
    REQUIRE(done.WaitFor(kTimeout));
  }
  // Returns once every transition submitted before it has been written and its callback run
  // (the store finishes groups in order on one thread).
  void StoreBarrier() {
    Slot<bool> done;
    auto cb = done.Callback();
    store_->Transition({}, "barrier", [cb](std::vector<JobResult>) { cb(true); });
    REQUIRE(done.WaitFor(kTimeout));
  }
  // Lets chains of strand -> committer -> strand work run out.
  void Settle() {
    for (int i = 0; i < 3; ++i) {
      Barrier();
      StoreBarrier();
    }
    Barrier();
  }
  // Moves fake time, lets the dispatcher run what is due and waits for the consequences.
  void Advance(microseconds d) {
    clock.Advance(d);
    dispatcher_->Poke();
    Settle();
  }

  FakeClock clock;
  Gate gate;
  std::atomic<bool> fail_writes{false};  // every group write fails as a full disk would

 private:
  void OpenStore() {
    storage::StoreOptions o;
    o.data_dir = dir_.path();
    o.clock = &clock;
    o.write_fault = [this]() -> Status {
      gate.Pass();
      return fail_writes ? Status::ResourceExhausted("disk full (injected)") : Status::Ok();
    };
    auto s = JobStore::Open(o);
    REQUIRE(s.ok());
    store_ = std::move(s).value();
  }
  void CloseStore() {
    if (store_) (void)store_->Close();
    store_.reset();
  }
  void Start() {
    ioc_ = std::make_unique<boost::asio::io_context>();
    guard_.emplace(boost::asio::make_work_guard(*ioc_));
    dispatcher_ = std::make_unique<Dispatcher>(store_.get(), *ioc_, opts_);
    Status st = dispatcher_->Recover();
    io_thread_ = std::thread([ioc = ioc_.get()] { ioc->run(); });
    REQUIRE(st.ok());
  }
  // Never throws (it runs from the destructor): waits are bounded and unchecked.
  void Shutdown() {
    if (!dispatcher_) return;
    gate.Open();
    dispatcher_->Stop();
    for (int i = 0; i < 3; ++i) {
      auto p1 = std::make_shared<std::promise<void>>();
      auto f1 = p1->get_future();
      dispatcher_->Sync([p1] { p1->set_value(); });
      (void)f1.wait_for(kTimeout);
      auto p2 = std::make_shared<std::promise<void>>();
      auto f2 = p2->get_future();
      store_->Transition({}, "barrier", [p2](std::vector<JobResult>) { p2->set_value(); });
      (void)f2.wait_for(kTimeout);
    }
    auto p3 = std::make_shared<std::promise<void>>();
    auto f3 = p3->get_future();
    dispatcher_->Sync([p3] { p3->set_value(); });
    (void)f3.wait_for(kTimeout);
    guard_.reset();
    ioc_->stop();
    if (io_thread_.joinable()) io_thread_.join();
    dispatcher_.reset();
    ioc_.reset();
  }

  TempDir dir_;
  DispatcherOptions opts_;
  std::shared_ptr<std::atomic<double>> jitter_ = std::make_shared<std::atomic<double>>(0.5);
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<boost::asio::io_context> ioc_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guard_;
  std::thread io_thread_;
  std::unique_ptr<Dispatcher> dispatcher_;
};

NewJob Job(std::string queue = "q", int32_t priority = 0, uint32_t max_attempts = 5) {
  NewJob j;
  j.queue = std::move(queue);
  j.type = "t";
  j.payload = R"({"n":1})";
  j.priority = priority;
  j.max_attempts = max_attempts;
  return j;
}

// Enqueues through the store and tells the dispatcher, as the server does.
std::vector<JobRecord> EnqueueMany(Harness& h, std::vector<NewJob> items) {
  Slot<std::vector<storage::EnqueueOutcome>> out;
  h.store().Enqueue(std::move(items), "producer", out.Callback());
  std::vector<JobRecord> jobs;
  for (const auto& o : out.Get()) {
    REQUIRE(o.status.ok());
    REQUIRE_FALSE(o.deduplicated);
    h.d().OnCreated(o.job);
    jobs.push_back(o.job);
  }
  h.Barrier();
  return jobs;
}

JobRecord Enqueue(Harness& h, NewJob item) { return EnqueueMany(h, {std::move(item)})[0]; }

LeaseParams Params(std::string queue = "q", uint32_t max_jobs = 1, microseconds duration = 30s,
                   microseconds wait = 0s) {
  LeaseParams p;
  p.queues = {std::move(queue)};
  p.worker_id = "worker-1";
  p.max_jobs = max_jobs;
  p.lease_duration = duration;
  p.wait = wait;
  p.principal = "worker";
  return p;
}

LeaseResult LeaseSync(Harness& h, LeaseParams p) {
  Slot<LeaseResult> slot;
  h.d().Lease(std::move(p), slot.Callback());
  LeaseResult r = slot.Get();
  h.Barrier();
  return r;
}

std::vector<LeasedJob> LeaseJobs(Harness& h, LeaseParams p) {
  auto r = LeaseSync(h, std::move(p));
  REQUIRE(r.ok());
  return r.value();
}

// Leases exactly one job from `queue`.
LeasedJob LeaseOne(Harness& h, std::string queue = "q", microseconds duration = 30s) {
  auto jobs = LeaseJobs(h, Params(std::move(queue), 1, duration));
  REQUIRE(jobs.size() == 1);
  return jobs[0];
}

// Asserts that nothing can be leased from `queue` right now.
void RequireNothingToLease(Harness& h, std::string queue = "q") {
  auto jobs = LeaseJobs(h, Params(std::move(queue), 8));
  REQUIRE(jobs.empty());
}

Token TokenOf(const LeasedJob& lj) {
  return Token{lj.job.id(), lj.job.attempts(), lj.job.lease_nonce()};
}

JobResult CompleteSync(Harness& h, Token t, std::string result = "done") {
  Slot<JobResult> slot;
  h.d().Complete(t, std::move(result), "worker", slot.Callback());
  JobResult r = slot.Get();
  h.Barrier();
  return r;
}

AttemptFailure Failure(int32_t kind, std::string code) {
  AttemptFailure f;
  f.kind = kind;
  f.code = std::move(code);
  f.message = "it went wrong: " + f.code;
  f.details = "details of " + f.code;
  return f;
}

JobResult FailSync(Harness& h, Token t, AttemptFailure f,
                   std::optional<microseconds> retry_after = std::nullopt) {
  Slot<JobResult> slot;
  h.d().Fail(t, std::move(f), retry_after, "worker", slot.Callback());
  JobResult r = slot.Get();
  h.Barrier();
  return r;
}

JobResult ReleaseSync(Harness& h, Token t, microseconds delay) {
  Slot<JobResult> slot;
  h.d().Release(t, delay, "worker", slot.Callback());
  JobResult r = slot.Get();
  h.Barrier();
  return r;
}

Result<std::vector<HeartbeatOutcome>> HeartbeatSync(
    Harness& h, std::vector<Token> tokens, microseconds extend_by,
    std::optional<std::string> checkpoint = std::nullopt) {
  Slot<Result<std::vector<HeartbeatOutcome>>> slot;
  h.d().Heartbeat(std::move(tokens), extend_by, std::move(checkpoint), "worker", slot.Callback());
  auto r = slot.Get();
  h.Barrier();
  return r;
}

Result<QueueStats> SetPausedSync(Harness& h, std::string queue, bool paused) {
  Slot<Result<QueueStats>> slot;
  h.d().SetPaused(std::move(queue), paused, "operator", slot.Callback());
  return slot.Get();
}

std::vector<QueueStats> ListQueuesSync(Harness& h) {
  Slot<std::vector<QueueStats>> slot;
  h.d().ListQueues(slot.Callback());
  return slot.Get();
}

QueueStats StatsOf(Harness& h, const std::string& queue) {
  for (auto& s : ListQueuesSync(h)) {
    if (s.name == queue) return s;
  }
  FAIL("queue " << queue << " is not listed");
  return {};
}

std::vector<JobResult> RedriveSync(Harness& h, std::vector<uint64_t> ids) {
  Slot<std::vector<JobResult>> slot;
  h.d().Redrive(std::move(ids), "operator", slot.Callback());
  auto r = slot.Get();
  h.Barrier();
  return r;
}

JobRecord GetJob(Harness& h, uint64_t id) {
  auto r = h.store().GetJob(id);
  REQUIRE(r.ok());
  return r.value();
}

// Bounded polling for effects that travel strand -> committer -> strand.
template <typename Pred>
bool Eventually(Pred pred, std::chrono::milliseconds limit = 5000ms) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return pred();
}

JobRecord WaitForState(Harness& h, uint64_t id, sv1::State state) {
  REQUIRE(Eventually([&] {
    auto r = h.store().GetJob(id);
    return r.ok() && r->state() == state;
  }));
  h.Settle();
  return GetJob(h, id);
}

std::vector<EventBody> EventsOf(Harness& h, uint64_t job_id) {
  std::vector<EventBody> out;
  REQUIRE(h.store()
              .ScanEvents(1,
                          [&](const EventBody& e) {
                            if (e.job_id() == job_id) out.push_back(e);
                            return true;
                          })
              .ok());
  return out;
}

std::vector<sv1::EventType> EventTypesOf(Harness& h, uint64_t job_id) {
  std::vector<sv1::EventType> types;
  for (const auto& e : EventsOf(h, job_id)) types.push_back(e.type());
  return types;
}

size_t CountEvents(Harness& h, uint64_t job_id, sv1::EventType type) {
  size_t n = 0;
  for (const auto& e : EventsOf(h, job_id)) n += e.type() == type ? 1 : 0;
  return n;
}

// Leases job `id` (the only ready job of its queue), fails it transiently and moves fake time
// past its backoff, ready for the next attempt.
void FailAndWait(Harness& h, const std::string& queue, uint64_t id, const std::string& code) {
  auto lj = LeaseOne(h, queue);
  REQUIRE(lj.job.id() == id);
  auto r = FailSync(h, TokenOf(lj), Failure(kTransient, code));
  REQUIRE(r.ok());
  if (r->state() == sv1::STATE_SCHEDULED) {
    h.Advance(microseconds(r->run_at_us() - h.clock.WallMicros()));
  }
}

}  // namespace

// 1 -------------------------------------------------------------------------------------------

TEST_CASE("dispatcher: leases go by priority, then FIFO by id", "[dispatcher]") {
  Harness h;
  std::vector<uint64_t> ids;
  for (int32_t prio : {0, 5, 0, 5, 1}) ids.push_back(Enqueue(h, Job("q", prio)).id());

  std::vector<uint64_t> order;
  for (int i = 0; i < 5; ++i) order.push_back(LeaseOne(h).job.id());
  CHECK(order == std::vector<uint64_t>{ids[1], ids[3], ids[4], ids[0], ids[2]});
  RequireNothingToLease(h);

  // A batch lease takes them in the same order.
  std::vector<uint64_t> more;
  for (int32_t prio : {0, 5, 0, 5, 1}) more.push_back(Enqueue(h, Job("q", prio)).id());
  auto batch = LeaseJobs(h, Params("q", 5));
  REQUIRE(batch.size() == 5);
  std::vector<uint64_t> batch_ids;
  for (const auto& lj : batch) batch_ids.push_back(lj.job.id());
  CHECK(batch_ids == std::vector<uint64_t>{more[1], more[3], more[4], more[0], more[2]});
}

// 2 -------------------------------------------------------------------------------------------

TEST_CASE("dispatcher: a delayed job is leasable only once its run_at has come", "[dispatcher]") {
  Harness h;
  NewJob later = Job();
  later.run_at_us = h.clock.WallMicros() + 60'000'000;
  auto job = Enqueue(h, later);
  REQUIRE(job.state() == sv1::STATE_SCHEDULED);

  RequireNothingToLease(h);
  CHECK(StatsOf(h, "q").scheduled == 1);
  h.Advance(59s);
  RequireNothingToLease(h);

  h.Advance(2s);
  CHECK(StatsOf(h, "q").ready == 1);
  auto lj = LeaseOne(h);
  CHECK(lj.job.id() == job.id());
  CHECK(lj.job.attempts() == 1);
  CHECK(lj.payload == R"({"n":1})");
  CHECK(GetJob(h, job.id()).state() == sv1::STATE_LEASED);
}

// 3 -------------------------------------------------------------------------------------------

TEST_CASE("dispatcher: no job is ever leased to two workers at once", "[dispatcher]") {
  Harness h;
  std::vector<NewJob> items;
  for (int i = 0; i < 200; ++i) items.push_back(Job("q", i % 3));
  auto jobs = EnqueueMany(h, std::move(items));
  REQUIRE(jobs.size() == 200);

  constexpr int kThreads = 8;
  std::mutex mu;
  std::vector<uint64_t> leased;  // every id handed out, duplicates included
  std::atomic<int> problems{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // No Catch2 assertions off the main thread: record problems instead.
      for (int call = 0; call < 1000; ++call) {
        auto p = std::make_shared<std::promise<LeaseResult>>();
        auto f = p->get_future();
        LeaseParams params = Params("q", 1 + static_cast<uint32_t>((t + call) % 7), 60s);
        params.worker_id = "worker-" + std::to_string(t);
        h.d().Lease(std::move(params), [p](LeaseResult r) { p->set_value(std::move(r)); });
        if (f.wait_for(kTimeout) != std::future_status::ready) {
          ++problems;
          return;
        }
        LeaseResult r = f.get();
        if (!r.ok()) {
          ++problems;
          return;
        }
        if (r->empty()) return;
        std::lock_guard lock(mu);
        for (const auto& lj : *r) {
          leased.push_back(lj.job.id());
          if (lj.job.attempts() != 1 || lj.job.state() != sv1::STATE_LEASED) ++problems;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  h.Settle();

  CHECK(problems == 0);
  std::set<uint64_t> unique(leased.begin(), leased.end());
  CHECK(leased.size() == unique.size());  // no duplicates
  CHECK(unique.size() == 200);
  for (const auto& job : jobs) {
    auto stored = GetJob(h, job.id());
    CHECK(stored.state() == sv1::STATE_LEASED);
    CHECK(stored.attempts() == 1);
    CHECK(CountEvents(h, job.id(), sv1::EVENT_LEASED) == 1);
  }
  auto stats = StatsOf(h, "q");
  CHECK(stats.leased == 200);
  CHECK(stats.ready == 0);
  CHECK(h.d().Stats().active_leases == 200);
}

// 4 -------------------------------------------------------------------------------------------

TEST_CASE("dispatcher: an expired lease is retried, and its old token is fenced off",
          "[dispatcher]") {
  Harness h;
  auto job = Enqueue(h, Job());
  auto first = LeaseOne(h, "q", 10s);
  REQUIRE(first.job.id() == job.id());
  const Token old = TokenOf(first);
  REQUIRE(old.attempt == 1);

  h.Advance(9s);
  CHECK(GetJob(h, job.id()).state() == sv1::STATE_LEASED);

  h.Advance(2s);  // 11s after the grant
  auto expired = WaitForState(h, job.id(), sv1::STATE_SCHEDULED);
  CHECK(expired.attempts() == 1);
  CHECK(expired.run_at_us() == h.clock.WallMicros() + 500'000);  // 1s ceiling * 0.5
  REQUIRE(expired.errors_size() == 1);
  CHECK(expired.errors(0).code() == "LEASE_EXPIRED");
  CHECK(expired.lease_worker_id().empty());
  auto types = EventTypesOf(h, job.id());
  REQUIRE(types.size() >= 2);
  CHECK(types[types.size() - 2] == sv1::EVENT_LEASE_EXPIRED);
  CHECK(types[types.size() - 1] == sv1::EVENT_RETRY_SCHEDULED);
  CHECK(h.d().Stats().active_leases == 0);

  // The old token changes nothing.
  const uint64_t seq_before = h.store().Head().seq;
  auto late = CompleteSync(h, old);
  CHECK(late.status().code() == Code::kFailedPrecondition);
  CHECK_THAT(late.status().message(), Catch::Contains("SCHEDULED"));
  CHECK(h.store().Head().seq == seq_before);
  CHECK(GetJob(h, job.id()).SerializeAsString() == expired.SerializeAsString());

  // Not before the backoff has passed; then as attempt 2.
  RequireNothingToLease(h);
  h.Advance(500ms);
  auto second = LeaseOne(h, "q", 10s);
  CHECK(second.job.id() == job.id());
  CHECK(second.job.attempts() == 2);

  auto hb = HeartbeatSync(h, {old}, 10s);
  REQUIRE(hb.ok());
  REQUIRE(hb->size() == 1);
  CHECK((*hb)[0].lost);
  CHECK_FALSE((*hb)[0].message.empty());

  // Stale Fail and Release are refused as well; the current token still works.
  CHECK(FailSync(h, old, Failure(kTransient, "X")).status().code() == Code::kFailedPrecondition);
  CHECK(ReleaseSync(h, old, 0s).status().code() == Code::kFailedPrecondition);
  auto done = CompleteSync(h, TokenOf(second));
  REQUIRE(done.ok());
  CHECK(done->state() == sv1::STATE_SUCCEEDED);
  CHECK(done->completed_attempt() == 2);
}

// 5 -------------------------------------------------------------------------------------------

TEST_CASE("dispatcher: a heartbeat extends the lease and carries a checkpoint to the next attempt",
          "[dispatcher]") {
  Harness h;
  SECTION("extension") {
    auto job = Enqueue(h, Job());
    auto lj = LeaseOne(h, "q", 10s);
    CHECK(lj.deadline_us == h.clock.WallMicros() + 10'000'000);
    h.Advance(8s);
    auto hb = HeartbeatSync(h, {TokenOf(lj)}, 10s);
    REQUIRE(hb.ok());
    REQUIRE(hb->size() == 1);
    CHECK_FALSE((*hb)[0].lost);
    CHECK((*hb)[0].deadline_us == h.clock.WallMicros() + 10'000'000);
    CHECK(GetJob(h, job.id()).lease_deadline_us() == (*hb)[0].deadline_us);
    CHECK(EventTypesOf(h, job.id()).size() == 2);  // SUBMITTED, LEASED: an extension is no event

    h.Advance(8s);  // 16s after the grant, 8s after the extension
    CHECK(GetJob(h, job.id()).state() == sv1::STATE_LEASED);
    auto done = CompleteSync(h, TokenOf(lj));
    REQUIRE(done.ok());
    CHECK(done->state() == sv1::STATE_SUCCEEDED);
  }
  SECTION("without a heartbeat the same lease would have expired") {
    auto job = Enqueue(h, Job());
    auto lj = LeaseOne(h, "q", 10s);
    h.Advance(8s);
    h.Advance(8s);
    WaitForState(h, job.id(), sv1::STATE_SCHEDULED);
    CHECK(CompleteSync(h, TokenOf(lj)).status().code() == Code::kFailedPrecondition);
  }
  SECTION("checkpoint") {
    auto job = Enqueue(h, Job());
    auto lj = LeaseOne(h, "q", 10s);
    CHECK_FALSE(lj.checkpoint.has_value());
    auto hb = HeartbeatSync(h, {TokenOf(lj)}, 0s, std::string("page=7"));
    REQUIRE(hb.ok());
    CHECK_FALSE((*hb)[0].lost);
    CHECK(GetJob(h, job.id()).has_checkpoint());

    auto failed = FailSync(h, TokenOf(lj), Failure(kTransient, "FLAKY"));
    REQUIRE(failed.ok());
    REQUIRE(failed->state() == sv1::STATE_SCHEDULED);
    h.Advance(1s);
    auto again = LeaseOne(h, "q", 10s);
    CHECK(again.job.id() == job.id());
    CHECK(again.job.attempts() == 2);
    REQUIRE(again.checkpoint.has_value());
    CHECK(*again.checkpoint == "page=7");
  }
}

// 6 -------------------------------------------------------------------------------------------

TEST_CASE("dispatcher: Complete is at-most-once and fenced by the token", "[dispatcher]") {
  Harness h;
  auto a = Enqueue(h, Job());
  auto lj = LeaseOne(h);
  REQUIRE(lj.job.id() == a.id());
  auto other = Enqueue(h, Job());  // READY, never leased

  auto first = CompleteSync(h, TokenOf(lj), "result-1");
  REQUIRE(first.ok());
  CHECK(first->state() == sv1::STATE_SUCCEEDED);
  CHECK(first->completed_attempt() == 1);
  const uint64_t seq_after_first = h.store().Head().seq;

  auto second = CompleteSync(h, TokenOf(lj), "result-1");
  REQUIRE(second.ok());
  CHECK(second->id() == first->id());
  CHECK(second->state() == sv1::STATE_SUCCEEDED);
  CHECK(second->completed_attempt() == first->completed_attempt());
  CHECK(second->last_event_seq() == first->last_event_seq());
  CHECK(h.store().Head().seq == seq_after_first);
  CHECK(CountEvents(h, a.id(), sv1::EVENT_COMPLETED) == 1);
  CHECK(h.store().GetResult(a.id()).value() == "result-1");

  // Stale tokens: a later attempt of the same job, and a job that is not leased.
  auto wrong_attempt = CompleteSync(h, Token{a.id(), 2, {}});
  CHECK(wrong_attempt.status().code() == Code::kFailedPrecondition);
  auto wrong_job = CompleteSync(h, Token{other.id(), 1, {}});
  CHECK(wrong_job.status().code() == Code::kFailedPrecondition);
  CHECK_THAT(wrong_job.status().message(), Catch::Contains("READY"));
  CHECK(h.store().Head().seq == seq_after_first);
  CHECK(CountEvents(h, a.id(), sv1::EVENT_COMPLETED) == 1);
  CHECK(GetJob(h, other.id()).state() == sv1::STATE_READY);

  // The untouched job is still leasable, and its own lease is not a token for the first one.
  auto next = LeaseOne(h);
  CHECK(next.job.id() == other.id());
  CHECK(CompleteSync(h, Token{a.id(), next.job.attempts() + 1, {}}).status().code() ==
        Code::kFailedPrecondition);
}

TEST_CASE("dispatcher: a repeated Complete does not count the job as succeeded twice",
          "[dispatcher]") {
  // A repeated Complete reports the same SUCCEEDED record again; it must not be counted again.
  Harness h;
  Enqueue(h, Job());
  auto lj = LeaseOne(h);
  REQUIRE(CompleteSync(h, TokenOf(lj)).ok());
  CHECK(StatsOf(h, "q").succeeded == 1);
  REQUIRE(CompleteSync(h, TokenOf(lj)).ok());
  REQUIRE(CompleteSync(h, TokenOf(lj)).ok());
  CHECK(StatsOf(h, "q").succeeded == 1);
}

// 7 -------------------------------------------------------------------------------------------

TEST_CASE("dispatcher: retry backoff follows the policy, jitter and cap", "[dispatcher]") {
  DispatcherOptions opts;
  RetryPolicy capped;
  capped.backoff_base = 1s;
  capped.backoff_factor = 2.0;
  capped.backoff_cap = 3s;
  opts.policy_of = [capped](const std::string& queue, const std::string&) {
    JobPolicy p;
    if (queue == "capped") p.retry = capped;
    return p;
  };
  Harness h(opts);

  SECTION("default policy, jitter 0.5") {
    auto job = Enqueue(h, Job("q", 0, 10));
    // Attempt 1: ceiling 1s, half of it.
    auto lj = LeaseOne(h);
    auto r = FailSync(h, TokenOf(lj), Failure(kTransient, "E1"));
    REQUIRE(r.ok());
    CHECK(r->state() == sv1::STATE_SCHEDULED);
    CHECK(r->run_at_us() == h.clock.WallMicros() + 500'000);
    auto events = EventsOf(h, job.id());
    REQUIRE(events.size() >= 2);
    CHECK(events[events.size() - 2].type() == sv1::EVENT_FAILED);
    CHECK(events.back().type() == sv1::EVENT_RETRY_SCHEDULED);
    CHECK(events.back().run_at_us() == r->run_at_us());
    h.Advance(500ms);

    // Attempt 2: the worker's retry_after replaces the draw.
    lj = LeaseOne(h);
    REQUIRE(lj.job.attempts() == 2);
    r = FailSync(h, TokenOf(lj), Failure(kTransient, "E2"), 7s);
    REQUIRE(r.ok());
    CHECK(r->run_at_us() == h.clock.WallMicros() + 7'000'000);
    h.Advance(6s);
    RequireNothingToLease(h);
    h.Advance(1s);

    // Attempt 3: ceiling 4s, half of it.
    lj = LeaseOne(h);
    REQUIRE(lj.job.attempts() == 3);
    r = FailSync(h, TokenOf(lj), Failure(kTransient, "E3"));
    REQUIRE(r.ok());
    CHECK(r->run_at_us() == h.clock.WallMicros() + 2'000'000);
    h.Advance(2s);

    // A retry_after beyond the default cap (1h) is held to it.
    lj = LeaseOne(h);
    REQUIRE(lj.job.attempts() == 4);
    r = FailSync(h, TokenOf(lj), Failure(kTransient, "E4"), 5h);
    REQUIRE(r.ok());
    CHECK(r->run_at_us() == h.clock.WallMicros() + 3'600'000'000LL);
  }
  SECTION("a queue policy's cap holds for draws and for retry_after") {
    h.SetJitter(0.999999);
    auto job = Enqueue(h, Job("capped", 0, 10));
    const std::vector<int64_t> ceilings_us = {1'000'000, 2'000'000, 3'000'000,
                                              3'000'000, 3'000'000, 3'000'000};
    for (size_t i = 0; i < ceilings_us.size(); ++i) {
      auto lj = LeaseOne(h, "capped");
      REQUIRE(lj.job.id() == job.id());
      REQUIRE(lj.job.attempts() == i + 1);
      auto r = FailSync(h, TokenOf(lj), Failure(kTransient, "E"));
      REQUIRE(r.ok());
      REQUIRE(r->state() == sv1::STATE_SCHEDULED);
      const int64_t delay = r->run_at_us() - h.clock.WallMicros();
      INFO("attempt " << i + 1 << " delay " << delay << "us");
      CHECK(delay <= 3'000'000);
      CHECK(delay == static_cast<int64_t>(static_cast<double>(ceilings_us[i]) * 0.999999));
      h.Advance(microseconds(delay));
    }
    auto lj = LeaseOne(h, "capped");
    auto r = FailSync(h, TokenOf(lj), Failure(kTransient, "E"), 100s);
    REQUIRE(r.ok());
    CHECK(r->run_at_us() == h.clock.WallMicros() + 3'000'000);
  }
}

// 8 -------------------------------------------------------------------------------------------

TEST_CASE(
    "dispatcher: dead letters: permanent errors, exhausted attempts, expiry of the last attempt",
    "[dispatcher]") {
  Harness h;
  SECTION("a permanent failure goes straight to DEAD") {
    auto job = Enqueue(h, Job("q", 0, 5));
    auto lj = LeaseOne(h);
    auto r = FailSync(h, TokenOf(lj), Failure(kPermanent, "BAD_INPUT"));
    REQUIRE(r.ok());
    CHECK(r->state() == sv1::STATE_DEAD);
    CHECK(r->dead_reason() == "permanent_error");
    REQUIRE(r->errors_size() == 1);
    CHECK(r->errors(0).code() == "BAD_INPUT");
    CHECK(r->errors(0).kind() == kPermanent);
    CHECK(r->errors(0).attempt() == 1);
    CHECK(r->errors(0).message() == "it went wrong: BAD_INPUT");
    CHECK(r->errors(0).details() == "details of BAD_INPUT");
    CHECK(r->errors(0).worker_id() == "worker-1");
    auto events = EventsOf(h, job.id());
    REQUIRE(events.size() >= 2);
    CHECK(events.back().type() == sv1::EVENT_DEAD_LETTERED);
    CHECK(events.back().reason() == "permanent_error");
    CHECK(StatsOf(h, "q").dead == 1);
    RequireNothingToLease(h);
  }
  SECTION("three transient failures of a three-attempt job") {
    auto job = Enqueue(h, Job("q", 0, 3));
    FailAndWait(h, "q", job.id(), "E1");
    FailAndWait(h, "q", job.id(), "E2");
    FailAndWait(h, "q", job.id(), "E3");
    auto dead = GetJob(h, job.id());
    CHECK(dead.state() == sv1::STATE_DEAD);
    CHECK(dead.dead_reason() == "attempts_exhausted");
    CHECK(dead.attempts() == 3);
    REQUIRE(dead.errors_size() == 3);
    for (int i = 0; i < 3; ++i) {
      CHECK(dead.errors(i).attempt() == static_cast<uint32_t>(i + 1));
      CHECK(dead.errors(i).code() == "E" + std::to_string(i + 1));
      CHECK(dead.errors(i).kind() == kTransient);
    }
    CHECK(CountEvents(h, job.id(), sv1::EVENT_FAILED) == 3);
    CHECK(CountEvents(h, job.id(), sv1::EVENT_RETRY_SCHEDULED) == 2);
    CHECK(CountEvents(h, job.id(), sv1::EVENT_DEAD_LETTERED) == 1);
    CHECK(StatsOf(h, "q").dead == 1);
    RequireNothingToLease(h);
  }
  SECTION("the lease of the last attempt expires") {
    auto job = Enqueue(h, Job("q", 0, 2));
    FailAndWait(h, "q", job.id(), "E1");
    auto lj = LeaseOne(h, "q", 10s);
    REQUIRE(lj.job.attempts() == 2);
    h.Advance(11s);
    auto dead = WaitForState(h, job.id(), sv1::STATE_DEAD);
    CHECK(dead.dead_reason() == "lease_expired");
    REQUIRE(dead.errors_size() == 2);
    CHECK(dead.errors(0).code() == "E1");
    CHECK(dead.errors(1).code() == "LEASE_EXPIRED");
    CHECK(dead.errors(1).attempt() == 2);
    auto types = EventTypesOf(h, job.id());
    REQUIRE(types.size() >= 2);
    CHECK(types[types.size() - 2] == sv1::EVENT_LEASE_EXPIRED);
    CHECK(types.back() == sv1::EVENT_DEAD_LETTERED);
    CHECK(StatsOf(h, "q").dead == 1);
    CHECK(CompleteSync(h, TokenOf(lj)).status().code() == Code::kFailedPrecondition);
  }
}

// 9 -------------------------------------------------------------------------------------------

TEST_CASE("dispatcher: redrive revives a dead job with a fresh budget and growing attempt numbers",
          "[dispatcher]") {
  Harness h;
  auto job = Enqueue(h, Job("q", 0, 2));
  auto lj = LeaseOne(h);
  REQUIRE(FailSync(h, TokenOf(lj), Failure(kPermanent, "BAD")).ok());
  REQUIRE(GetJob(h, job.id()).state() == sv1::STATE_DEAD);

  auto out = RedriveSync(h, {job.id()});
  REQUIRE(out.size() == 1);
  REQUIRE(out[0].ok());
  CHECK(out[0]->id() == job.id());
  CHECK(out[0]->state() == sv1::STATE_READY);
  CHECK(out[0]->attempts() == 1);  // not reset
  CHECK(out[0]->dead_reason().empty());
  CHECK(EventTypesOf(h, job.id()).back() == sv1::EVENT_REDRIVEN);
  CHECK(StatsOf(h, "q").dead == 0);

  // max_attempts (2) more attempts before it is dead again; attempt numbers keep growing.
  FailAndWait(h, "q", job.id(), "E2");
  CHECK(GetJob(h, job.id()).state() == sv1::STATE_SCHEDULED);
  CHECK(GetJob(h, job.id()).attempts() == 2);
  FailAndWait(h, "q", job.id(), "E3");
  auto dead = GetJob(h, job.id());
  CHECK(dead.state() == sv1::STATE_DEAD);
  CHECK(dead.dead_reason() == "attempts_exhausted");
  CHECK(dead.attempts() == 3);
  CHECK(dead.errors_size() == 3);

  // Only DEAD jobs can be redriven.
  auto ready = Enqueue(h, Job());
  const uint64_t seq = h.store().Head().seq;
  auto refused = RedriveSync(h, {ready.id()});
  REQUIRE(refused.size() == 1);
  CHECK(refused[0].status().code() == Code::kFailedPrecondition);
  CHECK_THAT(refused[0].status().message(), Catch::Contains("READY"));
  CHECK(h.store().Head().seq == seq);
  CHECK(GetJob(h, ready.id()).state() == sv1::STATE_READY);
}

TEST_CASE("dispatcher: RedriveQueue redrives every dead job of a queue in chunks", "[dispatcher]") {
  DispatcherOptions opts;
  opts.redrive_chunk = 500;
  opts.redrive_per_second = 1e6;
  Harness h(opts);
  constexpr size_t kJobs = 1200;
  std::vector<NewJob> items;
  for (size_t i = 0; i < kJobs; ++i) items.push_back(Job("dlq", 0, 1));
  auto jobs = EnqueueMany(h, std::move(items));
  Enqueue(h, Job("other", 0, 1));  // another queue's dead job stays dead

  size_t leased = 0;
  while (leased < kJobs) {
    auto batch = LeaseJobs(h, Params("dlq", 256, 10s));
    REQUIRE_FALSE(batch.empty());
    leased += batch.size();
  }
  auto other = LeaseOne(h, "other", 10s);
  h.Advance(11s);  // every lease expires on its only attempt
  REQUIRE(Eventually([&] { return StatsOf(h, "dlq").dead == kJobs; }));
  REQUIRE(Eventually([&] { return StatsOf(h, "other").dead == 1; }));
  CHECK(GetJob(h, jobs[0].id()).dead_reason() == "lease_expired");

  Slot<Result<uint64_t>> selected;
  h.d().RedriveQueue("dlq", 0, "operator", selected.Callback());
  auto n = selected.Get();
  REQUIRE(n.ok());
  CHECK(n.value() == kJobs);

  REQUIRE(Eventually([&] {
    auto s = StatsOf(h, "dlq");
    return s.dead == 0 && s.ready == kJobs;
  }));
  h.Settle();
  for (const auto& job : jobs) {
    auto stored = GetJob(h, job.id());
    CHECK(stored.state() == sv1::STATE_READY);
    CHECK(stored.attempts() == 1);
  }
  CHECK(StatsOf(h, "other").dead == 1);
  CHECK(GetJob(h, other.job.id()).state() == sv1::STATE_DEAD);
  // And they are leasable again.
  auto again = LeaseJobs(h, Params("dlq", 256));
  CHECK(again.size() == 256);
  CHECK(again[0].job.attempts() == 2);
}

// 10 ------------------------------------------------------------------------------------------

TEST_CASE("dispatcher: a paused queue leases nothing until resumed, across a restart",
          "[dispatcher]") {
  Harness h;
  auto paused = SetPausedSync(h, "q", true);
  REQUIRE(paused.ok());
  CHECK(paused->paused);
  auto job = Enqueue(h, Job());
  RequireNothingToLease(h);
  auto stats = StatsOf(h, "q");
  CHECK(stats.paused);
  CHECK(stats.ready == 1);

  // A long-poll parked on the paused queue is not woken by an enqueue, only by resume.
  Slot<LeaseResult> parked;
  h.d().Lease(Params("q", 1, 30s, 30s), parked.Callback());
  Enqueue(h, Job());
  h.Settle();
  CHECK_FALSE(parked.Ready());

  auto resumed = SetPausedSync(h, "q", false);
  REQUIRE(resumed.ok());
  CHECK_FALSE(resumed->paused);
  auto got = parked.Get();
  REQUIRE(got.ok());
  REQUIRE(got->size() == 1);
  CHECK(got->at(0).job.id() == job.id());
  CHECK_FALSE(StatsOf(h, "q").paused);

  // Paused again, the pause survives a restart.
  REQUIRE(SetPausedSync(h, "q", true).ok());
  h.Restart();
  CHECK(StatsOf(h, "q").paused);
  RequireNothingToLease(h);
  REQUIRE(SetPausedSync(h, "q", false).ok());
  CHECK(LeaseOne(h).job.id() == job.id() + 1);
}

// 11 ------------------------------------------------------------------------------------------

TEST_CASE("dispatcher: long-poll leases: woken by an enqueue, time out, can be cancelled",
          "[dispatcher]") {
  Harness h;
  SECTION("woken by an enqueue") {
    Slot<LeaseResult> slot;
    h.d().Lease(Params("q", 1, 30s, 30s), slot.Callback());
    h.Barrier();
    CHECK_FALSE(slot.Ready());
    CHECK(h.d().Stats().parked_polls == 1);

    auto job = Enqueue(h, Job());
    auto r = slot.Get();
    REQUIRE(r.ok());
    REQUIRE(r->size() == 1);
    CHECK(r->at(0).job.id() == job.id());
    CHECK(r->at(0).job.attempts() == 1);
    h.Settle();
    CHECK(h.d().Stats().parked_polls == 0);
    CHECK(slot.Calls() == 1);
    CHECK(GetJob(h, job.id()).state() == sv1::STATE_LEASED);
  }
  SECTION("times out empty") {
    Slot<LeaseResult> slot;
    h.d().Lease(Params("q", 1, 30s, 5s), slot.Callback());
    h.Barrier();
    CHECK(h.d().Stats().parked_polls == 1);
    h.Advance(4s);
    CHECK_FALSE(slot.Ready());
    h.Advance(2s);
    auto r = slot.Get();
    REQUIRE(r.ok());
    CHECK(r->empty());
    CHECK(h.d().Stats().parked_polls == 0);
    // A job enqueued after the timeout stays READY.
    auto job = Enqueue(h, Job());
    h.Settle();
    CHECK(GetJob(h, job.id()).state() == sv1::STATE_READY);
    CHECK(slot.Calls() == 1);
  }
  SECTION("cancelled while parked") {
    Slot<LeaseResult> slot;
    const uint64_t id = h.d().Lease(Params("q", 1, 30s, 30s), slot.Callback());
    h.Barrier();
    CHECK(h.d().Stats().parked_polls == 1);
    h.d().CancelLease(id);
    auto r = slot.Get();
    CHECK_FALSE(r.ok());
    CHECK(h.d().Stats().parked_polls == 0);

    auto job = Enqueue(h, Job());
    h.Settle();
    CHECK(GetJob(h, job.id()).state() == sv1::STATE_READY);
    CHECK(slot.Calls() == 1);
    CHECK(StatsOf(h, "q").ready == 1);
    CHECK(LeaseOne(h).job.id() == job.id());
  }
}

TEST_CASE("dispatcher: a retry that is due at once wakes a parked long-poll", "[dispatcher]") {
  // A retry whose run_at has already come when it is indexed (retry_after 0 here; with a real
  // clock, any backoff shorter than the commit latency) is SCHEDULED in storage but goes straight
  // into the ready set, never into the delayed heap: indexing it must wake parked polls.
  Harness h;
  auto job = Enqueue(h, Job());
  auto lj = LeaseOne(h);
  Slot<LeaseResult> parked;
  h.d().Lease(Params("q", 1, 30s, 30s), parked.Callback());
  h.Barrier();
  REQUIRE(h.d().Stats().parked_polls == 1);

  auto r = FailSync(h, TokenOf(lj), Failure(kTransient, "E1"), 0s);
  REQUIRE(r.ok());
  REQUIRE(r->state() == sv1::STATE_SCHEDULED);
  REQUIRE(r->run_at_us() == h.clock.WallMicros());  // due now
  h.Settle();
  REQUIRE(parked.WaitFor(1000ms));
  auto got = parked.Get();
  REQUIRE(got.ok());
  REQUIRE(got->size() == 1);
  CHECK(got->at(0).job.id() == job.id());
  CHECK(got->at(0).job.attempts() == 2);
}

TEST_CASE("dispatcher: a lease call cancelled while its lease is being written gives the job back",
          "[dispatcher]") {
  Harness h;
  auto job = Enqueue(h, Job());
  h.gate.Close();  // the committer now waits before writing
  Slot<LeaseResult> slot;
  const uint64_t id = h.d().Lease(Params("q", 1, 30s, 30s), slot.Callback());
  h.Barrier();  // the lease was decided and submitted; it is not written yet
  h.d().CancelLease(id);
  h.Barrier();
  h.gate.Open();

  REQUIRE(Eventually([&] {
    return CountEvents(h, job.id(), sv1::EVENT_RELEASED) == 1 &&
           GetJob(h, job.id()).state() == sv1::STATE_READY;
  }));
  h.Settle();
  auto stored = GetJob(h, job.id());
  CHECK(stored.state() == sv1::STATE_READY);
  CHECK(stored.attempts() == 1);
  CHECK(stored.attempt_budget_base() == 1);  // the attempt is refunded
  CHECK(EventsOf(h, job.id()).back().reason() == "client_gone");
  CHECK(h.d().Stats().active_leases == 0);
  CHECK(h.d().Stats().parked_polls == 0);
  auto again = LeaseOne(h);
  CHECK(again.job.id() == job.id());
  CHECK(again.job.attempts() == 2);
}

TEST_CASE(
    "dispatcher: a lease call cancelled while its lease is being written still gets its one answer",
    "[dispatcher]") {
  // Dispatcher::Lease promises "The callback runs exactly once", also for a call cancelled while
  // its lease transition is in flight (else the server's LeaseReactor is never finished).
  Harness h;
  Enqueue(h, Job());
  h.gate.Close();
  Slot<LeaseResult> slot;
  const uint64_t id = h.d().Lease(Params("q", 1, 30s, 30s), slot.Callback());
  h.Barrier();
  h.d().CancelLease(id);
  h.Barrier();
  h.gate.Open();
  h.Settle();
  REQUIRE(slot.WaitFor(1000ms));
  CHECK_FALSE(slot.Get().ok());
  CHECK(slot.Calls() == 1);
}

// 12 ------------------------------------------------------------------------------------------

TEST_CASE("dispatcher: recovery keeps live leases valid and ready or scheduled jobs leasable",
          "[dispatcher]") {
  Harness h;
  auto a = Enqueue(h, Job());
  auto d = Enqueue(h, Job());
  auto c = Enqueue(h, Job());
  NewJob later = Job();
  later.run_at_us = h.clock.WallMicros() + 25'000'000;
  auto b = Enqueue(h, later);

  auto la = LeaseOne(h, "q", 30s);
  REQUIRE(la.job.id() == a.id());
  auto ld = LeaseOne(h, "q", 10s);
  REQUIRE(ld.job.id() == d.id());

  h.Restart();

  CHECK(GetJob(h, a.id()).state() == sv1::STATE_LEASED);
  auto stats = StatsOf(h, "q");
  CHECK(stats.leased == 2);
  CHECK(stats.ready == 1);
  CHECK(stats.scheduled == 1);
  CHECK(h.d().Stats().active_leases == 2);

  // 20s after the restart: the 10s lease has expired (and is retried), the 30s one has not.
  h.Advance(20s);
  auto retried = WaitForState(h, d.id(), sv1::STATE_SCHEDULED);
  CHECK(retried.errors_size() == 1);
  CHECK(GetJob(h, a.id()).state() == sv1::STATE_LEASED);
  auto hb = HeartbeatSync(h, {TokenOf(la)}, 0s);
  REQUIRE(hb.ok());
  REQUIRE(hb->size() == 1);
  CHECK_FALSE((*hb)[0].lost);
  auto done = CompleteSync(h, TokenOf(la));
  REQUIRE(done.ok());
  CHECK(done->state() == sv1::STATE_SUCCEEDED);

  // The READY job; the retried one after its backoff; the SCHEDULED one once its time comes.
  CHECK(LeaseOne(h).job.id() == c.id());
  RequireNothingToLease(h);
  h.Advance(1s);
  auto retry = LeaseOne(h);
  CHECK(retry.job.id() == d.id());
  CHECK(retry.job.attempts() == 2);
  RequireNothingToLease(h);
  h.Advance(4s);  // 25s after b was submitted
  CHECK(LeaseOne(h).job.id() == b.id());
}

// 13 ------------------------------------------------------------------------------------------

TEST_CASE("dispatcher: release gives a job back, and dead-letters it when attempts are used up",
          "[dispatcher]") {
  Harness h;
  auto job = Enqueue(h, Job("q", 0, 3));

  auto first = LeaseOne(h);
  auto r = ReleaseSync(h, TokenOf(first), 0s);
  REQUIRE(r.ok());
  CHECK(r->state() == sv1::STATE_READY);
  CHECK(r->attempts() == 1);
  CHECK(r->lease_worker_id().empty());
  CHECK(EventTypesOf(h, job.id()).back() == sv1::EVENT_RELEASED);
  CHECK(ReleaseSync(h, TokenOf(first), 0s).status().code() == Code::kFailedPrecondition);

  auto second = LeaseOne(h);
  CHECK(second.job.id() == job.id());
  CHECK(second.job.attempts() == 2);
  r = ReleaseSync(h, TokenOf(second), 5s);
  REQUIRE(r.ok());
  CHECK(r->state() == sv1::STATE_SCHEDULED);
  CHECK(r->run_at_us() == h.clock.WallMicros() + 5'000'000);
  RequireNothingToLease(h);
  h.Advance(5s);

  auto third = LeaseOne(h);
  CHECK(third.job.attempts() == 3);
  r = ReleaseSync(h, TokenOf(third), 0s);
  REQUIRE(r.ok());
  CHECK(r->state() == sv1::STATE_DEAD);
  CHECK(r->dead_reason() == "attempts_exhausted");
  auto types = EventTypesOf(h, job.id());
  REQUIRE(types.size() >= 2);
  CHECK(types[types.size() - 2] == sv1::EVENT_RELEASED);
  CHECK(types.back() == sv1::EVENT_DEAD_LETTERED);
  CHECK(StatsOf(h, "q").dead == 1);
  RequireNothingToLease(h);
}

TEST_CASE("dispatcher: a lease whose write fails is answered with the error, not retried",
          "[dispatcher]") {
  Harness h;
  auto job = Enqueue(h, Job());
  h.fail_writes = true;
  auto r = LeaseSync(h, Params("q", 1, 30s, 5s));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kResourceExhausted);
  h.fail_writes = false;
  h.Settle();
  CHECK(h.d().Stats().parked_polls == 0);
  // Nothing was written: the job is still READY and leasable, with no attempt used.
  auto lj = LeaseOne(h);
  CHECK(lj.job.id() == job.id());
  CHECK(lj.job.attempts() == 1);
}

TEST_CASE("dispatcher: a heartbeat whose write fails does not extend the lease", "[dispatcher]") {
  Harness h;
  auto job = Enqueue(h, Job());
  auto lj = LeaseOne(h, "q", 10s);
  h.fail_writes = true;
  Slot<Result<std::vector<HeartbeatOutcome>>> hb;
  h.d().Heartbeat({TokenOf(lj)}, 60s, std::nullopt, "worker", hb.Callback());
  auto out = hb.Get();
  REQUIRE_FALSE(out.ok());
  h.fail_writes = false;
  h.Settle();
  // The lease still ends at its original deadline.
  h.Advance(11s);
  auto stored = h.store().GetJob(job.id());
  REQUIRE(stored.ok());
  CHECK(stored->state() != sv1::STATE_LEASED);
  CHECK(stored->errors_size() == 1);
  CHECK(stored->errors(0).code() == "LEASE_EXPIRED");
}

// Flow control ----------------------------------------------------------------------------------

namespace {

NewJob KeyedJob(std::string key, std::string type = "t", std::string queue = "q") {
  NewJob j = Job(std::move(queue));
  j.type = std::move(type);
  j.concurrency_key = std::move(key);
  return j;
}

DispatcherOptions WithLimits(QueueLimits l, std::string queue = "q") {
  DispatcherOptions o;
  o.limits_of = [l, queue](const std::string& q) { return q == queue ? l : QueueLimits{}; };
  return o;
}

std::vector<uint64_t> IdsOf(const std::vector<LeasedJob>& jobs) {
  std::vector<uint64_t> ids;
  for (const auto& j : jobs) ids.push_back(j.job.id());
  return ids;
}

std::vector<EventBody> QueueEvents(Harness& h, sv1::EventType type) {
  h.Settle();  // circuit events are written after the strand decides them
  std::vector<EventBody> out;
  REQUIRE(h.store()
              .ScanEvents(1,
                          [&](const EventBody& e) {
                            if (e.type() == type) out.push_back(e);
                            return true;
                          })
              .ok());
  return out;
}

Result<QueueStats> SetLimitsSync(Harness& h, std::string queue, LimitsUpdate u) {
  Slot<Result<QueueStats>> slot;
  h.d().SetLimits(std::move(queue), u, "alice", slot.Callback());
  auto r = slot.Get();
  h.Settle();
  return r;
}

Result<QueueStats> SetCircuitSync(Harness& h, std::string queue, std::string type,
                                  CircuitBreaker::Forced mode) {
  Slot<Result<QueueStats>> slot;
  h.d().SetCircuit(std::move(queue), std::move(type), mode, "bob", slot.Callback());
  auto r = slot.Get();
  h.Settle();
  return r;
}

}  // namespace

TEST_CASE("flow: the rate limit is a token bucket across workers, in priority order",
          "[dispatcher][flow]") {
  Harness h(WithLimits(QueueLimits{2.0, 3, 0, 0}));
  std::vector<NewJob> items;
  for (int i = 0; i < 10; ++i) items.push_back(Job("q", i == 7 ? 5 : 0));
  auto jobs = EnqueueMany(h, items);
  // The burst: 3 at once, the high-priority job first, then FIFO.
  auto first = LeaseJobs(h, Params("q", 10));
  REQUIRE(IdsOf(first) == std::vector<uint64_t>{jobs[7].id(), jobs[0].id(), jobs[1].id()});
  // A second worker gets nothing until a token is back (1 per 500 ms).
  auto p2 = Params("q", 10);
  p2.worker_id = "worker-2";
  CHECK(LeaseJobs(h, p2).empty());
  h.Advance(400ms);
  CHECK(LeaseJobs(h, p2).empty());
  h.Advance(100ms);
  auto one = LeaseJobs(h, p2);
  REQUIRE(IdsOf(one) == std::vector<uint64_t>{jobs[2].id()});
  h.Advance(1000ms);
  auto two = LeaseJobs(h, Params("q", 10));
  REQUIRE(IdsOf(two) == std::vector<uint64_t>{jobs[3].id(), jobs[4].id()});
  // Held-back work is visible, and nothing was lost or reordered.
  auto s = StatsOf(h, "q");
  CHECK(s.ready == 4);
  CHECK(s.leased == 6);
  CHECK(s.limits.rate_per_second == 2.0);
}

TEST_CASE("flow: a parked long-poll is woken when the rate limit gives a token",
          "[dispatcher][flow]") {
  Harness h(WithLimits(QueueLimits{1.0, 1, 0, 0}));
  auto jobs = EnqueueMany(h, {Job(), Job()});
  REQUIRE(LeaseJobs(h, Params("q", 5)).size() == 1);
  Slot<LeaseResult> parked;
  h.d().Lease(Params("q", 5, 30s, 10s), parked.Callback());
  h.Barrier();
  CHECK_FALSE(parked.Ready());
  CHECK(h.d().Stats().parked_polls == 1);
  h.Advance(1000ms);
  auto r = parked.Get();
  h.Barrier();  // the strand records the lease before time moves on
  REQUIRE(r.ok());
  REQUIRE(IdsOf(*r) == std::vector<uint64_t>{jobs[1].id()});
}

TEST_CASE("flow: the concurrency limit caps leased jobs, and a finished one wakes a long-poll",
          "[dispatcher][flow]") {
  Harness h(WithLimits(QueueLimits{0, 0, 2, 0}));
  std::vector<NewJob> items(5, Job());
  auto jobs = EnqueueMany(h, items);
  auto got = LeaseJobs(h, Params("q", 5));
  REQUIRE(got.size() == 2);
  CHECK(LeaseJobs(h, Params("q", 5)).empty());
  CHECK(StatsOf(h, "q").held_back == 3);
  Slot<LeaseResult> parked;
  h.d().Lease(Params("q", 5, 30s, 10s), parked.Callback());
  h.Barrier();
  CHECK_FALSE(parked.Ready());
  REQUIRE(CompleteSync(h, TokenOf(got[0])).ok());
  auto r = parked.Get();
  h.Barrier();  // the strand records the lease before time moves on
  REQUIRE(r.ok());
  REQUIRE(IdsOf(*r) == std::vector<uint64_t>{jobs[2].id()});
  // An expired lease frees its slot too.
  h.Advance(31s);
  auto after = LeaseJobs(h, Params("q", 5));
  CHECK(after.size() == 2);
}

TEST_CASE("flow: per-key concurrency lets other keys pass, and keeps each key's order",
          "[dispatcher][flow]") {
  Harness h(WithLimits(QueueLimits{0, 0, 0, 1}));
  auto jobs = EnqueueMany(h, {KeyedJob("acme"), KeyedJob("acme"), KeyedJob("globex"),
                              KeyedJob("acme"), KeyedJob(""), KeyedJob("globex")});
  // One per key at a time; jobs without a key are not limited by it.
  auto first = LeaseJobs(h, Params("q", 10));
  REQUIRE(IdsOf(first) == std::vector<uint64_t>{jobs[0].id(), jobs[2].id(), jobs[4].id()});
  CHECK(LeaseJobs(h, Params("q", 10)).empty());
  CHECK(StatsOf(h, "q").held_back == 3);
  // acme's next is its second job (not its third), once its first is done.
  REQUIRE(CompleteSync(h, TokenOf(first[0])).ok());
  auto next = LeaseJobs(h, Params("q", 10));
  REQUIRE(IdsOf(next) == std::vector<uint64_t>{jobs[1].id()});
  // A failure that retries at once counts for its key as soon as it is leased again.
  REQUIRE(FailSync(h, TokenOf(first[1]), Failure(kTransient, "X"), 0us).ok());
  h.Advance(2s);
  auto again = LeaseJobs(h, Params("q", 10));
  REQUIRE(again.size() == 1);
  CHECK(again[0].job.concurrency_key() == "globex");
  CHECK(again[0].job.id() == jobs[2].id());
}

TEST_CASE("flow: limits set at runtime are recorded with the principal and survive a restart",
          "[dispatcher][flow]") {
  Harness h(WithLimits(QueueLimits{0, 0, 5, 0}));
  std::vector<NewJob> items(6, Job());
  EnqueueMany(h, items);
  LimitsUpdate u;
  u.max_concurrency = 1;
  u.max_per_key = 3;
  auto r = SetLimitsSync(h, "q", u);
  REQUIRE(r.ok());
  CHECK(r->limits.max_concurrency == 1);
  CHECK(r->limits.max_per_key == 3);
  CHECK(r->runtime_limits);
  auto evs = QueueEvents(h, sv1::EVENT_QUEUE_LIMITS_CHANGED);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].principal() == "alice");
  CHECK(evs[0].queue() == "q");
  CHECK(evs[0].limits().max_concurrency() == 1);
  CHECK(LeaseJobs(h, Params("q", 5)).size() == 1);
  // Bad input changes nothing.
  LimitsUpdate bad;
  bad.rate_per_second = -3;
  auto refused = SetLimitsSync(h, "q", bad);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().message().find("rate_per_second") != std::string::npos);
  CHECK(QueueEvents(h, sv1::EVENT_QUEUE_LIMITS_CHANGED).size() == 1);
  h.Restart();
  CHECK(StatsOf(h, "q").limits.max_concurrency == 1);
  CHECK(LeaseJobs(h, Params("q", 5)).empty());  // the lease from before the restart still counts
  // Raising the limit lets a parked long-poll lease at once.
  Slot<LeaseResult> parked;
  h.d().Lease(Params("q", 5, 30s, 10s), parked.Callback());
  h.Barrier();
  LimitsUpdate up;
  up.max_concurrency = 3;
  REQUIRE(SetLimitsSync(h, "q", up).ok());
  auto woke = parked.Get();
  h.Barrier();  // the strand records the lease before time moves on
  REQUIRE(woke.ok());
  CHECK(woke->size() == 2);
}

TEST_CASE("flow: a queue resuming from pause releases its backlog at its rate limit",
          "[dispatcher][flow]") {
  Harness h(WithLimits(QueueLimits{5.0, 5, 0, 0}));
  REQUIRE(SetPausedSync(h, "q", true).ok());
  std::vector<NewJob> items(40, Job());
  EnqueueMany(h, items);
  h.Advance(60s);  // a long pause does not bank more than the burst
  REQUIRE(SetPausedSync(h, "q", false).ok());
  h.Settle();
  CHECK(LeaseJobs(h, Params("q", 40)).size() == 5);
  CHECK(LeaseJobs(h, Params("q", 40)).empty());
  h.Advance(1s);
  CHECK(LeaseJobs(h, Params("q", 40)).size() == 5);
}

namespace {

DispatcherOptions WithBreaker() {
  DispatcherOptions o;
  o.policy_of = [](const std::string&, const std::string& type) {
    JobPolicy p;
    p.retry.max_attempts = 50;
    p.retry.backoff_base = 1ms;
    p.retry.backoff_cap = 1ms;
    if (type == "t") {
      p.circuit.enabled = true;
      p.circuit.threshold = 0.5;
      p.circuit.window = 60s;
      p.circuit.min_attempts = 4;
      p.circuit.cooldown = 10s;
      p.circuit.max_cooldown = 60s;
      p.circuit.trials = 2;
    }
    return p;
  };
  return o;
}

NewJob TypedJob(std::string type) {
  NewJob j = Job("q", 0, 50);
  j.type = std::move(type);
  return j;
}

}  // namespace

TEST_CASE(
    "flow: the circuit opens on transient failures, and its type waits without using attempts",
    "[dispatcher][flow]") {
  Harness h(WithBreaker());
  std::vector<NewJob> items(6, TypedJob("t"));
  items.push_back(TypedJob("other"));
  auto jobs = EnqueueMany(h, items);
  // A permanent failure is the job's fault and does not count.
  auto p = LeaseOne(h);
  REQUIRE(FailSync(h, TokenOf(p), Failure(kPermanent, "BAD_INPUT")).ok());
  CHECK(QueueEvents(h, sv1::EVENT_CIRCUIT_OPENED).empty());
  // Four transient failures in a row: 4 of 4 >= 50 %.
  for (int i = 0; i < 4; ++i) {
    auto lj = LeaseOne(h);
    REQUIRE(lj.job.type() == "t");
    REQUIRE(FailSync(h, TokenOf(lj), Failure(kTransient, "UPSTREAM_503")).ok());
    h.Advance(1ms);
  }
  auto opened = QueueEvents(h, sv1::EVENT_CIRCUIT_OPENED);
  REQUIRE(opened.size() == 1);
  CHECK(opened[0].principal() == "ledgerqd");
  CHECK(opened[0].job_type() == "t");
  CHECK(opened[0].circuit().cause() == "failure_rate");
  CHECK(opened[0].circuit().window_attempts() == 4);
  CHECK(opened[0].circuit().window_failures() == 4);
  CHECK(opened[0].circuit().threshold() == Approx(0.5));
  CHECK(opened[0].circuit().cooldown_us() == 10'000'000);
  // While open only the other type is leased; the t jobs keep their attempts.
  std::map<uint64_t, uint32_t> attempts_before;
  for (const auto& j : jobs) attempts_before[j.id()] = GetJob(h, j.id()).attempts();
  auto leased = LeaseJobs(h, Params("q", 10));
  REQUIRE(leased.size() == 1);
  CHECK(leased[0].job.type() == "other");
  h.Advance(5s);
  CHECK(LeaseJobs(h, Params("q", 10)).empty());
  for (const auto& j : jobs) {
    if (j.type() == "t") CHECK(GetJob(h, j.id()).attempts() == attempts_before[j.id()]);
  }
  auto s = StatsOf(h, "q");
  REQUIRE(s.circuits.size() == 1);
  CHECK(s.circuits[0].state == CircuitState::kOpen);
  CHECK(s.circuits[0].held_back == 5);
  CHECK(s.held_back == 5);
}

TEST_CASE("flow: half-open trials close the circuit, a failed trial reopens it for longer",
          "[dispatcher][flow]") {
  Harness h(WithBreaker());
  std::vector<NewJob> items(12, TypedJob("t"));
  EnqueueMany(h, items);
  for (int i = 0; i < 4; ++i) {
    auto lj = LeaseOne(h);
    REQUIRE(FailSync(h, TokenOf(lj), Failure(kTransient, "TIMEOUT")).ok());
    h.Advance(1ms);
  }
  REQUIRE(QueueEvents(h, sv1::EVENT_CIRCUIT_OPENED).size() == 1);
  // Parked long-polls wait while it is open and are woken when it half-opens.
  Slot<LeaseResult> parked;
  h.d().Lease(Params("q", 10, 30s, 60s), parked.Callback());
  h.Barrier();
  h.Advance(9s);
  CHECK_FALSE(parked.Ready());
  h.Advance(1s);
  auto half = QueueEvents(h, sv1::EVENT_CIRCUIT_HALF_OPEN);
  REQUIRE(half.size() == 1);
  CHECK(half[0].circuit().cause() == "cooldown_elapsed");
  auto trials = parked.Get();
  h.Barrier();  // the strand records the lease before time moves on
  REQUIRE(trials.ok());
  REQUIRE(trials->size() == 2);  // at most `trials` at once
  CHECK(LeaseJobs(h, Params("q", 10)).empty());
  // A failed trial: open again, cooldown doubled.
  REQUIRE(FailSync(h, TokenOf((*trials)[0]), Failure(kTransient, "TIMEOUT")).ok());
  auto reopened = QueueEvents(h, sv1::EVENT_CIRCUIT_OPENED);
  REQUIRE(reopened.size() == 2);
  CHECK(reopened[1].circuit().cause() == "trial_failed");
  CHECK(reopened[1].circuit().cooldown_us() == 20'000'000);
  // The other trial finishing while open changes nothing.
  REQUIRE(CompleteSync(h, TokenOf((*trials)[1])).ok());
  h.Advance(19s);
  CHECK(LeaseJobs(h, Params("q", 10)).empty());
  h.Advance(1s);
  REQUIRE(QueueEvents(h, sv1::EVENT_CIRCUIT_HALF_OPEN).size() == 2);
  // Two successful trials close it, and then everything flows again.
  auto t1 = LeaseJobs(h, Params("q", 10));
  REQUIRE(t1.size() == 2);
  REQUIRE(CompleteSync(h, TokenOf(t1[0])).ok());
  REQUIRE(CompleteSync(h, TokenOf(t1[1])).ok());
  auto closed = QueueEvents(h, sv1::EVENT_CIRCUIT_CLOSED);
  REQUIRE(closed.size() == 1);
  CHECK(closed[0].circuit().cause() == "trials_succeeded");
  CHECK(LeaseJobs(h, Params("q", 10)).size() == 9);
}

TEST_CASE("flow: an expired lease counts as a failure for the circuit", "[dispatcher][flow]") {
  Harness h(WithBreaker());
  std::vector<NewJob> items(4, TypedJob("t"));
  EnqueueMany(h, items);
  REQUIRE(LeaseJobs(h, Params("q", 4, 5s)).size() == 4);
  h.Advance(6s);
  REQUIRE(QueueEvents(h, sv1::EVENT_CIRCUIT_OPENED).size() == 1);
}

TEST_CASE("flow: operators force a circuit open or closed, durably and recorded",
          "[dispatcher][flow]") {
  Harness h(WithBreaker());
  std::vector<NewJob> items(3, TypedJob("u"));  // u has no breaker of its own
  EnqueueMany(h, items);
  auto r = SetCircuitSync(h, "q", "u", CircuitBreaker::Forced::kOpen);
  REQUIRE(r.ok());
  REQUIRE(r->circuits.size() == 1);
  CHECK(r->circuits[0].forced == "open");
  auto evs = QueueEvents(h, sv1::EVENT_CIRCUIT_OPENED);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].principal() == "bob");
  CHECK(evs[0].circuit().cause() == "forced");
  CHECK(evs[0].circuit().forced() == "open");
  CHECK(LeaseJobs(h, Params("q", 10)).empty());
  h.Advance(1h);  // no cooldown ends a forced circuit
  CHECK(LeaseJobs(h, Params("q", 10)).empty());
  h.Restart();
  CHECK(LeaseJobs(h, Params("q", 10)).empty());
  auto stats = StatsOf(h, "q");
  REQUIRE(stats.circuits.size() == 1);
  CHECK(stats.circuits[0].state == CircuitState::kOpen);
  // Given back: u has no breaker, so it leases and the circuit disappears from the stats.
  REQUIRE(SetCircuitSync(h, "q", "u", CircuitBreaker::Forced::kNone).ok());
  CHECK(QueueEvents(h, sv1::EVENT_CIRCUIT_CLOSED).size() == 1);
  CHECK(LeaseJobs(h, Params("q", 10)).size() == 3);
  CHECK(StatsOf(h, "q").circuits.empty());
  h.Restart();
  CHECK(StatsOf(h, "q").circuits.empty());
}

// Issue 14, finding 6 -------------------------------------------------------------------------

TEST_CASE("security: finding 6: a lease token needs its nonce and the principal that leased it",
          "[dispatcher][security]") {
  Harness h;
  auto a = Enqueue(h, Job());
  auto lj = LeaseOne(h);
  REQUIRE(lj.job.id() == a.id());
  const Token good = TokenOf(lj);
  REQUIRE(good.nonce.size() == kLeaseNonceBytes);
  CHECK(lj.job.lease_principal() == "worker");
  // The nonce is in the record only: no event carries it.
  for (const auto& ev : EventsOf(h, a.id())) {
    CHECK(ev.SerializeAsString().find(good.nonce) == std::string::npos);
  }

  // (job, attempt) alone was enough before: a forged token of another worker of the queue.
  Token forged{a.id(), lj.job.attempts(), ""};
  CHECK(CompleteSync(h, forged).status().code() == Code::kFailedPrecondition);
  Token wrong = good;
  wrong.nonce[0] = static_cast<char>(wrong.nonce[0] ^ 1);
  CHECK_THAT(CompleteSync(h, wrong).status().message(), Catch::Contains("wrong nonce"));

  // The right token from another principal.
  Slot<JobResult> other;
  h.d().Complete(good, "stolen", "mallory", other.Callback());
  auto stolen = other.Get();
  h.Barrier();
  CHECK(stolen.status().code() == Code::kFailedPrecondition);
  CHECK_THAT(stolen.status().message(), Catch::Contains("not granted to principal \"mallory\""));
  Slot<Result<std::vector<HeartbeatOutcome>>> hb;
  h.d().Heartbeat({good}, 60s, std::nullopt, "mallory", hb.Callback());
  auto beat = hb.Get();
  h.Barrier();
  REQUIRE(beat.ok());
  CHECK((*beat)[0].lost);
  CHECK(GetJob(h, a.id()).state() == sv1::STATE_LEASED);
  CHECK(CountEvents(h, a.id(), sv1::EVENT_COMPLETED) == 0);

  // The honest worker completes; its repeat gets the first answer, the other principal does not.
  auto done = CompleteSync(h, good, "mine");
  REQUIRE(done.ok());
  CHECK(done->lease_nonce().empty());  // the lease is over
  CHECK(CompleteSync(h, good, "mine").ok());
  Slot<JobResult> replay;
  h.d().Complete(good, "mine", "mallory", replay.Callback());
  CHECK(replay.Get().status().code() == Code::kFailedPrecondition);
  h.Barrier();
  CHECK(h.store().GetResult(a.id()).value() == "mine");
}

TEST_CASE("security: finding 6: a live lease keeps its nonce across a restart",
          "[dispatcher][security]") {
  Harness h;
  Enqueue(h, Job());
  Enqueue(h, Job());
  auto first = LeaseOne(h);
  auto second = LeaseOne(h);
  CHECK(first.job.lease_nonce() != second.job.lease_nonce());
  h.Restart();
  CHECK(CompleteSync(h, TokenOf(first)).ok());
  auto hb = HeartbeatSync(h, {TokenOf(second)}, 30s);
  REQUIRE(hb.ok());
  CHECK_FALSE((*hb)[0].lost);
  CHECK(FailSync(h, TokenOf(second), Failure(kTransient, "X")).ok());
}

// Issue 14, finding 1 -------------------------------------------------------------------------

TEST_CASE(
    "security: finding 1: a failure's payload snapshot stays in the record, its event "
    "holds only the digest",
    "[dispatcher][security]") {
  Harness h;
  auto a = Enqueue(h, Job());
  auto lj = LeaseOne(h);
  AttemptFailure f = Failure(kTransient, "DB");
  f.payload_snapshot = R"({"password":"***","ssn":"987-65-4321","user":"bob"})";
  REQUIRE(FailSync(h, TokenOf(lj), f).ok());
  const JobRecord rec = GetJob(h, a.id());
  REQUIRE(rec.errors_size() == 1);
  CHECK(rec.errors(0).payload_snapshot() == f.payload_snapshot);
  const std::string digest(AsBytes(Sha256(f.payload_snapshot)));
  CHECK(rec.errors(0).payload_snapshot_sha256() == digest);
  size_t failed = 0;
  for (const auto& ev : EventsOf(h, a.id())) {
    CHECK(ev.SerializeAsString().find("987-65-4321") == std::string::npos);
    if (ev.type() != sv1::EVENT_FAILED) continue;
    ++failed;
    CHECK(ev.error().payload_snapshot().empty());
    CHECK(ev.error().payload_snapshot_sha256() == digest);
    CHECK(ev.error().code() == "DB");
  }
  CHECK(failed == 1);
}
