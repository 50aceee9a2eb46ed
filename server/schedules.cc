#include "server/schedules.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <future>
#include <set>

namespace ledgerq::server {
namespace {

using scheduler::CronExpr;
using scheduler::Rfc3339Utc;
using storage::ScheduleRecord;

constexpr char kConfigPrincipal[] = "ledgerqd:config";
constexpr uint64_t kMaxCounted = 10'000;  // missed firings counted one by one, at most

std::string Quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

// Where a schedule starts firing from: its last firing, or when its definition was stored (a
// new or changed schedule never fires for times before it existed).
int64_t FiringBase(const ScheduleRecord& rec) {
  return std::max(rec.last_fire_us(), rec.created_at_us());
}

// The latest firing at or before `limit`, given `first`, a firing at or before it.
int64_t LatestFiring(const CronExpr& cron, int64_t first, int64_t limit) {
  constexpr int64_t kHour = 3600LL * 1'000'000;
  for (int64_t window : {kHour, 24 * kHour, 32 * 24 * kHour, 367 * 24 * kHour}) {
    const int64_t from = limit - window;
    if (from <= first) break;
    auto f = cron.Next(from);
    if (f && *f <= limit) {
      first = *f;
      break;
    }
  }
  for (;;) {
    auto n = cron.Next(first);
    if (!n || *n > limit) return first;
    first = *n;
  }
}

// Firings from `first` through `last` (both firings), counted up to kMaxCounted.
uint64_t CountFirings(const CronExpr& cron, int64_t first, int64_t last) {
  uint64_t n = 1;
  for (int64_t t = first; t < last && n < kMaxCounted;) {
    auto next = cron.Next(t);
    if (!next || *next > last) break;
    t = *next;
    ++n;
  }
  return n;
}

// What a schedule declares, not who stored it when nor its firing state.
bool SameDeclaration(const ScheduleRecord& a, const ScheduleRecord& b) {
  if (a.labels_size() != b.labels_size()) return false;
  for (const auto& [k, v] : a.labels()) {
    auto it = b.labels().find(k);
    if (it == b.labels().end() || it->second != v) return false;
  }
  return a.cron() == b.cron() && a.queue() == b.queue() && a.type() == b.type() &&
         a.payload() == b.payload() && a.priority() == b.priority() &&
         a.max_attempts() == b.max_attempts() && a.missed() == b.missed() &&
         a.source() == b.source();
}

std::string CountText(uint64_t n) {
  return n >= kMaxCounted ? "at least " + std::to_string(n) : std::to_string(n);
}

}  // namespace

Status ValidateSchedule(ScheduleRecord* rec, const EnqueueLimits& limits, std::string_view prefix,
                        bool dashed) {
  const std::string p(prefix);
  LEDGERQ_RETURN_IF_ERROR(ValidateName(rec->name(), p + "name"));
  auto cron = CronExpr::Parse(rec->cron());
  if (!cron.ok()) return Status::InvalidArgument(p + "cron: " + cron.status().message());
  LEDGERQ_RETURN_IF_ERROR(ValidateName(rec->queue(), p + "queue"));
  LEDGERQ_RETURN_IF_ERROR(ValidateName(rec->type(), p + "type"));
  if (rec->payload().size() > limits.max_payload_bytes) {
    return Status::InvalidArgument(p + "payload: " + std::to_string(rec->payload().size()) +
                                   " bytes exceeds the limit of " +
                                   std::to_string(limits.max_payload_bytes) + " bytes");
  }
  if (rec->max_attempts() > kMaxAttemptsCeiling) {
    return Status::InvalidArgument(p + (dashed ? "max-attempts" : "max_attempts") +
                                   ": must be between 1 and 1000, got " +
                                   std::to_string(rec->max_attempts()));
  }
  if (rec->missed().empty()) rec->set_missed(kMissedSkip);
  if (rec->missed() != kMissedSkip && rec->missed() != kMissedRunOnce) {
    return Status::InvalidArgument(p + "missed: must be skip or run-once, got " +
                                   Quote(rec->missed()));
  }
  if (rec->labels_size() >= static_cast<int>(kMaxLabels)) {
    return Status::InvalidArgument(
        p + "labels: " + std::to_string(rec->labels_size()) + " entries exceeds the limit of " +
        std::to_string(kMaxLabels - 1) + " (ledgerq adds ledgerq.schedule)");
  }
  for (const auto& [k, v] : rec->labels()) {
    if (k.empty()) return Status::InvalidArgument(p + "labels: a key is empty");
    if (k == kScheduleLabel) {
      return Status::InvalidArgument(p + "labels: " + Quote(k) + " is set by ledgerq");
    }
    if (k.size() > kMaxLabelBytes) {
      return Status::InvalidArgument(p + "labels: key " + Quote(k) + " is longer than 256 bytes");
    }
    if (v.size() > kMaxLabelBytes) {
      return Status::InvalidArgument(p + "labels[" + Quote(k) +
                                     "]: value is longer than 256 bytes");
    }
  }
  return Status::Ok();
}

std::string ScheduleIdempotencyKey(std::string_view name, int64_t fire_us) {
  return "schedule:" + std::string(name) + ":" + Rfc3339Utc(fire_us);
}

Status ScheduleJob(const ScheduleRecord& rec, int64_t fire_us, const EnqueueLimits& limits,
                   int64_t now_us, storage::NewJob* out) {
  v1::EnqueueRequest req;
  req.set_queue(rec.queue());
  req.set_type(rec.type());
  req.set_payload(rec.payload());
  req.set_priority(rec.priority());
  req.set_max_attempts(rec.max_attempts());
  req.set_idempotency_key(ScheduleIdempotencyKey(rec.name(), fire_us));
  for (const auto& [k, v] : rec.labels()) (*req.mutable_labels())[k] = v;
  (*req.mutable_labels())[kScheduleLabel] = rec.name();
  storage::NewJob job;
  LEDGERQ_RETURN_IF_ERROR(ToNewJob(req, limits, now_us, {}, &job, {}, "schedule:" + rec.name()));
  job.schedule_firing = storage::ScheduleFiring{rec.name(), fire_us, rec.created_at_us()};
  *out = std::move(job);
  return Status::Ok();
}

Schedules::Schedules(storage::JobStore* store, Clock* clock, SchedulesOptions options)
    : store_(store), clock_(clock), options_(std::move(options)) {}

Schedules::~Schedules() { Stop(); }

Status Schedules::Load(const std::map<std::string, ScheduleRecord>& config) {
  std::map<std::string, ScheduleRecord> stored;
  LEDGERQ_RETURN_IF_ERROR(
      store_->ScanSchedules([&](const ScheduleRecord& rec) { stored[rec.name()] = rec; }));
  uint64_t changed = 0, removed = 0;
  for (const auto& [name, decl] : config) {
    ScheduleRecord rec = decl;
    rec.set_name(name);
    rec.set_source(kScheduleSourceConfig);
    std::promise<Result<ScheduleRecord>> put;
    store_->PutSchedule(rec, /*replace=*/true, kConfigPrincipal,
                        [&put](Result<ScheduleRecord> r) { put.set_value(std::move(r)); });
    auto r = put.get_future().get();
    if (!r.ok()) {
      return Status(r.status().code(), "schedule " + Quote(name) + ": " + r.status().message());
    }
    auto old = stored.find(name);
    if (old == stored.end() || !SameDeclaration(old->second, rec)) {
      ++changed;
      if (old != stored.end() && old->second.source() != kScheduleSourceConfig) {
        spdlog::warn(
            "schedule {}: the config file's declaration replaced the one added through "
            "the API",
            name);
      }
    }
  }
  for (const auto& [name, rec] : stored) {
    if (rec.source() != kScheduleSourceConfig || config.count(name)) continue;
    std::promise<Result<ScheduleRecord>> rm;
    store_->RemoveSchedule(name, kScheduleSourceConfig, kConfigPrincipal,
                           [&rm](Result<ScheduleRecord> r) { rm.set_value(std::move(r)); });
    auto r = rm.get_future().get();
    if (!r.ok() && r.status().code() != Code::kNotFound) {
      return Status(r.status().code(), "schedule " + Quote(name) + ": " + r.status().message());
    }
    ++removed;
  }
  uint64_t total = 0, from_api = 0;
  Status scan = store_->ScanSchedules([&](const ScheduleRecord& rec) {
    auto v = Install(rec);
    if (!v.ok()) {
      spdlog::error("schedule {}: not loaded: {}", rec.name(), v.status().message());
      return;
    }
    ++total;
    if (rec.source() != kScheduleSourceConfig) ++from_api;
  });
  LEDGERQ_RETURN_IF_ERROR(scan);
  spdlog::info(
      "schedules: {} loaded ({} from the config file, {} added or changed, {} removed; {} "
      "through the API)",
      total, total - from_api, changed, removed, from_api);
  return Status::Ok();
}

Result<ScheduleView> Schedules::Install(const ScheduleRecord& rec) {
  auto cron = CronExpr::Parse(rec.cron());
  if (!cron.ok()) return Status::InvalidArgument("cron: " + cron.status().message());
  Entry e;
  e.rec = rec;
  e.next_us = cron->Next(FiringBase(rec)).value_or(0);
  e.cron = std::move(cron).value();
  std::lock_guard lock(mu_);
  e.version = next_version_++;
  ScheduleView view{rec, e.next_us};
  entries_[rec.name()] = std::move(e);
  return view;
}

void Schedules::Advance(const std::string& name, uint64_t version, int64_t last_us,
                        uint64_t job_id) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(name);
  if (it == entries_.end() || it->second.version != version) return;  // replaced meanwhile
  Entry& e = it->second;
  if (job_id != 0 && last_us > e.rec.last_fire_us()) {
    e.rec.set_last_fire_us(last_us);
    e.rec.set_last_job_id(job_id);
  }
  e.next_us = e.cron->Next(last_us).value_or(0);
}

