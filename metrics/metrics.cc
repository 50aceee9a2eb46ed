#include "metrics/metrics.h"

#include <prometheus/text_serializer.h>

namespace ledgerq::metrics {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

Metrics::Metrics(const std::string& version)
    : registry_(std::make_shared<prometheus::Registry>()),
      enqueued_(BuildCounter()
                    .Name("ledgerq_jobs_enqueued_total")
                    .Help("Jobs created by Enqueue or EnqueueBatch")
                    .Register(*registry_)),
      deduplicated_(BuildCounter()
                        .Name("ledgerq_jobs_deduplicated_total")
                        .Help("Submissions answered with an existing job by idempotency key")
                        .Register(*registry_)),
      cancelled_(BuildCounter()
                     .Name("ledgerq_jobs_cancelled_total")
                     .Help("Jobs cancelled before they ran")
                     .Register(*registry_)),
      grpc_requests_(BuildCounter()
                         .Name("ledgerq_grpc_requests_total")
                         .Help("gRPC requests handled, by method and status code")
                         .Register(*registry_)),
      wal_write_seconds_(
          BuildHistogram()
              .Name("ledgerq_wal_sync_duration_seconds")
              .Help("Duration of one fsync of the write-ahead log (shared by every group written "
                    "since the previous one)")
              .Register(*registry_)
              .Add({}, prometheus::Histogram::BucketBoundaries{0.0001, 0.00025, 0.0005, 0.001,
                                                               0.0025, 0.005, 0.01, 0.025, 0.05,
                                                               0.1, 0.25, 1})),
      group_commit_size_(BuildHistogram()
                             .Name("ledgerq_group_commit_transitions")
                             .Help("Transitions (requests) sharing one group-commit write")
                             .Register(*registry_)
                             .Add({}, prometheus::Histogram::BucketBoundaries{
                                          1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024})) {
  BuildGauge()
      .Name("ledgerq_build_info")
      .Help("Build information; the value is always 1")
      .Register(*registry_)
      .Add({{"version", version}})
      .Set(1);
}

void Metrics::JobEnqueued(const std::string& queue, const std::string& type) {
  enqueued_.Add({{"queue", queue}, {"type", type}}).Increment();
}

void Metrics::JobDeduplicated(const std::string& queue, const std::string& type) {
  deduplicated_.Add({{"queue", queue}, {"type", type}}).Increment();
}

void Metrics::JobCancelled(const std::string& queue, const std::string& type) {
  cancelled_.Add({{"queue", queue}, {"type", type}}).Increment();
}

void Metrics::GrpcRequest(const std::string& method, const char* code) {
  grpc_requests_.Add({{"method", method}, {"code", code}}).Increment();
}

void Metrics::GroupWritten(size_t ops) { group_commit_size_.Observe(static_cast<double>(ops)); }

void Metrics::WalSynced(double seconds) { wal_write_seconds_.Observe(seconds); }

std::string Metrics::Expose() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace ledgerq::metrics
