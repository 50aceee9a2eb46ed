#include "client/worker.h"

#include <google/protobuf/util/time_util.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <thread>

namespace ledgerq::client {
namespace {

using google::protobuf::util::TimeUtil;
using Clock = std::chrono::steady_clock;

google::protobuf::Duration Dur(std::chrono::milliseconds ms) {
  return TimeUtil::MillisecondsToDuration(ms.count());
}

std::string DefaultWorkerId() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return std::string(host) + ":" + std::to_string(::getpid());
}

}  // namespace

Outcome Outcome::Complete(std::string result) {
  Outcome o;
  o.result = std::move(result);
  return o;
}

Outcome Outcome::Transient(std::string code, std::string message, std::string details) {
  Outcome o;
  o.kind = Kind::kFailTransient;
  o.code = std::move(code);
  o.message = std::move(message);
  o.details = std::move(details);
  return o;
}

Outcome Outcome::Permanent(std::string code, std::string message, std::string details) {
  Outcome o = Transient(std::move(code), std::move(message), std::move(details));
  o.kind = Kind::kFailPermanent;
  return o;
}

Outcome Outcome::Release(std::chrono::milliseconds delay) {
  Outcome o;
  o.kind = Kind::kRelease;
  o.release_delay = delay;
  return o;
}

const std::string* JobContext::checkpoint() const {
  return leased_.checkpoint().empty() ? nullptr : &leased_.checkpoint();
}

bool JobContext::stopping() const { return worker_->stopping(); }

Status JobContext::Checkpoint(std::string bytes) {
  std::lock_guard lock(worker_->mu_);
  Status st = worker_->SendHeartbeat({this}, &bytes);
  if (st.ok()) leased_.set_checkpoint(std::move(bytes));
  return st;
}

Worker::Worker(WorkerOptions options)
    : options_(std::move(options)), client_([this] {
        ClientOptions o = options_.security;
        o.server = options_.server;
        return o;
      }()) {
  if (options_.worker_id.empty()) options_.worker_id = DefaultWorkerId();
}

Worker::~Worker() { Stop(); }

void Worker::Handle(const std::string& type, Handler handler) {
  handlers_[type] = std::move(handler);
}

void Worker::HandleAny(Handler handler) { fallback_ = std::move(handler); }

void Worker::Stop() {
  stopping_ = true;
  std::lock_guard lock(mu_);
  for (auto* ctx : lease_calls_) ctx->TryCancel();  // parked long-polls return now
}

Status Worker::Run() {
  if (options_.queues.empty()) return Status::InvalidArgument("queues: give at least one queue");
  if (options_.concurrency < 1 || options_.concurrency > 1024) {
    return Status::InvalidArgument("concurrency: must be between 1 and 1024");
  }
  if (options_.lease < std::chrono::seconds(1)) {
    return Status::InvalidArgument("lease: must be at least 1s");
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < options_.concurrency; ++i) threads.emplace_back([this] { Loop(); });
  std::thread heartbeats([this] { HeartbeatLoop(); });
  for (auto& t : threads) t.join();
  heartbeats.join();
  return Status::Ok();
}

void Worker::Loop() {
  while (!stopping_) {
    v1::LeaseRequest req;
    for (const auto& q : options_.queues) req.add_queues(q);
    req.set_worker_id(options_.worker_id);
    req.set_max_jobs(1);
    *req.mutable_lease_duration() = Dur(options_.lease);
    *req.mutable_wait() = Dur(options_.poll_wait);
    grpc::ClientContext ctx;
    client_.Authorize(&ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + options_.poll_wait +
                     std::chrono::seconds(10));
    {
      std::lock_guard lock(mu_);
      if (stopping_) break;
      lease_calls_.push_back(&ctx);
    }
    v1::LeaseResponse resp;
    grpc::Status st = client_.workers()->Lease(&ctx, req, &resp);
    {
      std::lock_guard lock(mu_);
      lease_calls_.erase(std::find(lease_calls_.begin(), lease_calls_.end(), &ctx));
    }
    if (!st.ok()) {
      if (stopping_) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));  // server away: back off
      continue;
    }
    for (auto& leased : *resp.mutable_jobs()) Process(std::move(leased));
  }
}

