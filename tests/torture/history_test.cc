// The torture checker on hand-made histories: a clean history passes, and each kind of
// violation the torture run is there to catch is reported.
#include "tests/torture/history.h"

#include <catch2/catch.hpp>

namespace ledgerq::torture {
namespace {

v1::JobEvent Ev(uint64_t seq, const std::string& type, uint32_t attempt = 0) {
  v1::JobEvent e;
  e.set_seq(seq);
  e.set_type(type);
  e.set_attempt(attempt);
  return e;
}

v1::JobHistory Job(uint64_t id, const std::string& key, v1::JobState state, uint32_t attempts,
                   std::vector<v1::JobEvent> events) {
  v1::JobHistory h;
  h.mutable_job()->set_id(id);
  h.mutable_job()->set_idempotency_key(key);
  h.mutable_job()->set_state(state);
  h.mutable_job()->set_attempts(attempts);
  for (auto& e : events) *h.add_events() = e;
  return h;
}

Op MakeOp(OpKind kind, int64_t start, int64_t end, Outcome outcome) {
  Op op;
  op.kind = kind;
  op.start_us = start;
  op.end_us = end;
  op.outcome = outcome;
  return op;
}

Op Enq(int64_t start, int64_t end, const std::string& key, uint64_t id, bool dedup = false) {
  Op op = MakeOp(OpKind::kEnqueue, start, end, Outcome::kOk);
  op.key = key;
  op.job_id = id;
  op.deduplicated = dedup;
  return op;
}

Op Worker(OpKind kind, int64_t start, int64_t end, uint64_t id, uint32_t attempt,
          Outcome outcome = Outcome::kOk) {
  Op op = MakeOp(kind, start, end, outcome);
  op.job_id = id;
  op.attempt = attempt;
  return op;
}

// Job 1: leased, lease expired, leased again, completed. Job 2: poison, dead-lettered.
struct Fixture {
  std::vector<Op> history = {
      Enq(0, 10, "a", 1),
      Enq(20, 30, "b", 2),
      Enq(40, 50, "a", 1, true),
      Worker(OpKind::kLease, 60, 70, 1, 1),
      Worker(OpKind::kLease, 60, 70, 2, 1),
      Worker(OpKind::kFail, 80, 90, 2, 1),
      Worker(OpKind::kLease, 2000, 2010, 1, 2),
      Worker(OpKind::kComplete, 2020, 2030, 1, 1, Outcome::kRejected),  // late, refused
      Worker(OpKind::kComplete, 2040, 2050, 1, 2),
      Worker(OpKind::kComplete, 2060, 2070, 1, 2),  // a repeat gets the same answer
  };
  Observed observed;
  Fixture() {
    observed.jobs[1] = Job(
        1, "a", v1::JOB_STATE_SUCCEEDED, 2,
        {Ev(1, "SUBMITTED"), Ev(3, "DEDUPLICATED"), Ev(4, "LEASED", 1), Ev(8, "LEASE_EXPIRED", 1),
         Ev(9, "RETRY_SCHEDULED", 1), Ev(10, "LEASED", 2), Ev(11, "COMPLETED", 2)});
    observed.jobs[2] = Job(
        2, "b", v1::JOB_STATE_DEAD, 1,
        {Ev(2, "SUBMITTED"), Ev(5, "LEASED", 1), Ev(6, "FAILED", 1), Ev(7, "DEAD_LETTERED", 1)});
  }
  bool Finds(const std::string& what) {
    Summary s = Check(history, observed);
    for (const auto& v : s.violations) {
      if (v.find(what) != std::string::npos) return true;
    }
    INFO("violations: " << s.violations.size());
    for (const auto& v : s.violations) INFO(v);
    return false;
  }
};

TEST_CASE("torture checker: a clean history passes", "[torture]") {
  Fixture f;
  Summary s = Check(f.history, f.observed);
  for (const auto& v : s.violations) INFO(v);
  CHECK(s.ok());
  CHECK(s.counts["jobs held"] == 2);
  CHECK(s.counts["enqueue deduplicated"] == 1);
}

TEST_CASE("torture checker: a lost acknowledged job is caught", "[torture]") {
  Fixture f;
  f.observed.jobs.erase(2);
  CHECK(f.Finds("LOST"));
}

TEST_CASE("torture checker: an unfinished job is caught", "[torture]") {
  Fixture f;
  f.observed.jobs[2].mutable_job()->set_state(v1::JOB_STATE_READY);
  CHECK(f.Finds("did not finish"));
}

TEST_CASE("torture checker: one key, two jobs is caught", "[torture]") {
  Fixture f;
  f.history.push_back(Enq(100, 110, "a", 3));
  f.observed.jobs[3] = Job(3, "a", v1::JOB_STATE_SUCCEEDED, 1,
                           {Ev(20, "SUBMITTED"), Ev(21, "LEASED", 1), Ev(22, "COMPLETED", 1)});
  CHECK(f.Finds("produced two jobs"));
  CHECK(f.Finds("is held by 2 jobs"));
}

TEST_CASE("torture checker: an unexpected job is caught", "[torture]") {
  Fixture f;
  f.observed.jobs[9] = Job(9, "", v1::JOB_STATE_SUCCEEDED, 1,
                           {Ev(20, "SUBMITTED"), Ev(21, "LEASED", 1), Ev(22, "COMPLETED", 1)});
  CHECK(f.Finds("UNEXPECTED"));
  // ...unless an unkeyed enqueue's outcome was unknown.
  f.history.push_back(MakeOp(OpKind::kEnqueue, 5, 3000, Outcome::kUnknown));
  CHECK_FALSE(f.Finds("UNEXPECTED"));
}

TEST_CASE("torture checker: two accepted completions are caught", "[torture]") {
  Fixture f;
  f.history[7].outcome = Outcome::kOk;  // the late complete of attempt 1 accepted too
  CHECK(f.Finds("two accepted completions"));
  CHECK(f.Finds("STALE TOKEN"));
  CHECK(f.Finds("acknowledged completion is not in the log"));
}

TEST_CASE("torture checker: a completion after a newer lease is a stale token", "[torture]") {
  Fixture f;
  // Attempt 1's owner heartbeats after attempt 2 was granted and the daemon accepts it.
  f.history.push_back(Worker(OpKind::kHeartbeat, 2015, 2018, 1, 1));
  CHECK(f.Finds("STALE TOKEN"));
}

TEST_CASE("torture checker: timeline faults are caught", "[torture]") {
  SECTION("two live leases") {
    Fixture f;
    f.observed.jobs[1].mutable_events(3)->set_type("HEARTBEAT");  // no expiry between leases
    CHECK(f.Finds("still held it"));
  }
  SECTION("attempt numbers that do not grow") {
    Fixture f;
    f.observed.jobs[1].mutable_events(5)->set_attempt(1);
    CHECK(f.Finds("did not grow"));
  }
  SECTION("completed twice") {
    Fixture f;
    *f.observed.jobs[1].add_events() = Ev(12, "COMPLETED", 2);
    CHECK(f.Finds("after the job finished"));
  }
  SECTION("an acknowledged lease missing from the log") {
    Fixture f;
    f.history.push_back(Worker(OpKind::kLease, 3000, 3010, 1, 3));
    CHECK(f.Finds("acknowledged lease is not in the log"));
  }
}

TEST_CASE("torture checker: ids that go backwards are caught", "[torture]") {
  Fixture f;
  // Job 1 announced as new after job 2 was answered.
  f.history.push_back(Enq(200, 210, "a", 1));
  CHECK(f.Finds("ids not monotonic"));
}

}  // namespace
}  // namespace ledgerq::torture
