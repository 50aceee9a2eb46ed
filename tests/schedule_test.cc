// Cron schedules (server/schedules.h) on a real JobStore in a temp dir, driven by a FakeClock:
// firing on time, one job per firing, restarts, missed firings, two instances on one store, the
// config file's schedules, validation and failed firings.
#include <catch2/catch.hpp>
#include <ctime>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "common/sha256.h"
#include "server/config.h"
#include "server/schedules.h"
#include "tests/support/temp_dir.h"
#include "tests/support/text.h"

using namespace ledgerq;
using namespace ledgerq::server;
using ledgerq::storage::EventBody;
using ledgerq::storage::JobRecord;
using ledgerq::storage::JobStore;
using ledgerq::storage::ScheduleRecord;
using ledgerq::testing::TempDir;
using namespace std::chrono_literals;
namespace sv1 = ledgerq::storage::v1;

namespace {

int64_t At(const char* text) {
  const int64_t us = ledgerq::testing::UtcMicros(text);
  REQUIRE(us >= 0);
  return us;
}

ScheduleRecord Sched(const std::string& name, const std::string& cron,
                     const std::string& missed = "") {
  ScheduleRecord r;
  r.set_name(name);
  r.set_cron(cron);
  r.set_queue("reports");
  r.set_type("report.daily");
  r.set_payload(R"({"kind":"summary"})");
  r.set_priority(3);
  r.set_max_attempts(4);
  r.set_missed(missed);
  (*r.mutable_labels())["team"] = "billing";
  return r;
}

// A store and schedules on one data dir and one fake clock; Restart() closes and reopens both.
struct Env {
  TempDir dir;
  FakeClock clock{At("2026-11-29T19:03:30")};
  LivePolicies live{Policies{}};
  std::function<Status()> fault;
  std::unique_ptr<JobStore> store;
  std::mutex mu;
  std::vector<JobRecord> created;  // guarded by mu

  Env() { Open(); }

  void Open() {
    storage::StoreOptions o;
    o.data_dir = dir.path();
    o.clock = &clock;
    o.write_fault = [this] { return fault ? fault() : Status::Ok(); };
    auto s = JobStore::Open(o);
    REQUIRE(s.ok());
    store = std::move(s).value();
  }

  std::unique_ptr<Schedules> Make(const std::map<std::string, ScheduleRecord>& config = {}) {
    SchedulesOptions o;
    o.limits = EnqueueLimits{1 << 20, 5, &live};
    o.created = [this](const JobRecord& j) {
      std::lock_guard lock(mu);
      created.push_back(j);
    };
    auto s = std::make_unique<Schedules>(store.get(), &clock, o);
    REQUIRE(s->Load(config).ok());
    return s;
  }

  void Restart() {
    REQUIRE(store->Close().ok());
    store.reset();
    Open();
  }

  void SetTime(const char* text) {
    clock.Advance(std::chrono::microseconds(At(text) - clock.WallMicros()));
  }

  std::vector<JobRecord> Jobs() {
    std::vector<JobRecord> out;
    REQUIRE(store
                ->ScanJobs([&](const JobRecord& j) {
                  out.push_back(j);
                  return true;
                })
                .ok());
    return out;
  }

  std::vector<EventBody> Events(sv1::EventType type) {
    std::vector<EventBody> out;
    REQUIRE(store
                ->ScanEvents(1,
                             [&](const EventBody& e) {
                               if (e.type() == type) out.push_back(e);
                               return true;
                             })
                .ok());
    return out;
  }

