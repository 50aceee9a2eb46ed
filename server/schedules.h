// Cron schedules: the table of schedules with their next firing times, and the thread that fires
// them. Each firing enqueues one job through the same validation and admission as Enqueue
// (ToNewJob with the live policies), with the idempotency key "schedule:NAME:<RFC 3339 time>",
// the label ledgerq.schedule=NAME and the principal "schedule:NAME"; the store records the
// firing on the schedule in the job's own write and refuses a firing at or before the last one,
// so a restart, a retry or a second Schedules on the same store never makes two jobs for one
// firing. Schedules, their changes and their firing state live in the store; this holds only a
// cache of them and the next firing times. Times are UTC.
//
// Firings missed while the daemon was down (or could not write), older than `grace`: with
// missed = "skip" none of them is enqueued (a log line says how many); with "run-once" exactly
// one is, for the latest missed time. A firing that fails to enqueue is logged and retried at
// the next tick while it is within the grace.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "scheduler/cron.h"
#include "server/job_mapping.h"
#include "storage/job_store.h"

namespace ledgerq::server {

inline constexpr char kScheduleSourceConfig[] = "config";
inline constexpr char kScheduleSourceApi[] = "api";
inline constexpr char kScheduleLabel[] = "ledgerq.schedule";
inline constexpr char kMissedSkip[] = "skip";
inline constexpr char kMissedRunOnce[] = "run-once";

// Validates a schedule's declaration and sets its defaults (missed: skip). Errors name the field
// after `prefix` ("schedule.cron: field 2 (hour): 25 is out of range 0-23"); `dashed` spells
// max_attempts as the config file does (max-attempts). The name is checked too.
[[nodiscard]] Status ValidateSchedule(storage::ScheduleRecord* rec, const EnqueueLimits& limits,
                                      std::string_view prefix, bool dashed = false);

// "schedule:NAME:2026-11-29T19:05:00Z".
std::string ScheduleIdempotencyKey(std::string_view name, int64_t fire_us);

// The job one firing enqueues, validated and admitted exactly as Enqueue would (the policies of
// `limits`, principal "schedule:NAME"), with its firing attached.
[[nodiscard]] Status ScheduleJob(const storage::ScheduleRecord& rec, int64_t fire_us,
                                 const EnqueueLimits& limits, int64_t now_us, storage::NewJob* out);

// A schedule and its next firing (0: none, or not known to this daemon).
struct ScheduleView {
  storage::ScheduleRecord rec;
  int64_t next_fire_us = 0;
};

struct SchedulesOptions {
  EnqueueLimits limits;
  // Told about every job a firing created (the dispatcher's OnCreated), from the tick's thread.
  std::function<void(const storage::JobRecord&)> created;
  std::chrono::microseconds grace = std::chrono::seconds(60);
  std::chrono::milliseconds tick = std::chrono::seconds(1);  // the thread's pace (real time)
};

// What one Tick did.
struct TickStats {
  uint64_t enqueued = 0;  // jobs created
  uint64_t skipped = 0;   // missed firings skipped (missed = skip)
  uint64_t failed = 0;    // firings that could not be enqueued (retried next tick)
  uint64_t already = 0;   // firings found enqueued already (another instance, a restart)
};

class Schedules {
 public:
  Schedules(storage::JobStore* store, Clock* clock, SchedulesOptions options);
  ~Schedules();  // Stop()
  Schedules(const Schedules&) = delete;
  Schedules& operator=(const Schedules&) = delete;

  // Brings the config file's schedules into the store (source config: a new or changed one is
  // stored with SCHEDULE_ADDED, one no longer declared is removed with SCHEDULE_REMOVED; API
  // schedules are left alone), then loads every stored schedule. Blocks; call before Start.
  [[nodiscard]] Status Load(const std::map<std::string, storage::ScheduleRecord>& config);

  // Fires what is due by the clock: blocks until each firing's write is durable.
  TickStats Tick();
  // Ticks on a thread every options.tick until Stop.
  void Start();
  void Stop();

  // API changes (source api), answered once durable (on the store's finisher thread). Add
  // validates (errors name "schedule.FIELD") and checks that the jobs it would enqueue are
  // admitted now; a config schedule can be neither replaced nor removed through the API.
  void Add(storage::ScheduleRecord rec, bool replace, std::string principal,
           std::function<void(Result<ScheduleView>)> done);
  void Remove(std::string name, std::string principal,
              std::function<void(Result<storage::ScheduleRecord>)> done);
  [[nodiscard]] Result<std::vector<ScheduleView>> List() const;

 private:
  struct Entry {
    storage::ScheduleRecord rec;
    std::optional<scheduler::CronExpr> cron;
    int64_t next_us = 0;           // 0: never
    int64_t missed_logged_us = 0;  // the latest missed firing last logged
    int64_t failed_logged_us = 0;  // the firing whose failure to enqueue was last logged
    uint64_t version = 0;          // changes whenever the schedule is replaced
  };

  // Caches a stored schedule (replacing what was cached under its name).
  Result<ScheduleView> Install(const storage::ScheduleRecord& rec);
  // Fires `name` while it is due, applying the missed policy.
  void FireDue(const std::string& name, int64_t now, TickStats* stats);
  // Enqueues one firing; true when it is enqueued (by this call or before).
  bool FireOne(const Entry& e, int64_t fire_us, int64_t now, TickStats* stats);
  // Moves a cached schedule on after its firing (or skipped firings) at `last_us`.
  void Advance(const std::string& name, uint64_t version, int64_t last_us, uint64_t job_id);
  EnqueueLimits Limits() const { return options_.limits; }

  storage::JobStore* store_;
  Clock* clock_;
  SchedulesOptions options_;

  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;  // guarded by mu_
  uint64_t next_version_ = 1;             // guarded by mu_
  std::mutex tick_mu_;                    // one Tick at a time

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;  // guarded by stop_mu_
  std::thread thread_;
};

}  // namespace ledgerq::server