TickStats Schedules::Tick() {
  std::lock_guard tick(tick_mu_);
  TickStats stats;
  const int64_t now = clock_->WallMicros();
  std::vector<std::string> due;
  {
    std::lock_guard lock(mu_);
    for (const auto& [name, e] : entries_) {
      if (e.next_us != 0 && e.next_us <= now) due.push_back(name);
    }
  }
  for (const auto& name : due) FireDue(name, now, &stats);
  return stats;
}

void Schedules::FireDue(const std::string& name, int64_t now, TickStats* stats) {
  const int64_t missed_before = now - options_.grace.count();
  // Each round fires or skips at least one firing; more than a few are due only after a stall.
  for (int round = 0; round < 64; ++round) {
    Entry e;
    {
      std::lock_guard lock(mu_);
      auto it = entries_.find(name);
      if (it == entries_.end()) return;
      e = it->second;
    }
    if (e.next_us == 0 || e.next_us > now) return;
    // The store is the truth: another instance (or this one before a restart) may have fired.
    auto fresh = store_->GetSchedule(name);
    if (!fresh.ok()) {
      if (fresh.status().code() == Code::kNotFound) {
        std::lock_guard lock(mu_);
        auto it = entries_.find(name);
        if (it != entries_.end() && it->second.version == e.version) entries_.erase(it);
        return;
      }
      spdlog::error("schedule {}: cannot read it: {}", name, fresh.status().message());
      ++stats->failed;
      return;
    }
    if (fresh->last_fire_us() >= e.next_us) {
      ++stats->already;
      Advance(name, e.version, fresh->last_fire_us(), fresh->last_job_id());
      continue;
    }
    int64_t fire = e.next_us;
    if (fire <= missed_before) {
      const int64_t latest = LatestFiring(*e.cron, fire, missed_before);
      const uint64_t n = CountFirings(*e.cron, fire, latest);
      const bool run_once = e.rec.missed() == kMissedRunOnce;
      if (e.missed_logged_us != latest) {
        spdlog::warn("schedule {}: {} firing(s) missed from {} to {}; {}", name, CountText(n),
                     Rfc3339Utc(fire), Rfc3339Utc(latest),
                     run_once ? "enqueuing one for " + Rfc3339Utc(latest) + " (missed = run-once)"
                              : std::string("skipped (missed = skip)"));
        std::lock_guard lock(mu_);
        auto it = entries_.find(name);
        if (it != entries_.end() && it->second.version == e.version) {
          it->second.missed_logged_us = latest;
        }
      }
      if (!run_once) {
        stats->skipped += n;
        Advance(name, e.version, latest, 0);
        continue;
      }
      fire = latest;
    }
    if (!FireOne(e, fire, now, stats)) return;  // retried at the next tick
  }
}

