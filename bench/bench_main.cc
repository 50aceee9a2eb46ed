// ledgerq-bench: closed-loop load against a running ledgerqd; prints figures, asserts nothing.
//   ledgerq-bench enqueue --server ADDR [--concurrency 64] [--duration 10s] [--batch 0|N]
//                         [--payload-bytes 100] [--no-keys] [--type T] [--object-payload]
//   ledgerq-bench cycle --server ADDR [--producers 32 | --rate N] [--workers 4]
//                       [--lease-batch 64] [--duration 10s]
//   ledgerq-bench wait-ready --server ADDR --http ADDR [--since-unix-ns T]
//   ledgerq-bench peer ... / echo-server / peer-table: the comparison with other queues, built
//                       with -DLEDGERQ_BENCH_PEERS=ON (see bench/peer.h, bench/peers/run.sh)
// Each of `concurrency` slots keeps exactly one call in flight (callback API, so the load
// generator stays cheap); a slot issues its next call as soon as the previous one answers.
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "bench/net.h"
#ifdef LEDGERQ_BENCH_PEERS
#include "bench/peer.h"
#endif
#include "bench/stats.h"
#include "common/duration.h"
#include "ledgerq/v1/ledgerq.grpc.pb.h"

namespace {

namespace v1 = ledgerq::v1;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string server = "127.0.0.1:7400";
  int concurrency = 64;
  std::string duration = "10s";
  int batch = 0;          // 0: unary Enqueue; N: EnqueueBatch with N items
  uint64_t max_jobs = 0;  // stop after this many jobs (0: run for the duration)
  size_t payload_bytes = 100;
  bool keys = true;
  int channels = 4;
  std::string queue = "bench";
  std::string type = "bench";
  // A JSON object {"customer": "...", "amount": 1250} of about payload_bytes, for measuring a
  // type policy's required-field checks; otherwise a JSON string.
  bool object_payload = false;
  bool json = false;
  std::string token;  // sent as "authorization: Bearer <token>" (ledgerqd --auth-file)
};

struct Slot {
  grpc::ClientContext* ctx = nullptr;
  v1::EnqueueRequest req;
  v1::EnqueueResponse resp;
  v1::EnqueueBatchRequest batch_req;
  v1::EnqueueBatchResponse batch_resp;
  Clock::time_point started;
  std::vector<double> latencies_us;
  uint64_t jobs = 0;
  uint64_t errors = 0;
  std::string first_error;
};