  ScheduleRecord Stored(const std::string& name) {
    auto r = store->GetSchedule(name);
    REQUIRE(r.ok());
    return *r;
  }
};

Result<ScheduleView> AddSync(Schedules& s, ScheduleRecord rec, bool replace = false) {
  std::promise<Result<ScheduleView>> p;
  s.Add(std::move(rec), replace, "admin-alice",
        [&p](Result<ScheduleView> v) { p.set_value(std::move(v)); });
  return p.get_future().get();
}

Result<ScheduleRecord> RemoveSync(Schedules& s, const std::string& name) {
  std::promise<Result<ScheduleRecord>> p;
  s.Remove(name, "admin-alice", [&p](Result<ScheduleRecord> r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

}  // namespace

TEST_CASE("schedules: the idempotency key is the name and the firing time in RFC 3339 UTC",
          "[schedule]") {
  CHECK(ScheduleIdempotencyKey("nightly", At("2026-11-29T19:05:00")) ==
        "schedule:nightly:2026-11-29T19:05:00Z");
}

TEST_CASE("schedules: fire on time, one job per firing, with the schedule's key and label",
          "[schedule]") {
  Env env;
  auto s = env.Make();
  auto added = AddSync(*s, Sched("every5", "*/5 * * * *"));
  REQUIRE(added.ok());
  CHECK(added->next_fire_us == At("2026-11-29T19:05:00"));
  CHECK(added->rec.source() == "api");
  CHECK(added->rec.created_by() == "admin-alice");
  CHECK(added->rec.missed() == "skip");

  CHECK(s->Tick().enqueued == 0);
  env.SetTime("2026-11-29T19:04:59");
  CHECK(s->Tick().enqueued == 0);
  env.SetTime("2026-11-29T19:05:00");
  CHECK(s->Tick().enqueued == 1);
  CHECK(s->Tick().enqueued == 0);  // the same time again: nothing more
  env.SetTime("2026-11-29T19:09:59");
  CHECK(s->Tick().enqueued == 0);

  auto jobs = env.Jobs();
  REQUIRE(jobs.size() == 1);
  const JobRecord& j = jobs[0];
  CHECK(j.idempotency_key() == "schedule:every5:2026-11-29T19:05:00Z");
  CHECK(j.labels().at("ledgerq.schedule") == "every5");
  CHECK(j.labels().at("team") == "billing");
  CHECK(j.submitted_by() == "schedule:every5");
  CHECK(j.queue() == "reports");
  CHECK(j.type() == "report.daily");
  CHECK(j.priority() == 3);
  CHECK(j.max_attempts() == 4);
  CHECK(env.store->GetPayload(j.id()).value() == R"({"kind":"summary"})");
  {
    std::lock_guard lock(env.mu);
    REQUIRE(env.created.size() == 1);  // the dispatcher is told about it
    CHECK(env.created[0].id() == j.id());
  }
  const ScheduleRecord rec = env.Stored("every5");
  CHECK(rec.last_fire_us() == At("2026-11-29T19:05:00"));
  CHECK(rec.last_job_id() == j.id());
  auto listed = s->List();
  REQUIRE(listed.ok());
  REQUIRE(listed->size() == 1);
  CHECK((*listed)[0].next_fire_us == At("2026-11-29T19:10:00"));

  env.SetTime("2026-11-29T19:10:10");
  CHECK(s->Tick().enqueued == 1);
  jobs = env.Jobs();
  REQUIRE(jobs.size() == 2);
  CHECK(jobs[1].idempotency_key() == "schedule:every5:2026-11-29T19:10:00Z");
}

TEST_CASE("schedules: a restart at the same clock time does not fire twice", "[schedule]") {
  Env env;
  {
    auto s = env.Make();
    REQUIRE(AddSync(*s, Sched("every5", "*/5 * * * *")).ok());
    env.SetTime("2026-11-29T19:05:00");
    CHECK(s->Tick().enqueued == 1);
  }
  env.Restart();
  auto s = env.Make();
  auto stats = s->Tick();
  CHECK(stats.enqueued == 0);
  CHECK(stats.skipped == 0);
  env.SetTime("2026-11-29T19:05:40");
  CHECK(s->Tick().enqueued == 0);
  CHECK(env.Jobs().size() == 1);
  // And once more, with the firing still inside the grace period.
  s.reset();
  env.Restart();
  auto again = env.Make();
  CHECK(again->Tick().enqueued == 0);
  CHECK(env.Jobs().size() == 1);
}

TEST_CASE("schedules: down across 3 firings with missed = skip enqueues none, then resumes",
          "[schedule]") {
  Env env;
  {
    auto s = env.Make();
    REQUIRE(AddSync(*s, Sched("every5", "*/5 * * * *")).ok());
    env.SetTime("2026-11-29T19:05:00");
    CHECK(s->Tick().enqueued == 1);
  }
  env.Restart();
  // 19:10, 19:15 and 19:20 passed while down; 19:20 is 90 s old, beyond the 60 s grace.
  env.SetTime("2026-11-29T19:21:30");
  auto s = env.Make();
  auto stats = s->Tick();
  CHECK(stats.enqueued == 0);
  CHECK(stats.skipped == 3);
  CHECK(env.Jobs().size() == 1);
  CHECK(s->Tick().skipped == 0);  // skipped once, not again
  auto listed = s->List();
  REQUIRE(listed.ok());
  CHECK((*listed)[0].next_fire_us == At("2026-11-29T19:25:00"));
  env.SetTime("2026-11-29T19:25:00");
  CHECK(s->Tick().enqueued == 1);
  auto jobs = env.Jobs();
  REQUIRE(jobs.size() == 2);
  CHECK(jobs[1].idempotency_key() == "schedule:every5:2026-11-29T19:25:00Z");
}

TEST_CASE("schedules: a firing within the grace after a restart still runs on time", "[schedule]") {
  Env env;
  {
    auto s = env.Make();
    REQUIRE(AddSync(*s, Sched("every5", "*/5 * * * *")).ok());
    env.SetTime("2026-11-29T19:05:00");
    CHECK(s->Tick().enqueued == 1);
  }
  env.Restart();
  env.SetTime("2026-11-29T19:20:30");  // 19:10 and 19:15 missed; 19:20 is 30 s old
  auto s = env.Make();
  auto stats = s->Tick();
  CHECK(stats.skipped == 2);
  CHECK(stats.enqueued == 1);
  auto jobs = env.Jobs();
  REQUIRE(jobs.size() == 2);
  CHECK(jobs[1].idempotency_key() == "schedule:every5:2026-11-29T19:20:00Z");
}

TEST_CASE("schedules: down across 3 firings with missed = run-once enqueues exactly one",
          "[schedule]") {
  Env env;
  {
    auto s = env.Make();
    REQUIRE(AddSync(*s, Sched("catchup", "*/5 * * * *", "run-once")).ok());
    env.SetTime("2026-11-29T19:05:00");
    CHECK(s->Tick().enqueued == 1);
  }
  env.Restart();
  env.SetTime("2026-11-29T19:21:30");
  {
    auto s = env.Make();
    auto stats = s->Tick();
    CHECK(stats.enqueued == 1);
    CHECK(stats.skipped == 0);
    CHECK(s->Tick().enqueued == 0);
  }
  auto jobs = env.Jobs();
  REQUIRE(jobs.size() == 2);
  CHECK(jobs[1].idempotency_key() == "schedule:catchup:2026-11-29T19:20:00Z");  // the latest
  // Restarting again does not run the missed firings once more.
  env.Restart();
  auto s = env.Make();
  CHECK(s->Tick().enqueued == 0);
  env.SetTime("2026-11-29T19:25:00");
  CHECK(s->Tick().enqueued == 1);
  CHECK(env.Jobs().size() == 3);
}

TEST_CASE("schedules: two instances on one store never make two jobs for one firing",
          "[schedule]") {
  Env env;
  auto a = env.Make();
  REQUIRE(AddSync(*a, Sched("every5", "*/5 * * * *")).ok());
  auto b = env.Make();  // loads the schedule from the store
  uint64_t enqueued = 0, already = 0;
  env.SetTime("2026-11-29T19:05:00");
  for (int i = 0; i < 20; ++i, env.clock.Advance(5min)) {  // one firing due each round
    TickStats sa, sb;
    std::thread ta([&] { sa = a->Tick(); });
    std::thread tb([&] { sb = b->Tick(); });
    ta.join();
    tb.join();
    INFO("round " << i);
    CHECK(sa.enqueued + sb.enqueued == 1);
    enqueued += sa.enqueued + sb.enqueued;
    already += sa.already + sb.already;
  }
  CHECK(enqueued == 20);
  CHECK(already == 20);  // the other instance found each firing done
  auto jobs = env.Jobs();
  REQUIRE(jobs.size() == 20);
  std::set<std::string> keys;
  for (const auto& j : jobs) keys.insert(j.idempotency_key());
  CHECK(keys.size() == 20);
}

TEST_CASE("schedules: the store refuses a second job for a firing, even in one write",
          "[schedule]") {
  Env env;
  auto s = env.Make();
  REQUIRE(AddSync(*s, Sched("every5", "*/5 * * * *")).ok());
  const int64_t fire = At("2026-11-29T19:05:00");
  storage::NewJob job;
  REQUIRE(ScheduleJob(env.Stored("every5"), fire, EnqueueLimits{1 << 20, 5, nullptr},
                      env.clock.WallMicros(), &job)
              .ok());
  // Different keys, so only the firing record can tell they are the same firing.
  storage::NewJob other = job;
  other.idempotency_key = "another-key";
  std::promise<std::vector<storage::EnqueueOutcome>> p;
  env.store->Enqueue({job, other}, "schedule:every5",
                     [&p](std::vector<storage::EnqueueOutcome> o) { p.set_value(std::move(o)); });
  auto outs = p.get_future().get();
  REQUIRE(outs.size() == 2);
  CHECK(outs[0].status.ok());
  CHECK(outs[1].status.code() == Code::kAlreadyExists);
  CHECK_THAT(outs[1].status.message(), Catch::Contains("every5"));
  CHECK(env.Jobs().size() == 1);
  // A firing made from a definition replaced meanwhile is refused: the new one fires next.
  env.clock.Advance(std::chrono::seconds(1));
  REQUIRE(AddSync(*s, Sched("every5", "*/10 * * * *"), /*replace=*/true).ok());
  storage::NewJob stale = job;
  stale.schedule_firing->fire_us = fire + 300'000'000;
  stale.idempotency_key = "stale";
  std::promise<std::vector<storage::EnqueueOutcome>> r;
  env.store->Enqueue({stale}, "schedule:every5",
                     [&r](std::vector<storage::EnqueueOutcome> o) { r.set_value(std::move(o)); });
  auto refused = r.get_future().get()[0].status;
  CHECK(refused.code() == Code::kFailedPrecondition);
  CHECK_THAT(refused.message(), Catch::Contains("changed"));
  CHECK(env.Jobs().size() == 1);
  // A schedule that is gone takes no firing.
  REQUIRE(RemoveSync(*s, "every5").ok());
  storage::NewJob late = job;
  late.schedule_firing->fire_us = fire + 300'000'000;
  late.idempotency_key = "late";
  std::promise<std::vector<storage::EnqueueOutcome>> q;
  env.store->Enqueue({late}, "schedule:every5",
                     [&q](std::vector<storage::EnqueueOutcome> o) { q.set_value(std::move(o)); });
  CHECK(q.get_future().get()[0].status.code() == Code::kNotFound);
  CHECK(env.Jobs().size() == 1);
}

TEST_CASE("schedules: config schedules are added, changed and removed with events, API ones stay",
          "[schedule]") {
  Env env;
  std::map<std::string, ScheduleRecord> config{{"nightly", Sched("nightly", "0 2 * * *")},
                                               {"hourly", Sched("hourly", "@hourly")}};
  for (auto& [n, r] : config) REQUIRE(ValidateSchedule(&r, EnqueueLimits{}, "").ok());
  {
    auto s = env.Make(config);
    REQUIRE(AddSync(*s, Sched("adhoc", "*/10 * * * *")).ok());
  }
  auto added = env.Events(sv1::EVENT_SCHEDULE_ADDED);
  REQUIRE(added.size() == 3);
  for (const auto& ev : added) {
    CHECK(ev.schedule().payload().empty());  // events carry the digest only
    CHECK(ev.payload_sha256() == std::string(AsBytes(Sha256(R"({"kind":"summary"})"))));
    CHECK(ev.queue() == "reports");
  }
  CHECK(added[0].schedule().source() == "config");
  CHECK(added[0].principal() == "ledgerqd:config");
  CHECK(added[2].schedule().name() == "adhoc");
  CHECK(added[2].schedule().source() == "api");
  CHECK(added[2].principal() == "admin-alice");

  // Unchanged: no event. Then nightly changes and hourly goes.
  { auto s = env.Make(config); }
  CHECK(env.Events(sv1::EVENT_SCHEDULE_ADDED).size() == 3);
  config["nightly"].set_cron("30 2 * * *");
  config.erase("hourly");
  auto s = env.Make(config);
  added = env.Events(sv1::EVENT_SCHEDULE_ADDED);
  REQUIRE(added.size() == 4);
  CHECK(added[3].schedule().cron() == "30 2 * * *");
  CHECK(added[3].reason() == "replaced");
  auto removed = env.Events(sv1::EVENT_SCHEDULE_REMOVED);
  REQUIRE(removed.size() == 1);
  CHECK(removed[0].schedule().name() == "hourly");
  auto listed = s->List();
  REQUIRE(listed.ok());
  REQUIRE(listed->size() == 2);
  CHECK((*listed)[0].rec.name() == "adhoc");
  CHECK((*listed)[0].rec.source() == "api");
  CHECK((*listed)[1].rec.name() == "nightly");
  CHECK((*listed)[1].next_fire_us == At("2026-11-30T02:30:00"));

  // The API may neither replace nor remove a config schedule.
  auto over = AddSync(*s, Sched("nightly", "* * * * *"), /*replace=*/true);
  REQUIRE_FALSE(over.ok());
  CHECK(over.status().code() == Code::kFailedPrecondition);
  CHECK_THAT(over.status().message(),
             Catch::Contains("\"nightly\"") && Catch::Contains("config file"));
  auto rm = RemoveSync(*s, "nightly");
  REQUIRE_FALSE(rm.ok());
  CHECK(rm.status().code() == Code::kFailedPrecondition);
  CHECK(env.Stored("nightly").cron() == "30 2 * * *");
}

TEST_CASE("schedules: duplicates, replace and removal through the API", "[schedule]") {
  Env env;
  auto s = env.Make();
  REQUIRE(AddSync(*s, Sched("adhoc", "*/10 * * * *")).ok());
  env.SetTime("2026-11-29T19:10:00");
  CHECK(s->Tick().enqueued == 1);
  auto dup = AddSync(*s, Sched("adhoc", "0 * * * *"));
  REQUIRE_FALSE(dup.ok());
  CHECK(dup.status().code() == Code::kAlreadyExists);
  CHECK_THAT(dup.status().message(), Catch::Contains("\"adhoc\""));
  // The same declaration again is not a change.
  CHECK(AddSync(*s, Sched("adhoc", "*/10 * * * *")).ok());
  CHECK(env.Events(sv1::EVENT_SCHEDULE_ADDED).size() == 1);

  auto replaced = AddSync(*s, Sched("adhoc", "0 * * * *"), /*replace=*/true);
  REQUIRE(replaced.ok());
  CHECK(replaced->rec.last_fire_us() == At("2026-11-29T19:10:00"));  // its firings are kept
  CHECK(replaced->next_fire_us == At("2026-11-29T20:00:00"));
  CHECK(env.Events(sv1::EVENT_SCHEDULE_ADDED).size() == 2);

  auto gone = RemoveSync(*s, "adhoc");
  REQUIRE(gone.ok());
  CHECK(gone->name() == "adhoc");
  CHECK(env.Events(sv1::EVENT_SCHEDULE_REMOVED).size() == 1);
  env.SetTime("2026-11-29T20:00:00");
  CHECK(s->Tick().enqueued == 0);  // removed: no more firings
  CHECK(env.Jobs().size() == 1);
  auto unknown = RemoveSync(*s, "adhoc");
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.status().code() == Code::kNotFound);
  CHECK_THAT(unknown.status().message(), Catch::Contains("\"adhoc\""));
}

TEST_CASE("schedules: invalid schedules are refused by field and store nothing", "[schedule]") {
  Env env;
  auto s = env.Make();
  struct Bad {
    std::function<void(ScheduleRecord&)> edit;
    const char* message;
  };
  const Bad cases[] = {
      {[](ScheduleRecord& r) { r.set_cron("0 25 * * *"); },
       "schedule.cron: field 2 (hour): 25 is out of range 0-23"},
      {[](ScheduleRecord& r) { r.set_cron(""); }, "schedule.cron: empty expression"},
      {[](ScheduleRecord& r) { r.set_name("bad name"); }, "schedule.name:"},
      {[](ScheduleRecord& r) { r.set_name(""); }, "schedule.name: must not be empty"},
      {[](ScheduleRecord& r) { r.set_queue(""); }, "schedule.queue: must not be empty"},
      {[](ScheduleRecord& r) { r.set_type("a/b"); }, "schedule.type:"},
      {[](ScheduleRecord& r) { r.set_missed("sometimes"); },
       "schedule.missed: must be skip or run-once, got \"sometimes\""},
      {[](ScheduleRecord& r) { r.set_max_attempts(1001); },
       "schedule.max_attempts: must be between 1 and 1000, got 1001"},
      {[](ScheduleRecord& r) { r.set_payload(std::string((1 << 20) + 1, 'x')); },
       "schedule.payload: 1048577 bytes exceeds the limit of 1048576 bytes"},
      {[](ScheduleRecord& r) { (*r.mutable_labels())["ledgerq.schedule"] = "x"; },
       "schedule.labels: \"ledgerq.schedule\" is set by ledgerq"},
  };
  for (const auto& c : cases) {
    ScheduleRecord r = Sched("ok", "*/5 * * * *");
    c.edit(r);
    auto v = AddSync(*s, r);
    INFO(c.message);
    REQUIRE_FALSE(v.ok());
    CHECK(v.status().code() == Code::kInvalidArgument);
    CHECK_THAT(v.status().message(), Catch::StartsWith(c.message));
  }
  // The jobs it would enqueue must pass the policies in force.
  Policies strict;
  strict.strict_types = true;
  env.live.Set(strict, 2);
  auto refused = AddSync(*s, Sched("ok", "*/5 * * * *"));
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == Code::kFailedPrecondition);
  CHECK_THAT(refused.status().message(),
             Catch::StartsWith("schedule: the jobs it would enqueue are refused: type:"));
  bool any = false;
  REQUIRE(env.store->ScanSchedules([&](const ScheduleRecord&) { any = true; }).ok());
  CHECK_FALSE(any);
  CHECK(env.Events(sv1::EVENT_SCHEDULE_ADDED).empty());
}

TEST_CASE("schedules: a firing that fails to enqueue is retried at the next tick", "[schedule]") {
  Env env;
  auto s = env.Make();
  REQUIRE(AddSync(*s, Sched("every5", "*/5 * * * *")).ok());
  env.SetTime("2026-11-29T19:05:00");
  env.fault = [] { return Status::ResourceExhausted("disk full: injected"); };
  auto stats = s->Tick();
  CHECK(stats.failed == 1);
  CHECK(stats.enqueued == 0);
  CHECK(s->Tick().failed == 1);  // still failing, still due
  env.fault = nullptr;
  env.clock.Advance(10s);
  CHECK(s->Tick().enqueued == 1);
  auto jobs = env.Jobs();
  REQUIRE(jobs.size() == 1);
  CHECK(jobs[0].idempotency_key() == "schedule:every5:2026-11-29T19:05:00Z");

  // A policy that now refuses the job: logged and retried, never a crash; once allowed again
  // (within the grace) the firing goes through.
  Policies strict;
  strict.strict_types = true;
  env.live.Set(strict, 2);
  env.SetTime("2026-11-29T19:10:00");
  CHECK(s->Tick().failed == 1);
  env.live.Set(Policies{}, 3);
  env.clock.Advance(20s);
  CHECK(s->Tick().enqueued == 1);
  CHECK(env.Jobs().size() == 2);
}

TEST_CASE("schedules: [schedules.NAME] in the config file, every error named", "[schedule]") {
  auto good = ParseConfigToml(R"(
[schedules.nightly]
cron = "0 2 * * *"
queue = "reports"
type = "report.daily"
payload = '{"kind":"summary"}'
priority = 5
max-attempts = 3
missed = "run-once"
labels = { team = "billing" }

[schedules.hourly]
cron = "@hourly"
queue = "reports"
type = "report.hourly"
)",
                              Config{});
  REQUIRE(good.ok());
  REQUIRE(good->schedule_decls.size() == 2);
  const ScheduleRecord& n = good->schedule_decls.at("nightly");
  CHECK(n.cron() == "0 2 * * *");
  CHECK(n.payload() == R"({"kind":"summary"})");
  CHECK(n.priority() == 5);
  CHECK(n.max_attempts() == 3);
  CHECK(n.missed() == "run-once");
  CHECK(n.labels().at("team") == "billing");
  CHECK(n.source() == "config");
  const ScheduleRecord& h = good->schedule_decls.at("hourly");
  CHECK(h.payload() == "{}");
  CHECK(h.missed() == "skip");

