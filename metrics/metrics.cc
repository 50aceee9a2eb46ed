#include "metrics/metrics.h"

#include <prometheus/text_serializer.h>

namespace ledgerq::metrics {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

template <typename Builder>
auto& Make(Builder b, const char* name, const char* help, prometheus::Registry& r) {
  return b.Name(name).Help(help).Register(r);
}

// Seconds, from 1 ms to 1 h: job waits and runs span that whole range.
const Histogram::BucketBoundaries& JobSecondsBuckets() {
  static const Histogram::BucketBoundaries kBuckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                    0.1,   0.25,   0.5,   1,    2.5,   5,
                                                    10,    30,     60,    300,  900,   3600};
  return kBuckets;
}

}  // namespace

Metrics::Metrics(const std::string& version)
    : registry_(std::make_shared<prometheus::Registry>()),
      enqueued_(Make(BuildCounter(), "ledgerq_jobs_enqueued_total",
                     "Jobs created by Enqueue or EnqueueBatch", *registry_)),
      deduplicated_(Make(BuildCounter(), "ledgerq_jobs_deduplicated_total",
                         "Submissions answered with an existing job by idempotency key",
                         *registry_)),
      cancelled_(Make(BuildCounter(), "ledgerq_jobs_cancelled_total",
                      "Jobs cancelled before they ran", *registry_)),
      leased_(Make(BuildCounter(), "ledgerq_jobs_leased_total", "Leases granted (attempts started)",
                   *registry_)),
      completed_(
          Make(BuildCounter(), "ledgerq_jobs_completed_total", "Jobs completed", *registry_)),
      failed_(Make(BuildCounter(), "ledgerq_jobs_failed_total",
                   "Attempts reported failed by workers, by kind (transient or permanent)",
                   *registry_)),
      errors_(Make(BuildCounter(), "ledgerq_job_errors_total",
                   "Failed attempts by error code (at most 20 codes per queue and type; the rest "
                   "as \"other\")",
                   *registry_)),
      retried_(Make(BuildCounter(), "ledgerq_jobs_retried_total",
                    "Retries scheduled after a transient failure or an expired lease", *registry_)),
      dead_lettered_(Make(BuildCounter(), "ledgerq_jobs_dead_lettered_total",
                          "Jobs moved to the dead letters, by reason", *registry_)),
      redriven_(Make(BuildCounter(), "ledgerq_jobs_redriven_total",
                     "Dead jobs moved back to READY by an operator", *registry_)),
      lease_expired_(Make(BuildCounter(), "ledgerq_lease_expired_total",
                          "Leases that expired without a heartbeat", *registry_)),
      grpc_requests_(Make(BuildCounter(), "ledgerq_grpc_requests_total",
                          "gRPC requests handled, by method and status code", *registry_)),
      queue_wait_(Make(BuildHistogram(), "ledgerq_queue_wait_seconds",
                       "Time from a job becoming ready to its lease", *registry_)),
      attempt_duration_(Make(BuildHistogram(), "ledgerq_attempt_duration_seconds",
                             "Time from a lease to its completion, failure or expiry", *registry_)),
      end_to_end_(Make(BuildHistogram(), "ledgerq_job_end_to_end_seconds",
                       "Time from submission to completion", *registry_)),
      jobs_(Make(BuildGauge(), "ledgerq_jobs", "Jobs by queue and state", *registry_)),
      oldest_ready_(Make(BuildGauge(), "ledgerq_queue_oldest_ready_age_seconds",
                         "Age of the oldest READY job of the queue (0 when none)", *registry_)),
      paused_(Make(BuildGauge(), "ledgerq_queue_paused", "1 when the queue is paused", *registry_)),
      held_back_(Make(BuildGauge(), "ledgerq_queue_held_back",
                      "Ready jobs a flow-control limit or an open circuit holds back", *registry_)),
      circuit_state_(Make(BuildGauge(), "ledgerq_circuit_state",
                          "1 for the state each (queue, type) circuit breaker is in", *registry_)),
      circuit_changes_(Make(BuildCounter(), "ledgerq_circuit_transitions_total",
                            "Circuit breaker state changes, by the state entered", *registry_)),
      active_leases_(
          Make(BuildGauge(), "ledgerq_active_leases", "Leases currently held", *registry_).Add({})),
      parked_polls_(Make(BuildGauge(), "ledgerq_parked_long_polls", "Lease calls waiting for a job",
                         *registry_)
                        .Add({})),
      sst_bytes_(Make(BuildGauge(), "ledgerq_rocksdb_live_sst_bytes",
                      "Bytes of live RocksDB SST files", *registry_)
                     .Add({})),
      pending_compaction_(Make(BuildGauge(), "ledgerq_rocksdb_pending_compaction_bytes",
                               "RocksDB's estimate of bytes compaction still has to rewrite",
                               *registry_)
                              .Add({})),
      writes_refused_(Make(BuildGauge(), "ledgerq_store_writes_refused",
                           "1 while the store refuses writes (disk full, failed fsync); reads "
                           "still work",
                           *registry_)
                          .Add({})),
      listener_up_(Make(BuildGauge(), "ledgerq_grpc_listener_up",
                        "1 while the gRPC listener accepts connections (a loopback probe every "
                        "2 s); 0 when it has stopped (CVE-2023-4785)",
                        *registry_)
                       .Add({})),
      open_fds_(Make(BuildGauge(), "ledgerq_open_fds",
                     "File descriptors open in ledgerqd (connections, files)", *registry_)
                    .Add({})),
      wal_sync_seconds_(
          Make(BuildHistogram(), "ledgerq_wal_sync_duration_seconds",
               "Duration of one fsync of the write-ahead log (shared by every group written "
               "since the previous one)",
               *registry_)
              .Add({}, Histogram::BucketBoundaries{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                   0.01, 0.025, 0.05, 0.1, 0.25, 1})),
      group_commit_size_(
          Make(BuildHistogram(), "ledgerq_group_commit_transitions",
               "Transitions (requests) sharing one group write", *registry_)
              .Add({}, Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024})),
      purged_payloads_(Make(BuildCounter(), "ledgerq_retention_purged_payloads_total",
                            "Finished jobs whose payload and result retention purged", *registry_)
                           .Add({})),
      removed_records_(Make(BuildCounter(), "ledgerq_retention_removed_records_total",
                            "Finished job records retention removed", *registry_)
                           .Add({})),
      expired_keys_(Make(BuildCounter(), "ledgerq_retention_expired_keys_total",
                         "Idempotency keys deleted after their dedup window", *registry_)
                        .Add({})),
      retention_sweep_seconds_(
          Make(BuildHistogram(), "ledgerq_retention_sweep_duration_seconds",
               "Duration of one retention sweep (all its batches)", *registry_)
              .Add({}, Histogram::BucketBoundaries{0.001, 0.01, 0.1, 0.5, 1, 5, 15, 60, 300})),
      archived_events_(Make(BuildCounter(), "ledgerq_log_archived_events_total",
                            "Log events exported to an archive file and removed from the log",
                            *registry_)
                           .Add({})),
      archives_(Make(BuildCounter(), "ledgerq_log_archives_total",
                     "Archive files written and truncated from the log", *registry_)
                    .Add({})),
      archive_failures_(Make(BuildCounter(), "ledgerq_log_archive_failures_total",
                             "Automatic archiving runs that failed (see the log)", *registry_)
                            .Add({})) {
  Make(BuildGauge(), "ledgerq_build_info", "Build information; the value is always 1", *registry_)
      .Add({{"version", version}})
      .Set(1);
}