class EnqueueBench {
 public:
  explicit EnqueueBench(const Options& o) : o_(o) {
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(64 << 20);
    for (int i = 0; i < o.channels; ++i) {
      // Distinct channel args keep gRPC from sharing one connection between the channels.
      args.SetInt("ledgerq.bench.channel", i);
      stubs_.push_back(v1::JobService::NewStub(
          grpc::CreateCustomChannel(o.server, grpc::InsecureChannelCredentials(), args)));
    }
    payload_ = std::string(o.payload_bytes, 'x');
    if (o.object_payload) {
      const std::string shell = R"({"customer":"","amount":1250})";
      payload_ =
          R"({"customer":")" +
          std::string(o.payload_bytes > shell.size() ? o.payload_bytes - shell.size() : 1, 'c') +
          R"(","amount":1250})";
    } else if (o.payload_bytes >= 2) {
      payload_.front() = '"';
      payload_.back() = '"';
    }
  }

  int Run() {
    auto dur = ledgerq::ParseDuration(o_.duration, "--duration");
    if (!dur.ok()) {
      std::cerr << dur.status().message() << "\n";
      return 2;
    }
    slots_.resize(o_.concurrency);
    start_ = Clock::now();
    stop_at_ = start_ + *dur;
    outstanding_ = o_.concurrency;
    for (int i = 0; i < o_.concurrency; ++i) Issue(i);
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return outstanding_ == 0; });
    }
    const double secs = std::chrono::duration<double>(end_ - start_).count();
    std::vector<double> lat;
    uint64_t jobs = 0, errors = 0;
    std::string first_error;
    for (auto& s : slots_) {
      lat.insert(lat.end(), s.latencies_us.begin(), s.latencies_us.end());
      jobs += s.jobs;
      errors += s.errors;
      if (first_error.empty()) first_error = s.first_error;
    }
    const ledgerq::bench::LatencySummary l = ledgerq::bench::Summarize(lat);
    const char* mode = o_.batch ? "EnqueueBatch" : "Enqueue";
    if (o_.json) {
      nlohmann::json j{{"workload", o_.batch ? "enqueue_batch" : "enqueue_unary"},
                       {"batch", o_.batch},
                       {"concurrency", o_.concurrency},
                       {"payload_bytes", o_.payload_bytes},
                       {"seconds", secs},
                       {"jobs", jobs},
                       {"calls", l.count},
                       {"errors", errors},
                       {"jobs_per_sec", jobs / secs},
                       {"call_p50_ms", l.p50_ms},
                       {"call_p99_ms", l.p99_ms}};
      std::cout << j.dump() << "\n";
    } else {
      std::printf(
          "%s x%d, concurrency %d, payload %zu B, %.1f s: %llu jobs, %.0f jobs/s, "
          "call latency p50 %.2f ms p99 %.2f ms, errors %llu\n",
          mode, o_.batch ? o_.batch : 1, o_.concurrency, o_.payload_bytes, secs,
          static_cast<unsigned long long>(jobs), jobs / secs, l.p50_ms, l.p99_ms,
          static_cast<unsigned long long>(errors));
    }
    if (errors) std::fprintf(stderr, "first error: %s\n", first_error.c_str());
    return errors && jobs == 0 ? 1 : 0;
  }

 private:
  void Fill(v1::EnqueueRequest* r) {
    r->set_queue(o_.queue);
    r->set_type(o_.type);
    r->set_payload(payload_);
    if (o_.keys) r->set_idempotency_key("k" + std::to_string(next_key_++));
  }

  // Items for the slot's next call: the batch size (1 for unary), fewer near --jobs, 0 when
  // --jobs are all issued.
  [[nodiscard]] int Take() {
    const uint64_t want = o_.batch ? o_.batch : 1;
    if (o_.max_jobs == 0) return static_cast<int>(want);
    const uint64_t issued = issued_.fetch_add(want);
    if (issued >= o_.max_jobs) return 0;
    return static_cast<int>(std::min(want, o_.max_jobs - issued));
  }

  void Issue(int i) {
    Slot& s = slots_[i];
    const int items = Clock::now() >= stop_at_ ? 0 : Take();
    if (items == 0) {
      std::lock_guard lock(mu_);
      if (--outstanding_ == 0) {
        end_ = Clock::now();
        cv_.notify_all();
      }
      return;
    }
    delete s.ctx;
    s.ctx = new grpc::ClientContext();
    s.ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    if (!o_.token.empty()) s.ctx->AddMetadata("authorization", "Bearer " + o_.token);
    auto* stub = stubs_[i % stubs_.size()].get();
    s.started = Clock::now();
    if (o_.batch == 0) {
      s.req.Clear();
      Fill(&s.req);
      stub->async()->Enqueue(s.ctx, &s.req, &s.resp,
                             [this, i](grpc::Status st) { Done(i, st, 1); });
    } else {
      s.batch_req.Clear();
      for (int k = 0; k < items; ++k) Fill(s.batch_req.add_items());
      stub->async()->EnqueueBatch(s.ctx, &s.batch_req, &s.batch_resp,
                                  [this, i, items](grpc::Status st) { Done(i, st, items); });
    }
  }

  void Done(int i, const grpc::Status& st, int items) {
    Slot& s = slots_[i];
    auto us = std::chrono::duration<double, std::micro>(Clock::now() - s.started).count();
    if (st.ok()) {
      s.latencies_us.push_back(us);
      int ok = items;
      if (o_.batch) {
        for (const auto& r : s.batch_resp.results()) {
          if (r.has_error()) {
            --ok;
            ++s.errors;
            if (s.first_error.empty()) s.first_error = r.error().message();
          }
        }
      }
      s.jobs += ok;
    } else {
      ++s.errors;
      if (s.first_error.empty()) s.first_error = st.error_message();
    }
    Issue(i);
  }

  Options o_;
  std::vector<std::unique_ptr<v1::JobService::Stub>> stubs_;
  std::string payload_;
  std::vector<Slot> slots_;
  std::atomic<uint64_t> next_key_{0};
  std::atomic<uint64_t> issued_{0};
  Clock::time_point start_, stop_at_, end_;
  std::mutex mu_;
  std::condition_variable cv_;
  int outstanding_ = 0;
};