bool Schedules::FireOne(const Entry& e, int64_t fire, int64_t now, TickStats* stats) {
  const std::string& name = e.rec.name();
  auto report = [&](const Status& st) {
    ++stats->failed;
    std::lock_guard lock(mu_);
    auto it = entries_.find(name);
    if (it == entries_.end() || it->second.version != e.version) return;
    if (it->second.failed_logged_us == fire) return;  // logged already for this firing
    it->second.failed_logged_us = fire;
    spdlog::error("schedule {}: the firing at {} was not enqueued (retrying every tick): {}", name,
                  Rfc3339Utc(fire), st.message());
  };
  storage::NewJob job;
  Status st = ScheduleJob(e.rec, fire, Limits(), now, &job);
  if (!st.ok()) {
    report(st);
    return false;
  }
  std::promise<storage::EnqueueOutcome> done;
  std::vector<storage::NewJob> items;
  items.push_back(std::move(job));
  store_->Enqueue(
      std::move(items), "schedule:" + name,
      [&done](std::vector<storage::EnqueueOutcome> outs) { done.set_value(std::move(outs[0])); });
  storage::EnqueueOutcome out = done.get_future().get();
  if (out.status.ok()) {
    if (!out.deduplicated) {
      ++stats->enqueued;
      if (options_.created) options_.created(out.job);
      spdlog::info("schedule {}: fired for {}: job {}", name, Rfc3339Utc(fire), out.job.id());
    } else {
      ++stats->already;
    }
    Advance(name, e.version, fire, out.job.id());
    return true;
  }
  // Refused: fired already (another instance won the race), or the schedule is gone.
  auto fresh = store_->GetSchedule(name);
  if (fresh.ok() && fresh->last_fire_us() >= fire) {
    ++stats->already;
    Advance(name, e.version, fresh->last_fire_us(), fresh->last_job_id());
    return true;
  }
  if (!fresh.ok() && fresh.status().code() == Code::kNotFound) {
    std::lock_guard lock(mu_);
    auto it = entries_.find(name);
    if (it != entries_.end() && it->second.version == e.version) entries_.erase(it);
    return false;
  }
  report(out.status);
  return false;
}