Metrics::TypeSeries& Metrics::For(const std::string& queue, const std::string& type) {
  auto& slot = series_[{queue, type}];
  if (!slot) {
    const Labels l{{"queue", queue}, {"type", type}};
    auto with = [&](const char* key, const char* value) {
      Labels x = l;
      x[key] = value;
      return x;
    };
    slot = std::make_unique<TypeSeries>(TypeSeries{&enqueued_.Add(l),
                                                   &deduplicated_.Add(l),
                                                   &cancelled_.Add(l),
                                                   &leased_.Add(l),
                                                   &completed_.Add(l),
                                                   &retried_.Add(l),
                                                   &redriven_.Add(l),
                                                   &lease_expired_.Add(l),
                                                   &failed_.Add(with("kind", "transient")),
                                                   &failed_.Add(with("kind", "permanent")),
                                                   &queue_wait_.Add(l, JobSecondsBuckets()),
                                                   &attempt_duration_.Add(l, JobSecondsBuckets()),
                                                   &end_to_end_.Add(l, JobSecondsBuckets()),
                                                   {},
                                                   {}});
  }
  return *slot;
}

void Metrics::JobEnqueued(const std::string& queue, const std::string& type) {
  std::lock_guard lock(mu_);
  For(queue, type).enqueued->Increment();
}

void Metrics::JobDeduplicated(const std::string& queue, const std::string& type) {
  std::lock_guard lock(mu_);
  For(queue, type).deduplicated->Increment();
}

void Metrics::JobCancelled(const std::string& queue, const std::string& type) {
  std::lock_guard lock(mu_);
  For(queue, type).cancelled->Increment();
}

void Metrics::JobLeased(const std::string& queue, const std::string& type, double wait_seconds) {
  std::lock_guard lock(mu_);
  auto& s = For(queue, type);
  s.leased->Increment();
  if (wait_seconds >= 0) s.queue_wait->Observe(wait_seconds);
}

void Metrics::JobCompleted(const std::string& queue, const std::string& type,
                           double attempt_seconds, double end_to_end_seconds) {
  std::lock_guard lock(mu_);
  auto& s = For(queue, type);
  s.completed->Increment();
  if (attempt_seconds >= 0) s.attempt->Observe(attempt_seconds);
  if (end_to_end_seconds >= 0) s.end_to_end->Observe(end_to_end_seconds);
}

