#include <catch2/catch.hpp>
#include <future>
#include <set>
#include <thread>

#include "storage/job_store.h"
#include "storage/testing/log_tamper.h"
#include "tests/support/temp_dir.h"

using namespace ledgerq;
using namespace ledgerq::storage;
using ledgerq::testing::TempDir;
using namespace std::chrono_literals;

namespace {

NewJob Job(std::string queue = "q", std::string key = "", std::string payload = "{}",
           std::string type = "t") {
  NewJob j;
  j.queue = std::move(queue);
  j.type = std::move(type);
  j.payload = std::move(payload);
  j.idempotency_key = std::move(key);
  j.max_attempts = 5;
  return j;
}

std::vector<EnqueueOutcome> EnqueueSync(JobStore& store, std::vector<NewJob> items) {
  std::promise<std::vector<EnqueueOutcome>> p;
  auto f = p.get_future();
  store.Enqueue(std::move(items), "tester",
                [&p](std::vector<EnqueueOutcome> o) { p.set_value(std::move(o)); });
  return f.get();
}

EnqueueOutcome EnqueueOne(JobStore& store, NewJob item) {
  return EnqueueSync(store, {std::move(item)})[0];
}

Result<JobRecord> CancelSync(JobStore& store, uint64_t id) {
  std::promise<Result<JobRecord>> p;
  auto f = p.get_future();
  store.Cancel(id, "op", "no longer needed",
               [&p](Result<JobRecord> r) { p.set_value(std::move(r)); });
  return f.get();
}

std::unique_ptr<JobStore> OpenStore(const std::string& dir, Clock* clock = nullptr,
                                    std::function<Status()> fault = {}) {
  StoreOptions o;
  o.data_dir = dir;
  if (clock) o.clock = clock;
  o.write_fault = std::move(fault);
  auto s = JobStore::Open(o);
  REQUIRE(s.ok());
  return std::move(s).value();
}

std::vector<EventBody> Events(const JobStore& store) {
  std::vector<EventBody> out;
  REQUIRE(store
              .ScanEvents(1,
                          [&](const EventBody& e) {
                            out.push_back(e);
                            return true;
                          })
              .ok());
  return out;
}

}  // namespace

TEST_CASE("job ids and sequences are strictly increasing across reopen", "[storage]") {
  TempDir dir;
  uint64_t last_id = 0;
  uint64_t last_seq = 0;
  for (int round = 0; round < 3; ++round) {
    auto store = OpenStore(dir.path());
    CHECK(store->Head().seq == last_seq);
    for (int i = 0; i < 5; ++i) {
      auto o = EnqueueOne(*store, Job());
      REQUIRE(o.status.ok());
      CHECK(o.job.id() > last_id);
      CHECK(o.job.last_event_seq() > last_seq);
      last_id = o.job.id();
      last_seq = o.job.last_event_seq();
    }
    REQUIRE(store->Close().ok());
  }
  CHECK(last_id == 15);
}

TEST_CASE("every transition appends exactly one event with its principal", "[storage]") {
  TempDir dir;
  auto store = OpenStore(dir.path());
  auto created = EnqueueOne(*store, Job("q", "k1", R"({"a":1})"));
  REQUIRE(created.status.ok());
  CHECK(store->Head().seq == 1);
  auto dedup = EnqueueOne(*store, Job("q", "k1", R"({"a":1})"));
  REQUIRE(dedup.status.ok());
  CHECK(dedup.deduplicated);
  CHECK(store->Head().seq == 2);
  // The record's last event is the DEDUPLICATED one, as its event list says (they disagreed).
  CHECK(dedup.job.last_event_seq() == 2);
  CHECK(store->GetJob(created.job.id())->last_event_seq() == 2);
  REQUIRE(store->GetJob(created.job.id())->event_seqs_size() == 2);
  auto conflict = EnqueueOne(*store, Job("q", "k1", R"({"a":2})"));
  CHECK(conflict.status.code() == Code::kAlreadyExists);
  CHECK(store->Head().seq == 2);  // a rejected submission writes nothing
  auto cancelled = CancelSync(*store, created.job.id());
  REQUIRE(cancelled.ok());
  CHECK(store->Head().seq == 3);

  auto events = Events(*store);
  REQUIRE(events.size() == 3);
  CHECK(events[0].type() == v1::EVENT_SUBMITTED);
  CHECK(events[0].principal() == "tester");
  CHECK(events[0].payload_sha256() == created.job.payload_sha256());
  CHECK(events[0].payload_sha256().size() == 32);
  CHECK(events[1].type() == v1::EVENT_DEDUPLICATED);
  CHECK(events[1].job_id() == created.job.id());
  CHECK(events[2].type() == v1::EVENT_CANCELLED);
  CHECK(events[2].principal() == "op");
  CHECK(events[2].from_state() == v1::STATE_READY);
  CHECK(events[2].to_state() == v1::STATE_CANCELLED);
  for (size_t i = 0; i < events.size(); ++i) CHECK(events[i].seq() == i + 1);
}