// ---------------------------------------------------------------------------------------------
// cycle: producers enqueue while workers lease in batches and complete every job.

struct CycleOptions {
  std::string server = "127.0.0.1:7400";
  int producers = 32;    // enqueue calls in flight (closed loop), when rate == 0
  double rate = 0;       // jobs/s offered by an open-loop producer; 0: closed loop
  int workers = 4;       // threads leasing
  int lease_batch = 64;  // max_jobs per Lease
  int completes_in_flight = 256;
  int enqueue_batch = 1;   // items per enqueue call (1: unary Enqueue)
  int complete_batch = 1;  // leases per complete call (1: unary Complete)
  std::string duration = "10s";
  size_t payload_bytes = 100;
  std::string queue = "cycle";
  bool json = false;
};

class CycleBench {
 public:
  explicit CycleBench(const CycleOptions& o) : o_(o) {
    grpc::ChannelArguments args;
    for (int i = 0; i < 4; ++i) {
      args.SetInt("ledgerq.bench.channel", i);
      auto ch = grpc::CreateCustomChannel(o.server, grpc::InsecureChannelCredentials(), args);
      job_stubs_.push_back(v1::JobService::NewStub(ch));
      worker_stubs_.push_back(v1::WorkerService::NewStub(ch));
    }
    payload_ = "\"" + std::string(o.payload_bytes > 2 ? o.payload_bytes - 2 : 0, 'x') + "\"";
  }

  int Run() {
    auto dur = ledgerq::ParseDuration(o_.duration, "--duration");
    if (!dur.ok()) {
      std::cerr << dur.status().message() << "\n";
      return 2;
    }
    start_ = Clock::now();
    stop_at_ = start_ + *dur;
    std::vector<std::thread> threads;
    for (int i = 0; i < o_.workers; ++i) threads.emplace_back([this, i] { WorkerLoop(i); });
    std::thread producer([this] { o_.rate > 0 ? OpenLoop() : ClosedLoop(); });
    producer.join();
    for (auto& t : threads) t.join();
    const double secs = std::chrono::duration<double>(Clock::now() - start_).count();
    std::vector<double> lat;
    {
      std::lock_guard lock(mu_);
      lat = latencies_us_;
    }
    const ledgerq::bench::LatencySummary l = ledgerq::bench::Summarize(lat);
    const double measured = std::chrono::duration<double>(*dur).count();
    if (o_.json) {
      nlohmann::json j{{"workload", "cycle"},
                       {"rate", o_.rate},
                       {"producers", o_.producers},
                       {"workers", o_.workers},
                       {"lease_batch", o_.lease_batch},
                       {"enqueue_batch", o_.enqueue_batch},
                       {"complete_batch", o_.complete_batch},
                       {"payload_bytes", o_.payload_bytes},
                       {"seconds", measured},
                       {"enqueued", enqueued_.load()},
                       {"completed", completed_.load()},
                       {"errors", errors_.load()},
                       {"completed_per_sec", completed_.load() / measured},
                       {"enqueue_to_lease_p50_ms", l.p50_ms},
                       {"enqueue_to_lease_p99_ms", l.p99_ms}};
      std::cout << j.dump() << "\n";
    } else {
      std::printf(
          "cycle (%s, enqueue x%d, complete x%d, %d workers x lease %d, payload %zu B, "
          "%.0f s): enqueued %llu, "
          "completed %llu = %.0f jobs/s through the full cycle; enqueue-to-lease p50 "
          "%.2f ms p99 %.2f ms; errors %llu (wall %.1f s)\n",
          o_.rate > 0 ? ("open loop " + std::to_string(int(o_.rate)) + "/s").c_str()
                      : ("closed loop x" + std::to_string(o_.producers)).c_str(),
          o_.enqueue_batch, o_.complete_batch, o_.workers, o_.lease_batch, o_.payload_bytes,
          measured, (unsigned long long)enqueued_.load(), (unsigned long long)completed_.load(),
          completed_.load() / measured, l.p50_ms, l.p99_ms, (unsigned long long)errors_.load(),
          secs);
    }
    if (errors_ && !first_error_.empty())
      std::fprintf(stderr, "first error: %s\n", first_error_.c_str());
    return 0;
  }

