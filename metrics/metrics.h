// metrics/ owns the Prometheus registry: every module records into one Metrics object and the
// HTTP listener serves Expose(). It is a leaf: it depends on nothing else of ledgerq, so callers
// pass plain names and numbers.
//
// Label values are bounded: queue and job type (operator-controlled names), gRPC method and
// status code, a closed set of kinds, reasons and states, and error codes capped per queue and
// type (kMaxErrorCodes distinct codes, the rest counted as "other"). Never a job id, key,
// payload or any other per-job value.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace ledgerq::metrics {

inline constexpr size_t kMaxErrorCodes = 20;

struct QueueGauges {
  std::string queue;
  bool paused = false;
  double scheduled = 0, ready = 0, leased = 0, succeeded = 0, dead = 0, cancelled = 0;
  double oldest_ready_age_seconds = 0;
  double held_back = 0;  // ready jobs a limit or an open circuit holds back
  struct Circuit {
    std::string type;
    std::string state;  // closed | open | half_open
  };
  std::vector<Circuit> circuits;
};

class Metrics {
 public:
  explicit Metrics(const std::string& version);

  // Lifecycle counters, by queue and job type.
  void JobEnqueued(const std::string& queue, const std::string& type);
  void JobDeduplicated(const std::string& queue, const std::string& type);
  void JobCancelled(const std::string& queue, const std::string& type);
  void JobLeased(const std::string& queue, const std::string& type, double wait_seconds);
  void JobCompleted(const std::string& queue, const std::string& type, double attempt_seconds,
                    double end_to_end_seconds);
  // kind: "transient" or "permanent"; attempt_seconds < 0 when unknown.
  void JobFailed(const std::string& queue, const std::string& type, const std::string& kind,
                 const std::string& code, double attempt_seconds);
  void LeaseExpired(const std::string& queue, const std::string& type, double attempt_seconds);
  void JobRetried(const std::string& queue, const std::string& type);
  void JobDeadLettered(const std::string& queue, const std::string& type,
                       const std::string& reason);
  void JobRedriven(const std::string& queue, const std::string& type);

  void GrpcRequest(const std::string& method, const char* code);
  void GroupWritten(size_t ops);
  void WalSynced(double seconds);
  // Retention and archiving, from the daemon's housekeeping thread: one call per sweep (its
  // counts and duration) and one per archive written and truncated (its events).
  void RetentionSwept(uint64_t purged_payloads, uint64_t removed_records, uint64_t expired_keys,
                      double seconds);
  void LogArchived(uint64_t events);
  void ArchiveFailed();

  // Point-in-time state, refreshed by the daemon about once a second.
  void SetQueues(const std::vector<QueueGauges>& queues);
  // A circuit breaker changed state (`to`: closed | open | half_open).
  void CircuitChanged(const std::string& queue, const std::string& type, const std::string& to);
  void SetDispatcher(double active_leases, double parked_polls);
  // `writes_refused`: the store refuses writes now (disk full, failed fsync); see /readyz.
  void SetStorage(double live_sst_bytes, double pending_compaction_bytes, bool writes_refused);
  // The gRPC listener watchdog's last probe (1 accepting, 0 not) and the process's open files.
  void SetListener(bool accepting, double open_fds);

  // The Prometheus text exposition of everything recorded so far.
  std::string Expose() const;
  prometheus::Registry& registry() { return *registry_; }

 private:
  using Labels = std::map<std::string, std::string>;

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& enqueued_;
  prometheus::Family<prometheus::Counter>& deduplicated_;
  prometheus::Family<prometheus::Counter>& cancelled_;
  prometheus::Family<prometheus::Counter>& leased_;
  prometheus::Family<prometheus::Counter>& completed_;
  prometheus::Family<prometheus::Counter>& failed_;
  prometheus::Family<prometheus::Counter>& errors_;
  prometheus::Family<prometheus::Counter>& retried_;
  prometheus::Family<prometheus::Counter>& dead_lettered_;
  prometheus::Family<prometheus::Counter>& redriven_;
  prometheus::Family<prometheus::Counter>& lease_expired_;
  prometheus::Family<prometheus::Counter>& grpc_requests_;
  prometheus::Family<prometheus::Histogram>& queue_wait_;
  prometheus::Family<prometheus::Histogram>& attempt_duration_;
  prometheus::Family<prometheus::Histogram>& end_to_end_;
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Family<prometheus::Gauge>& oldest_ready_;
  prometheus::Family<prometheus::Gauge>& paused_;
  prometheus::Family<prometheus::Gauge>& held_back_;
  prometheus::Family<prometheus::Gauge>& circuit_state_;
  prometheus::Family<prometheus::Counter>& circuit_changes_;
  prometheus::Gauge& active_leases_;
  prometheus::Gauge& parked_polls_;
  prometheus::Gauge& sst_bytes_;
  prometheus::Gauge& pending_compaction_;
  prometheus::Gauge& writes_refused_;
  prometheus::Gauge& listener_up_;
  prometheus::Gauge& open_fds_;
  prometheus::Histogram& wal_sync_seconds_;
  prometheus::Histogram& group_commit_size_;
  prometheus::Counter& purged_payloads_;
  prometheus::Counter& removed_records_;
  prometheus::Counter& expired_keys_;
  prometheus::Histogram& retention_sweep_seconds_;
  prometheus::Counter& archived_events_;
  prometheus::Counter& archives_;
  prometheus::Counter& archive_failures_;

  // The series of one (queue, type), resolved once: a lifecycle event then costs one lookup
  // and a few atomic adds instead of building label maps.
  struct TypeSeries {
    prometheus::Counter *enqueued, *deduplicated, *cancelled, *leased, *completed, *retried,
        *redriven, *lease_expired, *failed_transient, *failed_permanent;
    prometheus::Histogram *queue_wait, *attempt, *end_to_end;
    std::map<std::string, prometheus::Counter*> dead_by_reason;
    std::map<std::string, prometheus::Counter*> errors_by_code;  // at most kMaxErrorCodes + 1
  };
  TypeSeries& For(const std::string& queue, const std::string& type);  // with mu_ held

  std::mutex mu_;
  std::map<std::pair<std::string, std::string>, std::unique_ptr<TypeSeries>> series_;
};

}  // namespace ledgerq::metrics