TEST_CASE("the event log never holds a payload, only its digest", "[storage]") {
  TempDir dir;
  auto store = OpenStore(dir.path());
  const std::string secret = R"({"password":"hunter2-very-secret"})";
  REQUIRE(EnqueueOne(*store, Job("q", "", secret)).status.ok());
  for (const auto& e : Events(*store)) {
    CHECK(e.SerializeAsString().find("hunter2") == std::string::npos);
  }
  CHECK(store->GetPayload(1).value() == secret);
}

TEST_CASE("a batch is written atomically, with a result per item", "[storage]") {
  TempDir dir;
  auto store = OpenStore(dir.path());
  std::vector<NewJob> items;
  for (int i = 0; i < 50; ++i) items.push_back(Job("q", "k" + std::to_string(i)));
  items.push_back(Job("q", "k0"));                // same key and payload: deduplicated
  items.push_back(Job("q", "k1", R"({"x":1})"));  // same key, new payload: conflict
  auto out = EnqueueSync(*store, std::move(items));
  REQUIRE(out.size() == 52);
  for (int i = 0; i < 50; ++i) {
    REQUIRE(out[i].status.ok());
    CHECK(out[i].job.id() == static_cast<uint64_t>(i + 1));
  }
  CHECK(out[50].deduplicated);
  CHECK(out[50].job.id() == 1);
  CHECK(out[51].status.code() == Code::kAlreadyExists);
  CHECK_THAT(out[51].status.message(), Catch::Contains("job 2"));
}

TEST_CASE("a failed write leaves nothing behind and reuses nothing", "[storage]") {
  TempDir dir;
  std::atomic<bool> fail{false};
  auto store = OpenStore(dir.path(), nullptr, [&]() -> Status {
    return fail ? Status::ResourceExhausted("disk full (injected)") : Status::Ok();
  });
  REQUIRE(EnqueueOne(*store, Job("q", "a")).status.ok());
  fail = true;
  auto out = EnqueueSync(*store, {Job("q", "b"), Job("q", "c"), Job("q", "d")});
  for (auto& o : out) CHECK(o.status.code() == Code::kResourceExhausted);
  CHECK(store->Head().seq == 1);
  CHECK(store->GetJob(2).status().code() == Code::kNotFound);
  CHECK(store->GetJobByIdempotencyKey("q", "b").status().code() == Code::kNotFound);
  fail = false;
  auto next = EnqueueOne(*store, Job("q", "b"));
  REQUIRE(next.status.ok());
  CHECK(next.job.id() == 2);  // nothing with id 2 was ever acknowledged
  REQUIRE(store->Close().ok());
  auto report = VerifyChain(dir.path());
  REQUIRE(report.ok());
  CHECK(report->ok);
  CHECK(report->events == 2);
}

TEST_CASE("idempotency keys dedup within the window, survive reopen, expire after", "[storage]") {
  TempDir dir;
  FakeClock clock;
  uint64_t id = 0;
  {
    auto store = OpenStore(dir.path(), &clock);
    auto a = EnqueueOne(*store, Job("q", "order-1", R"({"n":1})"));
    REQUIRE(a.status.ok());
    id = a.job.id();
    auto other_queue = EnqueueOne(*store, Job("q2", "order-1", R"({"n":1})"));
    REQUIRE(other_queue.status.ok());
    CHECK_FALSE(other_queue.deduplicated);  // keys are scoped to their queue
    auto other_type = EnqueueOne(*store, Job("q", "order-1", R"({"n":1})", "other"));
    CHECK(other_type.status.code() == Code::kAlreadyExists);
  }
  clock.Advance(23h);
  {
    auto store = OpenStore(dir.path(), &clock);
    auto again = EnqueueOne(*store, Job("q", "order-1", R"({"n":1})"));
    REQUIRE(again.status.ok());
    CHECK(again.deduplicated);
    CHECK(again.job.id() == id);
    CHECK(store->GetJobByIdempotencyKey("q", "order-1").value().id() == id);
    clock.Advance(1h);  // the window (24h) has passed
    CHECK(store->GetJobByIdempotencyKey("q", "order-1").status().code() == Code::kNotFound);
    auto fresh = EnqueueOne(*store, Job("q", "order-1", R"({"n":2})"));
    REQUIRE(fresh.status.ok());
    CHECK_FALSE(fresh.deduplicated);
    CHECK(fresh.job.id() > id);
  }
}