 private:
  void Error(const std::string& what) {
    ++errors_;
    std::lock_guard lock(mu_);
    if (first_error_.empty()) first_error_ = what;
  }

  void Enqueue(int i, std::function<void()> then) {
    struct Call {
      grpc::ClientContext ctx;
      v1::EnqueueRequest req;
      v1::EnqueueResponse resp;
      v1::EnqueueBatchRequest batch;
      v1::EnqueueBatchResponse batch_resp;
    };
    auto* c = new Call;
    c->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto fill = [&](v1::EnqueueRequest* r) {
      r->set_queue(o_.queue);
      r->set_type("bench");
      r->set_payload(payload_);
    };
    auto* stub = job_stubs_[i % job_stubs_.size()].get();
    if (o_.enqueue_batch <= 1) {
      fill(&c->req);
      stub->async()->Enqueue(&c->ctx, &c->req, &c->resp,
                             [this, c, then = std::move(then)](grpc::Status st) {
                               if (st.ok())
                                 ++enqueued_;
                               else
                                 Error(st.error_message());
                               delete c;
                               then();
                             });
      return;
    }
    for (int k = 0; k < o_.enqueue_batch; ++k) fill(c->batch.add_items());
    stub->async()->EnqueueBatch(&c->ctx, &c->batch, &c->batch_resp,
                                [this, c, then = std::move(then)](grpc::Status st) {
                                  if (st.ok()) {
                                    enqueued_ += c->batch_resp.results_size();
                                  } else {
                                    Error(st.error_message());
                                  }
                                  delete c;
                                  then();
                                });
  }