void Metrics::JobFailed(const std::string& queue, const std::string& type, const std::string& kind,
                        const std::string& code, double attempt_seconds) {
  std::lock_guard lock(mu_);
  auto& s = For(queue, type);
  (kind == "permanent" ? s.failed_permanent : s.failed_transient)->Increment();
  auto it = s.errors_by_code.find(code);
  if (it == s.errors_by_code.end()) {
    // Error codes are the workers' words: keep a bounded set per queue and type.
    const size_t real = s.errors_by_code.size() - s.errors_by_code.count("other");
    const bool room = real < kMaxErrorCodes;
    const std::string label = room && code != "other" ? code : "other";
    it = s.errors_by_code.find(label);
    if (it == s.errors_by_code.end()) {
      it = s.errors_by_code
               .emplace(label, &errors_.Add({{"queue", queue}, {"type", type}, {"code", label}}))
               .first;
    }
  }
  it->second->Increment();
  if (attempt_seconds >= 0) s.attempt->Observe(attempt_seconds);
}

void Metrics::LeaseExpired(const std::string& queue, const std::string& type,
                           double attempt_seconds) {
  std::lock_guard lock(mu_);
  auto& s = For(queue, type);
  s.lease_expired->Increment();
  if (attempt_seconds >= 0) s.attempt->Observe(attempt_seconds);
}

void Metrics::JobRetried(const std::string& queue, const std::string& type) {
  std::lock_guard lock(mu_);
  For(queue, type).retried->Increment();
}

void Metrics::JobDeadLettered(const std::string& queue, const std::string& type,
                              const std::string& reason) {
  std::lock_guard lock(mu_);
  auto& s = For(queue, type);
  auto it = s.dead_by_reason.find(reason);
  if (it == s.dead_by_reason.end()) {
    it = s.dead_by_reason
             .emplace(reason,
                      &dead_lettered_.Add({{"queue", queue}, {"type", type}, {"reason", reason}}))
             .first;
  }
  it->second->Increment();
}

void Metrics::JobRedriven(const std::string& queue, const std::string& type) {
  std::lock_guard lock(mu_);
  For(queue, type).redriven->Increment();
}

void Metrics::GrpcRequest(const std::string& method, const char* code) {
  grpc_requests_.Add({{"method", method}, {"code", code}}).Increment();
}

void Metrics::GroupWritten(size_t ops) { group_commit_size_.Observe(static_cast<double>(ops)); }

void Metrics::WalSynced(double seconds) { wal_sync_seconds_.Observe(seconds); }

void Metrics::RetentionSwept(uint64_t purged_payloads, uint64_t removed_records,
                             uint64_t expired_keys, double seconds) {
  purged_payloads_.Increment(static_cast<double>(purged_payloads));
  removed_records_.Increment(static_cast<double>(removed_records));
  expired_keys_.Increment(static_cast<double>(expired_keys));
  retention_sweep_seconds_.Observe(seconds);
}

void Metrics::LogArchived(uint64_t events) {
  archived_events_.Increment(static_cast<double>(events));
  archives_.Increment();
}

void Metrics::ArchiveFailed() { archive_failures_.Increment(); }

void Metrics::SetQueues(const std::vector<QueueGauges>& queues) {
  for (const auto& q : queues) {
    const std::pair<const char*, double> states[] = {
        {"scheduled", q.scheduled}, {"ready", q.ready}, {"leased", q.leased},
        {"succeeded", q.succeeded}, {"dead", q.dead},   {"cancelled", q.cancelled}};
    for (const auto& [state, n] : states) jobs_.Add({{"queue", q.queue}, {"state", state}}).Set(n);
    oldest_ready_.Add({{"queue", q.queue}}).Set(q.oldest_ready_age_seconds);
    paused_.Add({{"queue", q.queue}}).Set(q.paused ? 1 : 0);
    held_back_.Add({{"queue", q.queue}}).Set(q.held_back);
    for (const auto& c : q.circuits) {
      for (const char* state : {"closed", "open", "half_open"}) {
        circuit_state_.Add({{"queue", q.queue}, {"type", c.type}, {"state", state}})
            .Set(c.state == state ? 1 : 0);
      }
    }
  }
}

void Metrics::CircuitChanged(const std::string& queue, const std::string& type,
                             const std::string& to) {
  circuit_changes_.Add({{"queue", queue}, {"type", type}, {"to", to}}).Increment();
}

void Metrics::SetDispatcher(double active_leases, double parked_polls) {
  active_leases_.Set(active_leases);
  parked_polls_.Set(parked_polls);
}

void Metrics::SetStorage(double live_sst_bytes, double pending_compaction_bytes,
                         bool writes_refused) {
  writes_refused_.Set(writes_refused ? 1 : 0);
  sst_bytes_.Set(live_sst_bytes);
  pending_compaction_.Set(pending_compaction_bytes);
}

void Metrics::SetListener(bool accepting, double open_fds) {
  listener_up_.Set(accepting ? 1 : 0);
  open_fds_.Set(open_fds);
}

std::string Metrics::Expose() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace ledgerq::metrics