void Worker::Process(v1::LeasedJob leased) {
  JobContext ctx(this, leased);
  ctx.next_heartbeat_ = Clock::now() + options_.lease / 3;
  {
    std::lock_guard lock(mu_);
    running_.push_back(&ctx);
  }
  Outcome outcome;
  auto it = handlers_.find(leased.job().type());
  const Handler* handler = it != handlers_.end() ? &it->second : (fallback_ ? &fallback_ : nullptr);
  if (!handler) {
    outcome =
        Outcome::Transient("NO_HANDLER", "worker " + options_.worker_id +
                                             " has no handler for type " + leased.job().type());
  } else {
    try {
      outcome = (*handler)(ctx);
    } catch (const std::exception& e) {
      outcome = Outcome::Transient("EXCEPTION", e.what());
    } catch (...) {
      outcome = Outcome::Transient("EXCEPTION", "unknown exception");
    }
  }
  {
    std::lock_guard lock(mu_);
    running_.erase(std::find(running_.begin(), running_.end(), &ctx));
  }
  Status st = Report(leased, outcome);
  if (options_.on_done) options_.on_done(leased, outcome, st);
}

Status Worker::Report(const v1::LeasedJob& leased, const Outcome& o) {
  // A report may meet a server that is restarting: retry for a while; the token makes a repeat
  // harmless (a repeated Complete gets the first answer).
  for (int attempt = 0;; ++attempt) {
    Result<v1::JobResponse> r = Status::Internal("unreachable");
    switch (o.kind) {
      case Outcome::Kind::kComplete: {
        v1::CompleteRequest req;
        *req.mutable_token() = leased.token();
        req.set_result(o.result);
        r = client_.Complete(req);
        break;
      }
      case Outcome::Kind::kFailTransient:
      case Outcome::Kind::kFailPermanent: {
        v1::FailRequest req;
        *req.mutable_token() = leased.token();
        auto* e = req.mutable_error();
        e->set_kind(o.kind == Outcome::Kind::kFailPermanent ? v1::ERROR_KIND_PERMANENT
                                                            : v1::ERROR_KIND_TRANSIENT);
        e->set_code(o.code);
        e->set_message(o.message.substr(0, 4096));
        e->set_details(o.details.substr(0, 16384));
        if (o.retry_after) *req.mutable_retry_after() = Dur(*o.retry_after);
        r = client_.Fail(req);
        break;
      }
      case Outcome::Kind::kRelease: {
        v1::ReleaseRequest req;
        *req.mutable_token() = leased.token();
        *req.mutable_delay() = Dur(o.release_delay);
        r = client_.Release(req);
        break;
      }
    }
    if (r.ok() || r.status().code() != Code::kUnavailable || attempt >= 60) return r.status();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

// Called with mu_ held.
Status Worker::SendHeartbeat(std::vector<JobContext*> jobs, const std::string* checkpoint) {
  v1::HeartbeatRequest req;
  for (auto* j : jobs) *req.add_tokens() = j->token();
  *req.mutable_extend_by() = Dur(options_.lease);
  if (checkpoint) {
    req.set_checkpoint(*checkpoint);
    req.set_set_checkpoint(true);
  }
  auto r = client_.Heartbeat(req);
  if (!r.ok()) return r.status();
  for (size_t i = 0; i < jobs.size() && i < static_cast<size_t>(r->results_size()); ++i) {
    if (r->results(i).lease_lost()) jobs[i]->lost_ = true;
    jobs[i]->next_heartbeat_ = Clock::now() + options_.lease / 3;
  }
  return Status::Ok();
}

void Worker::HeartbeatLoop() {
  const auto tick = std::clamp<std::chrono::milliseconds>(
      options_.lease / 10, std::chrono::milliseconds(50), std::chrono::seconds(1));
  for (;;) {
    std::vector<JobContext*> due;
    bool idle = false;
    {
      std::lock_guard lock(mu_);
      const auto now = Clock::now();
      for (auto* j : running_) {
        if (j->next_heartbeat_ <= now && !j->lost_) due.push_back(j);
      }
      idle = running_.empty() && lease_calls_.empty();
      // Sent under the lock: no JobContext can leave running_ (and be destroyed) meanwhile.
      // A heartbeat is one short call for all due leases.
      if (!due.empty()) (void)SendHeartbeat(due, nullptr);
    }
    if (stopping_ && idle) return;
    std::this_thread::sleep_for(tick);
  }
}

}  // namespace ledgerq::client