  void ClosedLoop() {
    std::atomic<int> live{o_.producers};
    std::mutex m;
    std::condition_variable cv;
    std::function<void(int)> next = [&](int i) {
      if (Clock::now() >= stop_at_) {
        if (--live == 0) {
          std::lock_guard lock(m);
          cv.notify_all();
        }
        return;
      }
      Enqueue(i, [&, i] { next(i); });
    };
    for (int i = 0; i < o_.producers; ++i) next(i);
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return live == 0; });
  }

  void OpenLoop() {
    const auto interval = std::chrono::duration<double>(o_.enqueue_batch / o_.rate);
    std::atomic<int> inflight{0};
    auto t = Clock::now();
    int i = 0;
    while (t < stop_at_) {
      std::this_thread::sleep_until(t);
      ++inflight;
      Enqueue(i++, [&] { --inflight; });
      t += std::chrono::duration_cast<Clock::duration>(interval);
    }
    while (inflight > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  void WorkerLoop(int i) {
    auto* stub = worker_stubs_[i % worker_stubs_.size()].get();
    std::atomic<int> inflight{0};
    // Keep leasing until the producers stopped and the queue is drained (a lease came back
    // empty after the end).
    for (;;) {
      const bool over = Clock::now() >= stop_at_;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      v1::LeaseRequest req;
      req.add_queues(o_.queue);
      req.set_worker_id("bench-" + std::to_string(i));
      req.set_max_jobs(o_.lease_batch);
      req.mutable_wait()->set_nanos(over ? 0 : 200'000'000);
      v1::LeaseResponse resp;
      grpc::Status st = stub->Lease(&ctx, req, &resp);
      const int64_t now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
      if (!st.ok()) {
        Error(st.error_message());
        if (over) break;
        continue;
      }
      if (resp.jobs_size() == 0) {
        if (over) break;
        continue;
      }
      {
        std::lock_guard lock(mu_);
        for (const auto& j : resp.jobs()) {
          const auto& c = j.job().created_at();
          int64_t created = c.seconds() * 1'000'000 + c.nanos() / 1000;
          if (!over) latencies_us_.push_back(static_cast<double>(now_us - created));
        }
      }
      if (o_.complete_batch > 1) {
        for (int k = 0; k < resp.jobs_size(); k += o_.complete_batch) {
          while (inflight >= o_.completes_in_flight) std::this_thread::yield();
          ++inflight;
          struct Call {
            grpc::ClientContext ctx;
            v1::CompleteBatchRequest req;
            v1::CompleteBatchResponse resp;
          };
          auto* c = new Call;
          c->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
          for (int m = k; m < resp.jobs_size() && m < k + o_.complete_batch; ++m) {
            *c->req.add_items()->mutable_token() = resp.jobs(m).token();
          }
          stub->async()->CompleteBatch(&c->ctx, &c->req, &c->resp,
                                       [this, c, &inflight](grpc::Status st) {
                                         if (!st.ok()) {
                                           Error(st.error_message());
                                         } else {
                                           for (const auto& r : c->resp.results()) {
                                             if (r.has_job())
                                               ++completed_;
                                             else
                                               Error(r.error().message());
                                           }
                                         }
                                         delete c;
                                         --inflight;
                                       });
        }
        continue;
      }
      for (const auto& j : resp.jobs()) {
        while (inflight >= o_.completes_in_flight) std::this_thread::yield();
        ++inflight;
        struct Call {
          grpc::ClientContext ctx;
          v1::CompleteRequest req;
          v1::JobResponse resp;
        };
        auto* c = new Call;
        c->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        *c->req.mutable_token() = j.token();
        stub->async()->Complete(&c->ctx, &c->req, &c->resp, [this, c, &inflight](grpc::Status st) {
          if (st.ok())
            ++completed_;
          else
            Error(st.error_message());
          delete c;
          --inflight;
        });
      }
    }
    while (inflight > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  CycleOptions o_;
  std::vector<std::unique_ptr<v1::JobService::Stub>> job_stubs_;
  std::vector<std::unique_ptr<v1::WorkerService::Stub>> worker_stubs_;
  std::string payload_;
  Clock::time_point start_, stop_at_;
  std::atomic<uint64_t> enqueued_{0}, completed_{0}, errors_{0};
  std::mutex mu_;
  std::vector<double> latencies_us_;
  std::string first_error_;
};

// ---------------------------------------------------------------------------------------------
// wait-ready: polls a (re)starting ledgerqd until it answers a gRPC call (any answer but
// UNAVAILABLE or a timeout) and GET /readyz is 200; prints when each happened, in seconds since
// --since-unix-ns (taken by the caller just before it started the daemon).

struct WaitReadyOptions {
  std::string server = "127.0.0.1:7400";
  std::string http = "127.0.0.1:7401";
  int64_t since_unix_ns = 0;  // 0: when this command starts
  std::string timeout = "600s";
};

int WaitReady(const WaitReadyOptions& o) {
  auto timeout = ledgerq::ParseDuration(o.timeout, "--timeout");
  if (!timeout.ok()) {
    std::cerr << timeout.status().message() << "\n";
    return 2;
  }
  using SysClock = std::chrono::system_clock;
  const SysClock::time_point since =
      o.since_unix_ns ? SysClock::time_point(std::chrono::duration_cast<SysClock::duration>(
                            std::chrono::nanoseconds(o.since_unix_ns)))
                      : SysClock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(SysClock::now() - since).count(); };
  const auto give_up = Clock::now() + *timeout;
  double grpc_s = -1, readyz_s = -1;
  int attempts = 0;
  while ((grpc_s < 0 || readyz_s < 0) && Clock::now() < give_up) {
    if (readyz_s < 0 && ledgerq::bench::HttpGetStatus(o.http, "/readyz") == 200) {
      readyz_s = elapsed();
    }
    if (grpc_s < 0) {
      // A new channel each time: a channel that failed to connect backs off for seconds before
      // it tries again, and the backoff is not what is being measured.
      grpc::ChannelArguments args;
      args.SetInt("ledgerq.bench.attempt", attempts++);
      auto stub = v1::JobService::NewStub(
          grpc::CreateCustomChannel(o.server, grpc::InsecureChannelCredentials(), args));
      grpc::ClientContext ctx;
      ctx.set_deadline(SysClock::now() + std::chrono::milliseconds(200));
      v1::GetJobRequest req;
      req.set_id(1);
      v1::Job job;
      grpc::Status st = stub->GetJob(&ctx, req, &job);
      if (st.error_code() != grpc::StatusCode::UNAVAILABLE &&
          st.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
        grpc_s = elapsed();
      }
    }
    if (grpc_s < 0 || readyz_s < 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  nlohmann::json j{{"grpc_answering_s", grpc_s},
                   {"readyz_ok_s", readyz_s},
                   {"ready_s", grpc_s < 0 || readyz_s < 0 ? -1.0 : std::max(grpc_s, readyz_s)}};
  std::cout << j.dump() << "\n";
  return grpc_s < 0 || readyz_s < 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ledgerq-bench: load generator for ledgerqd"};
  app.require_subcommand(1);
  Options o;
  auto* enqueue = app.add_subcommand("enqueue", "Closed-loop Enqueue / EnqueueBatch");
  enqueue->add_option("--server", o.server, "ledgerqd gRPC address");
  enqueue->add_option("--concurrency", o.concurrency, "Calls in flight")
      ->check(CLI::Range(1, 4096));
  enqueue->add_option("--duration", o.duration, "How long to run (e.g. 10s)");
  enqueue->add_option("--batch", o.batch, "0 for unary Enqueue, N for EnqueueBatch of N")
      ->check(CLI::Range(0, 1000));
  enqueue->add_option("--payload-bytes", o.payload_bytes, "Payload size");
  enqueue->add_option("--jobs", o.max_jobs, "Stop after this many jobs (0: run for --duration)");
  enqueue->add_option("--channels", o.channels, "gRPC connections")->check(CLI::Range(1, 64));
  enqueue->add_option("--queue", o.queue, "Queue to fill");
  enqueue->add_option("--type", o.type, "Job type (default bench)");
  enqueue->add_flag("--object-payload", o.object_payload,
                    "Payload {\"customer\": ..., \"amount\": 1250} instead of a JSON string");
  enqueue->add_option("--token", o.token, "API token (default: env LEDGERQ_TOKEN)")
      ->envname("LEDGERQ_TOKEN");
  enqueue->add_flag("!--no-keys", o.keys, "Send no idempotency keys");
  enqueue->add_flag("--json", o.json, "One JSON line instead of text");
  CycleOptions c;
  auto* cycle = app.add_subcommand("cycle", "Enqueue, lease in batches, complete");
  cycle->add_option("--server", c.server, "ledgerqd gRPC address");
  cycle->add_option("--producers", c.producers, "Enqueue calls in flight (closed loop)")
      ->check(CLI::Range(1, 4096));
  cycle->add_option("--rate", c.rate, "Open-loop enqueue rate in jobs/s (latency runs)");
  cycle->add_option("--workers", c.workers, "Leasing threads")->check(CLI::Range(1, 256));
  cycle->add_option("--lease-batch", c.lease_batch, "max_jobs per Lease")
      ->check(CLI::Range(1, 256));
  cycle->add_option("--duration", c.duration, "How long to produce (e.g. 10s)");
  cycle->add_option("--enqueue-batch", c.enqueue_batch, "Items per EnqueueBatch (1: unary)")
      ->check(CLI::Range(1, 1000));
  cycle->add_option("--complete-batch", c.complete_batch, "Leases per CompleteBatch (1: unary)")
      ->check(CLI::Range(1, 1000));
  cycle->add_option("--payload-bytes", c.payload_bytes, "Payload size");
  cycle->add_option("--queue", c.queue, "Queue to use");
  cycle->add_flag("--json", c.json, "One JSON line instead of text");
  WaitReadyOptions w;
  auto* wait_ready =
      app.add_subcommand("wait-ready", "Time until a starting ledgerqd answers gRPC and /readyz");
  wait_ready->add_option("--server", w.server, "ledgerqd gRPC address");
  wait_ready->add_option("--http", w.http, "ledgerqd HTTP address (/readyz)");
  wait_ready->add_option("--since-unix-ns", w.since_unix_ns,
                         "Count from this wall-clock time (date +%s%N before the daemon started)");
  wait_ready->add_option("--timeout", w.timeout, "Give up after this long");
#ifdef LEDGERQ_BENCH_PEERS
  ledgerq::bench::AddPeerCommands(app);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (*cycle) return CycleBench(c).Run();
  if (*wait_ready) return WaitReady(w);
#ifdef LEDGERQ_BENCH_PEERS
  if (int rc = 0; ledgerq::bench::RunPeerCommands(app, &rc)) return rc;
#endif
  EnqueueBench bench(o);
  return bench.Run();
}