  auto bad = ParseConfigToml(R"(
[schedules.a]
cron = "0 25 * * *"
queue = "q"
type = "t"
[schedules.b]
cron = "* * * * *"
type = "t"
colour = "red"
[schedules.c]
cron = "* * * * *"
queue = "q"
type = "t"
missed = "later"
max-attempts = 0
[schedules."bad name"]
cron = "* * * * *"
)",
                             Config{});
  REQUIRE_FALSE(bad.ok());
  const std::string& m = bad.status().message();
  CHECK_THAT(m,
             Catch::Contains("config: schedules.a.cron: field 2 (hour): 25 is out of range 0-23"));
  CHECK_THAT(m, Catch::Contains("config: schedules.b.queue: missing (required)"));
  CHECK_THAT(m, Catch::Contains("config: unknown key \"schedules.b.colour\""));
  CHECK_THAT(m, Catch::Contains("config: schedules.c.max-attempts: must be between 1 and 1000"));
  CHECK_THAT(m, Catch::Contains("config: schedules.bad name:"));

  auto missed = ParseConfigToml(R"(
[schedules.c]
cron = "* * * * *"
queue = "q"
type = "t"
missed = "later"
)",
                                Config{});
  REQUIRE_FALSE(missed.ok());
  CHECK(missed.status().message() ==
        "config: schedules.c.missed: must be skip or run-once, got \"later\"");

  auto refused = ParseConfigToml(R"(
strict-types = true
[types.known]
[schedules.c]
cron = "* * * * *"
queue = "q"
type = "unknown"
)",
                                 Config{});
  REQUIRE_FALSE(refused.ok());
  CHECK_THAT(
      refused.status().message(),
      Catch::StartsWith("config: schedules.c: the jobs it would enqueue are refused: type:"));
}

TEST_CASE("schedules: a minutely schedule down for a year skips to the next minute", "[schedule]") {
  Env env;
  {
    auto s = env.Make();
    REQUIRE(AddSync(*s, Sched("minutely", "* * * * *")).ok());
  }
  env.Restart();
  env.SetTime("2027-11-29T19:03:30");
  auto s = env.Make();
  const auto start = std::chrono::steady_clock::now();
  auto stats = s->Tick();
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  INFO("tick took " << ms << " ms");
  CHECK(stats.enqueued == 1);      // 19:03:00 is within the grace: late, not missed
  CHECK(stats.skipped == 10'000);  // counted up to 10,000 (logged as "at least")
  CHECK(env.Jobs().size() == 1);
  CHECK(env.Jobs()[0].idempotency_key() == "schedule:minutely:2027-11-29T19:03:00Z");
  auto listed = s->List();
  REQUIRE(listed.ok());
  CHECK((*listed)[0].next_fire_us == At("2027-11-29T19:04:00"));
}