void Schedules::Start() {
  {
    std::lock_guard lock(stop_mu_);
    stopping_ = false;
  }
  thread_ = std::thread([this] {
    std::unique_lock lock(stop_mu_);
    while (!stopping_) {
      lock.unlock();
      (void)Tick();
      lock.lock();
      stop_cv_.wait_for(lock, options_.tick, [this] { return stopping_; });
    }
  });
}

void Schedules::Stop() {
  {
    std::lock_guard lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Schedules::Add(ScheduleRecord rec, bool replace, std::string principal,
                    std::function<void(Result<ScheduleView>)> done) {
  rec.set_source(kScheduleSourceApi);
  rec.clear_created_by();
  rec.clear_created_at_us();
  rec.clear_last_fire_us();
  rec.clear_last_job_id();
  const EnqueueLimits limits = Limits();
  Status st = ValidateSchedule(&rec, limits, "schedule.");
  if (st.ok()) {
    // The jobs it will enqueue must be admitted (strict types, a type's queues, required
    // payload fields), or every firing would fail.
    storage::NewJob probe;
    const int64_t now = clock_->WallMicros();
    Status admit = ScheduleJob(rec, now, limits, now, &probe);
    if (!admit.ok()) {
      st = Status(admit.code(),
                  "schedule: the jobs it would enqueue are refused: " + admit.message());
    }
  }
  if (!st.ok()) {
    done(st);
    return;
  }
  store_->PutSchedule(std::move(rec), replace, std::move(principal),
                      [this, done = std::move(done)](Result<ScheduleRecord> r) {
                        if (!r.ok()) {
                          done(r.status());
                          return;
                        }
                        done(Install(*r));
                      });
}

void Schedules::Remove(std::string name, std::string principal,
                       std::function<void(Result<ScheduleRecord>)> done) {
  Status st = ValidateName(name, "name");
  if (!st.ok()) {
    done(st);
    return;
  }
  store_->RemoveSchedule(name, kScheduleSourceApi, std::move(principal),
                         [this, name, done = std::move(done)](Result<ScheduleRecord> r) {
                           if (r.ok()) {
                             std::lock_guard lock(mu_);
                             entries_.erase(name);
                           }
                           done(std::move(r));
                         });
}

Result<std::vector<ScheduleView>> Schedules::List() const {
  std::vector<ScheduleView> out;
  LEDGERQ_RETURN_IF_ERROR(store_->ScanSchedules([&](const ScheduleRecord& rec) {
    out.push_back({rec, 0});
  }));
  std::lock_guard lock(mu_);
  for (auto& v : out) {
    auto it = entries_.find(v.rec.name());
    if (it != entries_.end()) v.next_fire_us = it->second.next_us;
  }
  return out;
}

}  // namespace ledgerq::server
