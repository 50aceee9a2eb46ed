// The AuditService (auditor and admin roles): online chain verification, export of raw events
// for archives, truncation of exported ranges (admin), and reconciliation of the log with the
// live job records and the dispatcher's counts. The work is done on the service's own threads,
// never on a gRPC thread: verification and reconciliation walk the whole log.
#pragma once

#include <boost/asio/thread_pool.hpp>
#include <chrono>

#include "common/clock.h"
#include "ledgerq/v1/ledgerq.grpc.pb.h"
#include "metrics/metrics.h"
#include "scheduler/dispatcher.h"
#include "server/auth.h"
#include "storage/job_store.h"
#include "storage/reconcile.h"

namespace ledgerq::server {

inline constexpr uint32_t kDefaultExportPage = 1000;
inline constexpr uint32_t kMaxExportPage = 10000;
// A page also stops once its events hold this many bytes (at least one event), so a page fits
// a client's default 4 MiB receive limit.
inline constexpr size_t kMaxExportPageBytes = 1 << 20;

class AuditServiceImpl final : public v1::AuditService::CallbackService {
 public:
  AuditServiceImpl(scheduler::Dispatcher* dispatcher, storage::JobStore* store,
                   metrics::Metrics* metrics, Clock* clock, const Authorizer* auth = nullptr);
  // Waits for audits in progress.
  ~AuditServiceImpl() override;

  grpc::ServerUnaryReactor* VerifyAudit(grpc::CallbackServerContext* ctx,
                                        const v1::VerifyAuditRequest* req,
                                        v1::VerifyAuditResponse* resp) override;
  grpc::ServerUnaryReactor* ExportAudit(grpc::CallbackServerContext* ctx,
                                        const v1::ExportAuditRequest* req,
                                        v1::ExportAuditResponse* resp) override;
  grpc::ServerUnaryReactor* TruncateAudit(grpc::CallbackServerContext* ctx,
                                          const v1::TruncateAuditRequest* req,
                                          v1::TruncateAuditResponse* resp) override;
  grpc::ServerUnaryReactor* Reconcile(grpc::CallbackServerContext* ctx,
                                      const v1::ReconcileRequest* req,
                                      v1::ReconcileResponse* resp) override;

  // The reconciliation itself (tests call it without gRPC). The dispatcher's counts trail
  // durable writes by a moment, so they are read together with a snapshot, on the dispatcher's
  // strand, and a gauge difference is reported only when it is the same in `rounds` reads
  // (in-flight transitions move the counts by varying amounts; a drift stays put).
  [[nodiscard]] Result<storage::RecountReport> RunReconcile(int rounds = 5);

 private:
  void Finish(grpc::ServerUnaryReactor* reactor, const char* method, const grpc::Status& st);

  scheduler::Dispatcher* dispatcher_;
  storage::JobStore* store_;
  metrics::Metrics* metrics_;
  Clock* clock_;
  const Authorizer* auth_;
  boost::asio::thread_pool pool_{2};
};

// The stored checkpoint as the API shows it.
v1::AuditCheckpoint ToApiCheckpoint(const storage::Checkpoint& cp);

// Why ExportAudit gives `caller` only the seq and hashes of `ev` ("scope" or "payload"), or ""
// when it gives the whole event (README, "Audit").
std::string AuditWithheld(const storage::EventBody& ev, const Caller& caller);

}  // namespace ledgerq::server
