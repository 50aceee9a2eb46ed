#include "server/audit_service.h"

#include <boost/asio/post.hpp>
#include <cstring>
#include <future>
#include <thread>

#include "server/job_mapping.h"
#include "server/job_service.h"

namespace ledgerq::server {
namespace {

namespace sv1 = ledgerq::storage::v1;

storage::GaugeCounts GaugeOf(const std::vector<scheduler::QueueStats>& qs) {
  storage::GaugeCounts g;
  for (const auto& q : qs) {
    g[{q.name, sv1::STATE_SCHEDULED}] = q.scheduled;
    g[{q.name, sv1::STATE_READY}] = q.ready;
    g[{q.name, sv1::STATE_LEASED}] = q.leased;
    g[{q.name, sv1::STATE_SUCCEEDED}] = q.succeeded;
    g[{q.name, sv1::STATE_DEAD}] = q.dead;
    g[{q.name, sv1::STATE_CANCELLED}] = q.cancelled;
  }
  return g;
}

std::string Bytes(const Digest& d) { return std::string(AsBytes(d)); }

}  // namespace

// Why the caller gets only the seq and hashes of an event, or "" when it gets all of it.
//   "scope":   a queue-scoped caller and an event of another queue, or of no queue (policy
//              changes, checkpoints: they speak of the whole daemon);
//   "payload": an event written before 2026-12, whose hashed body still holds a failed
//              attempt's masked payload snapshot, and a caller without payload access. (Newer
//              events hold only the snapshot's digest.)
std::string AuditWithheld(const storage::EventBody& ev, const Caller& caller) {
  const bool all_queues = caller.AllQueues(), payloads = caller.payloads();
  if (!all_queues && (ev.queue().empty() || !caller.AllowsQueue(ev.queue()))) return "scope";
  if (!payloads && ev.has_error() && !ev.error().payload_snapshot().empty()) return "payload";
  return {};
}

v1::AuditCheckpoint ToApiCheckpoint(const storage::Checkpoint& cp) {
  v1::AuditCheckpoint out;
  out.set_seq(cp.seq);
  if (cp.seq == 0) return out;
  out.set_hash(Bytes(cp.hash));
  *out.mutable_at() = TimestampFromMicros(cp.at_us);
  out.set_principal(cp.principal);
  return out;
}

AuditServiceImpl::AuditServiceImpl(scheduler::Dispatcher* dispatcher, storage::JobStore* store,
                                   metrics::Metrics* metrics, Clock* clock, const Authorizer* auth)
    : dispatcher_(dispatcher),
      store_(store),
      metrics_(metrics),
      clock_(clock),
      auth_(auth ? auth : NoAuth()) {}

AuditServiceImpl::~AuditServiceImpl() { pool_.join(); }

void AuditServiceImpl::Finish(grpc::ServerUnaryReactor* reactor, const char* method,
                              const grpc::Status& st) {
  FinishCall(metrics_, reactor, method, st);
}

grpc::ServerUnaryReactor* AuditServiceImpl::VerifyAudit(grpc::CallbackServerContext* ctx,
                                                        const v1::VerifyAuditRequest*,
                                                        v1::VerifyAuditResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  // AUTH: auditors and admins.
  if (auto a = auth_->Check(ctx, Permission::kAuditRead, "VerifyAudit", &caller); !a.ok()) {
    Finish(reactor, "VerifyAudit", a);
    return reactor;
  }
  // The whole chain: every queue's events. A queue-scoped auditor checks its export's links.
  if (auto a = auth_->CheckAllQueues(caller, "VerifyAudit"); !a.ok()) {
    Finish(reactor, "VerifyAudit", a);
    return reactor;
  }
  boost::asio::post(pool_, [this, reactor, resp] {
    auto report = store_->VerifyLog();
    if (!report.ok()) {
      Finish(reactor, "VerifyAudit", ToGrpcStatus(report.status()));
      return;
    }
    resp->set_ok(report->ok);
    resp->set_events(report->events);
    resp->set_head_seq(report->head_seq);
    resp->set_head_hash(Bytes(report->head));
    if (!report->ok) {
      resp->set_first_bad_seq(report->first_bad_seq);
      resp->set_problem(report->problem);
    }
    storage::Checkpoint cp = store_->GetCheckpoint();
    if (cp.seq != report->checkpoint_seq) {
      // Archived meanwhile: show the checkpoint the walk started from.
      cp = storage::Checkpoint{report->checkpoint_seq, report->checkpoint_hash, 0, {}};
    }
    *resp->mutable_checkpoint() = ToApiCheckpoint(cp);
    Finish(reactor, "VerifyAudit", grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* AuditServiceImpl::ExportAudit(grpc::CallbackServerContext* ctx,
                                                        const v1::ExportAuditRequest* req,
                                                        v1::ExportAuditResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  // AUTH: auditors and admins.
  if (auto a = auth_->Check(ctx, Permission::kAuditRead, "ExportAudit", &caller); !a.ok()) {
    Finish(reactor, "ExportAudit", a);
    return reactor;
  }
  if (req->page_size() > kMaxExportPage) {
    Finish(reactor, "ExportAudit",
           ToGrpcStatus(Status::InvalidArgument("page_size: " + std::to_string(req->page_size()) +
                                                " is above the limit of " +
                                                std::to_string(kMaxExportPage))));
    return reactor;
  }
  if (req->to_seq() != 0 && req->from_seq() > req->to_seq()) {
    Finish(
        reactor, "ExportAudit",
        ToGrpcStatus(Status::InvalidArgument("from_seq: " + std::to_string(req->from_seq()) +
                                             " is after to_seq " + std::to_string(req->to_seq()))));
    return reactor;
  }
  boost::asio::post(pool_, [this, reactor, req, resp, caller] {
    const bool payloads = caller.payloads();
    const uint32_t page = req->page_size() == 0 ? kDefaultExportPage : req->page_size();
    const storage::Checkpoint cp = store_->GetCheckpoint();
    auto view = store_->View();
    const uint64_t head = view->head_seq();
    const uint64_t to = req->to_seq() == 0 ? head : req->to_seq();
    if (to > head) {
      Finish(reactor, "ExportAudit",
             ToGrpcStatus(Status::InvalidArgument("to_seq: " + std::to_string(to) +
                                                  " is beyond the head of the log (" +
                                                  std::to_string(head) + ")")));
      return;
    }
    if (req->from_seq() != 0 && req->from_seq() <= cp.seq) {
      Finish(reactor, "ExportAudit",
             ToGrpcStatus(Status::FailedPrecondition(
                 "from_seq: events up to " + std::to_string(cp.seq) +
                 " were archived; the retained log starts at " + std::to_string(cp.seq + 1))));
      return;
    }
    size_t bytes = 0;
    uint64_t last = 0;
    bool more = false;
    Status st = view->ScanRawEvents(req->from_seq(), [&](const storage::RawEvent& raw) {
      if (raw.seq > to) return false;
      if (static_cast<uint32_t>(resp->events_size()) >= page ||
          (resp->events_size() > 0 && bytes + raw.body.size() > kMaxExportPageBytes)) {
        more = true;
        return false;
      }
      auto* ev = resp->add_events();
      ev->set_seq(raw.seq);
      ev->set_prev_hash(Bytes(raw.prev_hash));
      ev->set_hash(Bytes(raw.hash));
      const std::string withheld = AuditWithheld(raw.event, caller);
      if (!withheld.empty()) {
        ev->set_withheld(withheld);
        bytes += 200;
        last = raw.seq;
        return true;
      }
      ev->set_body(raw.body);
      *ev->mutable_event() = ToApiEvent(raw.event);
      if (!payloads) OmitPayload(ev->mutable_event());
      ev->set_job_id(raw.event.job_id());
      ev->set_queue(raw.event.queue());
      ev->set_job_type(raw.event.job_type());
      bytes += raw.body.size() + 200;
      last = raw.seq;
      return true;
    });
    if (!st.ok()) {
      Finish(reactor, "ExportAudit", ToGrpcStatus(st));
      return;
    }
    if (more) resp->set_next_seq(last + 1);
    *resp->mutable_checkpoint() = ToApiCheckpoint(cp);
    Finish(reactor, "ExportAudit", grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* AuditServiceImpl::TruncateAudit(grpc::CallbackServerContext* ctx,
                                                          const v1::TruncateAuditRequest* req,
                                                          v1::TruncateAuditResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  // AUTH: admins only.
  if (auto a = auth_->Check(ctx, Permission::kAuditTruncate, "TruncateAudit", &caller); !a.ok()) {
    Finish(reactor, "TruncateAudit", a);
    return reactor;
  }
  // Truncation removes every queue's events.
  if (auto a = auth_->CheckAllQueues(caller, "TruncateAudit"); !a.ok()) {
    Finish(reactor, "TruncateAudit", a);
    return reactor;
  }
  Status st;
  if (req->to_seq() == 0)
    st = Status::InvalidArgument("to_seq: must be given (the last event to remove)");
  if (st.ok() && req->to_hash().size() != 32) {
    st = Status::InvalidArgument("to_hash: must be the 32-byte SHA-256 hash of event to_seq, got " +
                                 std::to_string(req->to_hash().size()) + " bytes");
  }
  if (!st.ok()) {
    Finish(reactor, "TruncateAudit", ToGrpcStatus(st));
    return reactor;
  }
  Digest hash{};
  std::memcpy(hash.data(), req->to_hash().data(), 32);
  const uint64_t before = store_->GetCheckpoint().seq;
  store_->TruncateLog(req->to_seq(), hash, caller.name,
                      [this, reactor, resp, before](Result<storage::Checkpoint> r) {
                        if (r.ok()) {
                          *resp->mutable_checkpoint() = ToApiCheckpoint(*r);
                          resp->set_removed(r->seq - std::min(before, r->seq));
                        }
                        Finish(reactor, "TruncateAudit", ToGrpcStatus(r.status()));
                      });
  return reactor;
}

Result<storage::RecountReport> AuditServiceImpl::RunReconcile(int rounds) {
  struct Read {
    std::unique_ptr<storage::ReadView> view;
    storage::GaugeCounts gauge;
  };
  // (queue, state) -> records minus gauge, kept while it is the same in every read.
  std::map<storage::StateKey, int64_t> persistent;
  std::optional<storage::RecountReport> last;
  storage::GaugeCounts last_gauge;
  bool answered = true;
  for (int round = 0; round < std::max(1, rounds); ++round) {
    // The snapshot is taken on the dispatcher's strand, right where the counts are read, so the
    // two differ only by transitions whose answers are on their way to the strand.
    auto promise = std::make_shared<std::promise<Read>>();
    auto future = promise->get_future();
    storage::JobStore* store = store_;
    dispatcher_->ListQueues([promise, store](std::vector<scheduler::QueueStats> qs) {
      promise->set_value(Read{store->View(), GaugeOf(qs)});
    });
    Read read;
    if (future.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
      answered = false;  // stopping: compare the log with the records only
      read.view = store_->View();
    } else {
      read = future.get();
    }
    auto r = storage::Recount(*read.view, clock_->WallMicros());
    if (!r.ok()) return r.status();
    if (!answered) {
      r->notes.push_back(
          "the dispatcher did not answer within 5 s: the ledgerq_jobs gauge was "
          "not compared");
      return r;
    }
    auto now = storage::GaugeMismatches(read.gauge, *r);
    if (round == 0) {
      persistent = now;
    } else {
      // Transitions in flight (a lease being written) move a count for a moment and by a varying
      // amount under load; a drift stays the same from read to read.
      std::map<storage::StateKey, int64_t> same;
      for (const auto& [k, delta] : now) {
        auto it = persistent.find(k);
        if (it != persistent.end() && it->second == delta) same[k] = delta;
      }
      persistent.swap(same);
    }
    last = std::move(r).value();
    last_gauge = std::move(read.gauge);
    if (persistent.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100 * (round + 1)));
  }
  std::set<storage::StateKey> listed;
  for (const auto& [k, delta] : persistent) listed.insert(k);
  storage::CompareWithGauge(last_gauge, &*last, &listed);
  last->notes.push_back(
      "the ledgerq_jobs gauge is the dispatcher's count, read on its strand with the snapshot; "
      "a gauge difference is reported only when it is the same over " +
      std::to_string(std::max(1, rounds)) + " reads (due SCHEDULED jobs count as READY)");
  return std::move(*last);
}

grpc::ServerUnaryReactor* AuditServiceImpl::Reconcile(grpc::CallbackServerContext* ctx,
                                                      const v1::ReconcileRequest*,
                                                      v1::ReconcileResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  // AUTH: auditors and admins.
  if (auto a = auth_->Check(ctx, Permission::kAuditRead, "Reconcile", &caller); !a.ok()) {
    Finish(reactor, "Reconcile", a);
    return reactor;
  }
  boost::asio::post(pool_, [this, reactor, resp, caller] {
    auto r = RunReconcile();
    if (!r.ok()) {
      Finish(reactor, "Reconcile", ToGrpcStatus(r.status()));
      return;
    }
    if (!caller.AllQueues()) {
      // A queue-scoped caller sees its queues' counts and differences only.
      storage::ScopeRecount(&*r, [&caller](const std::string& q) { return caller.AllowsQueue(q); });
      resp->add_notes("counts and differences of the caller's queues only");
    }
    resp->set_ok(r->ok());
    for (const auto& [key, t] : r->counts) {
      auto* c = resp->add_counts();
      c->set_queue(key.first);
      c->set_state(static_cast<v1::JobState>(key.second));
      c->set_from_log(t.from_log);
      c->set_live(t.live);
      c->set_metrics(t.gauge);
    }
    for (const auto& d : r->differences) resp->add_differences(d);
    if (r->omitted_differences > 0) {
      resp->add_differences(std::to_string(r->omitted_differences) +
                            " more differences not listed");
    }
    resp->set_jobs_checked(r->jobs_checked);
    resp->set_events_checked(r->events_checked);
    for (const auto& n : r->notes) resp->add_notes(n);
    Finish(reactor, "Reconcile", grpc::Status::OK);
  });
  return reactor;
}

}  // namespace ledgerq::server
