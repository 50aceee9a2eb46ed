// metrics/ owns the Prometheus registry: every module records into one Metrics object and the
// HTTP listener serves Expose(). It is a leaf: it depends on nothing else of ledgerq.
// Label values are bounded: queue and job type (operator-controlled names), gRPC method and
// status code. Never a job id, key, payload or other per-job value.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

namespace ledgerq::metrics {

class Metrics {
 public:
  explicit Metrics(const std::string& version);

  void JobEnqueued(const std::string& queue, const std::string& type);
  void JobDeduplicated(const std::string& queue, const std::string& type);
  void JobCancelled(const std::string& queue, const std::string& type);
  void GrpcRequest(const std::string& method, const char* code);
  void GroupWritten(size_t ops);
  void WalSynced(double seconds);

  // The Prometheus text exposition of everything recorded so far.
  std::string Expose() const;
  prometheus::Registry& registry() { return *registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& enqueued_;
  prometheus::Family<prometheus::Counter>& deduplicated_;
  prometheus::Family<prometheus::Counter>& cancelled_;
  prometheus::Family<prometheus::Counter>& grpc_requests_;
  prometheus::Histogram& wal_write_seconds_;
  prometheus::Histogram& group_commit_size_;
};

}  // namespace ledgerq::metrics
