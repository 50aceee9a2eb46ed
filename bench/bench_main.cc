// ledgerq-bench: closed-loop load against a running ledgerqd; prints figures, asserts nothing.
//   ledgerq-bench enqueue --server ADDR [--concurrency 64] [--duration 10s] [--batch 0|N]
//                         [--payload-bytes 100] [--keys]
// Each of `concurrency` slots keeps exactly one call in flight (callback API, so the load
// generator stays cheap); a slot issues its next call as soon as the previous one answers.
#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

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

#include "common/duration.h"
#include "ledgerq/v1/ledgerq.grpc.pb.h"

namespace {

namespace v1 = ledgerq::v1;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string server = "127.0.0.1:7400";
  int concurrency = 64;
  std::string duration = "10s";
  int batch = 0;  // 0: unary Enqueue; N: EnqueueBatch with N items
  size_t payload_bytes = 100;
  bool keys = true;
  int channels = 4;
  std::string queue = "bench";
  bool json = false;
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
    if (o.payload_bytes >= 2) {
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
    std::sort(lat.begin(), lat.end());
    auto pct = [&](double p) {
      return lat.empty() ? 0.0 : lat[std::min(lat.size() - 1, size_t(p * lat.size()))] / 1000.0;
    };
    const char* mode = o_.batch ? "EnqueueBatch" : "Enqueue";
    if (o_.json) {
      nlohmann::json j{{"workload", o_.batch ? "enqueue_batch" : "enqueue_unary"},
                       {"batch", o_.batch},
                       {"concurrency", o_.concurrency},
                       {"payload_bytes", o_.payload_bytes},
                       {"seconds", secs},
                       {"jobs", jobs},
                       {"calls", lat.size()},
                       {"errors", errors},
                       {"jobs_per_sec", jobs / secs},
                       {"call_p50_ms", pct(0.50)},
                       {"call_p99_ms", pct(0.99)}};
      std::cout << j.dump() << "\n";
    } else {
      std::printf("%s x%d, concurrency %d, payload %zu B, %.1f s: %llu jobs, %.0f jobs/s, "
                  "call latency p50 %.2f ms p99 %.2f ms, errors %llu\n",
                  mode, o_.batch ? o_.batch : 1, o_.concurrency, o_.payload_bytes, secs,
                  static_cast<unsigned long long>(jobs), jobs / secs, pct(0.5), pct(0.99),
                  static_cast<unsigned long long>(errors));
    }
    if (errors) std::fprintf(stderr, "first error: %s\n", first_error.c_str());
    return errors && jobs == 0 ? 1 : 0;
  }

 private:
  void Fill(v1::EnqueueRequest* r) {
    r->set_queue(o_.queue);
    r->set_type("bench");
    r->set_payload(payload_);
    if (o_.keys) r->set_idempotency_key("k" + std::to_string(next_key_++));
  }

  void Issue(int i) {
    Slot& s = slots_[i];
    if (Clock::now() >= stop_at_) {
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
    auto* stub = stubs_[i % stubs_.size()].get();
    s.started = Clock::now();
    if (o_.batch == 0) {
      s.req.Clear();
      Fill(&s.req);
      stub->async()->Enqueue(s.ctx, &s.req, &s.resp,
                             [this, i](grpc::Status st) { Done(i, st, 1); });
    } else {
      s.batch_req.Clear();
      for (int k = 0; k < o_.batch; ++k) Fill(s.batch_req.add_items());
      stub->async()->EnqueueBatch(s.ctx, &s.batch_req, &s.batch_resp,
                                  [this, i](grpc::Status st) { Done(i, st, o_.batch); });
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
  Clock::time_point start_, stop_at_, end_;
  std::mutex mu_;
  std::condition_variable cv_;
  int outstanding_ = 0;
};

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
  enqueue->add_option("--channels", o.channels, "gRPC connections")->check(CLI::Range(1, 64));
  enqueue->add_option("--queue", o.queue, "Queue to fill");
  enqueue->add_flag("!--no-keys", o.keys, "Send no idempotency keys");
  enqueue->add_flag("--json", o.json, "One JSON line instead of text");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  EnqueueBench bench(o);
  return bench.Run();
}