TEST_CASE("delayed jobs are SCHEDULED, others READY, and only those can be cancelled",
          "[storage]") {
  TempDir dir;
  FakeClock clock;
  auto store = OpenStore(dir.path(), &clock);
  NewJob later = Job();
  later.run_at_us = clock.WallMicros() + 60'000'000;
  auto a = EnqueueOne(*store, later);
  auto b = EnqueueOne(*store, Job());
  CHECK(a.job.state() == v1::STATE_SCHEDULED);
  CHECK(b.job.state() == v1::STATE_READY);
  REQUIRE(CancelSync(*store, a.job.id()).ok());
  auto again = CancelSync(*store, a.job.id());
  CHECK(again.status().code() == Code::kFailedPrecondition);
  CHECK_THAT(again.status().message(), Catch::Contains("CANCELLED"));
  CHECK(CancelSync(*store, 999).status().code() == Code::kNotFound);
  CHECK(store->GetJob(a.job.id()).value().cancel_reason() == "no longer needed");
}

TEST_CASE("concurrent submitters share group commits and get distinct ids", "[storage]") {
  TempDir dir;
  std::atomic<size_t> groups{0}, ops{0}, syncs{0};
  StoreOptions o;
  o.data_dir = dir.path();
  o.on_group_written = [&](size_t n) {
    ++groups;
    ops += n;
  };
  o.on_wal_sync = [&](double) { ++syncs; };
  auto store = std::move(JobStore::Open(o)).value();
  constexpr int kThreads = 8, kPerThread = 200;
  std::vector<std::thread> threads;
  std::mutex mu;
  std::set<uint64_t> ids;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto out = EnqueueOne(*store, Job("q", std::to_string(t) + "-" + std::to_string(i)));
        std::lock_guard lock(mu);  // Catch2's assertions are not thread-safe
        CHECK(out.status.ok());
        CHECK(ids.insert(out.job.id()).second);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(ids.size() == kThreads * kPerThread);
  CHECK(ops == kThreads * kPerThread);
  CHECK(groups <= ops);
  CHECK(syncs >= 1);
  CHECK(syncs <= groups);  // one fsync may cover several groups, never the reverse
  REQUIRE(store->Close().ok());
  auto report = VerifyChain(dir.path());
  REQUIRE(report.ok());
  CHECK(report->ok);
  CHECK(report->events == kThreads * kPerThread);
}

TEST_CASE("a second open of a held data dir is refused with a clear error", "[storage]") {
  TempDir dir;
  auto store = OpenStore(dir.path());
  StoreOptions o;
  o.data_dir = dir.path();
  auto second = JobStore::Open(o);
  REQUIRE_FALSE(second.ok());
  CHECK(second.status().code() == Code::kUnavailable);
  CHECK_THAT(second.status().message(), Catch::Contains("locked"));
}

TEST_CASE("chain verification passes on an untouched log", "[storage][audit]") {
  TempDir dir;
  {
    auto store = OpenStore(dir.path());
    for (int i = 0; i < 10; ++i) REQUIRE(EnqueueOne(*store, Job()).status.ok());
  }
  auto report = VerifyChain(dir.path());
  REQUIRE(report.ok());
  CHECK(report->ok);
  CHECK(report->events == 10);
}

TEST_CASE("chain verification catches every form of tampering", "[storage][audit]") {
  TempDir dir;
  {
    auto store = OpenStore(dir.path());
    for (int i = 0; i < 10; ++i) REQUIRE(EnqueueOne(*store, Job()).status.ok());
  }
  using namespace ledgerq::storage::testing;
  uint64_t expect_bad = 0;
  SECTION("an edited event") {
    REQUIRE(EditEvent(dir.path(), 4).ok());
    expect_bad = 4;
  }
  SECTION("an edited event whose own hash was recomputed") {
    REQUIRE(EditEventRehash(dir.path(), 4).ok());
    expect_bad = 5;  // event 5 no longer chains onto 4
  }
  SECTION("a deleted event") {
    REQUIRE(DeleteEvent(dir.path(), 6).ok());
    expect_bad = 6;
  }
  SECTION("the deleted last event") {
    REQUIRE(DeleteEvent(dir.path(), 10).ok());
    expect_bad = 10;
  }
  SECTION("two swapped events") {
    REQUIRE(SwapEvents(dir.path(), 3, 7).ok());
    expect_bad = 3;
  }
  auto report = VerifyChain(dir.path());
  REQUIRE(report.ok());
  CHECK_FALSE(report->ok);
  CHECK(report->first_bad_seq == expect_bad);
  CHECK_FALSE(report->problem.empty());
}

TEST_CASE("verifying a directory without data is a clear error", "[storage][audit]") {
  TempDir dir;
  auto report = VerifyChain(dir.Sub("nothing-here"));
  REQUIRE_FALSE(report.ok());
  CHECK(report.status().code() == Code::kNotFound);
}
