// The C++ worker SDK. Register a handler per job type, then Run(): `concurrency` threads each
// long-poll for a job, run its handler and report the outcome with the job's fencing token,
// while one heartbeat thread extends every running lease at a third of its duration and carries
// checkpoints. Stop() stops leasing, lets running handlers finish (they can see stopping() and
// give their job back), and makes Run() return.
//
//   ledgerq::client::Worker w({.server = "127.0.0.1:7400", .queues = {"emails"}});
//   w.Handle("send", [](ledgerq::client::JobContext& job) {
//     send_mail(job.payload());
//     return ledgerq::client::Outcome::Complete();
//   });
//   w.Run();
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "client/client.h"

namespace ledgerq::client {

// What a handler decided about its job.
struct Outcome {
  enum class Kind { kComplete, kFailTransient, kFailPermanent, kRelease };
  Kind kind = Kind::kComplete;
  std::string result;                                    // kComplete
  std::string code, message, details;                    // failures
  std::optional<std::chrono::milliseconds> retry_after;  // kFailTransient
  std::chrono::milliseconds release_delay{0};            // kRelease

  static Outcome Complete(std::string result = {});
  static Outcome Transient(std::string code, std::string message, std::string details = {});
  static Outcome Permanent(std::string code, std::string message, std::string details = {});
  static Outcome Release(std::chrono::milliseconds delay = {});
};

class JobContext {
 public:
  const v1::Job& job() const { return leased_.job(); }
  const std::string& payload() const { return leased_.job().payload(); }
  uint32_t attempt() const { return leased_.token().attempt(); }
  const v1::LeaseToken& token() const { return leased_.token(); }
  const v1::LeasedJob& leased() const { return leased_; }
  // This attempt's W3C traceparent (the job's trace id, a span id of its own).
  const std::string& traceparent() const {
    return leased_.traceparent().empty() ? leased_.job().traceparent() : leased_.traceparent();
  }
  // The checkpoint an earlier attempt saved, if any.
  const std::string* checkpoint() const;
  // Saves a checkpoint durably (right away, with a heartbeat) for later attempts.
  [[nodiscard]] Status Checkpoint(std::string bytes);
  // The lease was lost (expired or moved on): whatever this attempt does will be refused.
  bool lease_lost() const { return lost_.load(); }
  // The worker is shutting down: finish quickly, or return Outcome::Release().
  bool stopping() const;

 private:
  friend class Worker;
  JobContext(class Worker* w, v1::LeasedJob leased) : worker_(w), leased_(std::move(leased)) {}
  class Worker* worker_;
  v1::LeasedJob leased_;
  std::atomic<bool> lost_{false};
  std::chrono::steady_clock::time_point next_heartbeat_;
};

using Handler = std::function<Outcome(JobContext&)>;

struct WorkerOptions {
  std::string server = "127.0.0.1:7400";
  std::vector<std::string> queues;
  std::string worker_id;  // default: hostname:pid
  int concurrency = 4;
  std::chrono::milliseconds lease{30'000};
  std::chrono::milliseconds poll_wait{20'000};
  // Called for every job with its outcome, after the server answered (for logs, tests).
  std::function<void(const v1::LeasedJob&, const Outcome&, const Status&)> on_done;
  // Token and TLS (see LoadSecurity); its `server` is ignored in favour of the one above.
  ClientOptions security;
};

class Worker {
 public:
  explicit Worker(WorkerOptions options);
  ~Worker();

  void Handle(const std::string& type, Handler handler);
  // Used for types without their own handler. Without it, such jobs fail transiently with
  // code NO_HANDLER, so that a worker that knows the type may take the retry.
  void HandleAny(Handler handler);

  // Blocks until Stop() and every running handler has finished. Errors only for bad options.
  [[nodiscard]] Status Run();
  void Stop();
  bool stopping() const { return stopping_.load(); }
  const std::string& worker_id() const { return options_.worker_id; }

 private:
  friend class JobContext;
  void Loop();
  void HeartbeatLoop();
  void Process(v1::LeasedJob leased);
  Status Report(const v1::LeasedJob& leased, const Outcome& outcome);
  Status SendHeartbeat(std::vector<JobContext*> jobs, const std::string* checkpoint);

  WorkerOptions options_;
  Client client_;
  std::map<std::string, Handler> handlers_;
  Handler fallback_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;  // guards running_ and lease_calls_
  std::vector<JobContext*> running_;
  std::vector<grpc::ClientContext*> lease_calls_;
};

}  // namespace ledgerq::client
