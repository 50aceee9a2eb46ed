// `ledgerq-bench peer`: one cell of the comparison (a system, a workload, a payload size, a
// concurrency), run as a closed loop and reported as one JSON line; `peer-table` turns the lines
// of a whole run into the JSON results file and a markdown table.
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <vector>

#include "bench/peer.h"
#include "bench/stats.h"
#include "common/duration.h"

namespace ledgerq::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct PeerRunOptions {
  std::string system;  // ledgerq, grpc-echo, beanstalkd, redis, postgres
  std::string label;   // the row in the table, e.g. "beanstalkd -f0"; default: system
  std::string address;
  std::string workload = "enqueue";  // enqueue or cycle
  size_t payload_bytes = 100;
  int concurrency = 8;
  std::string duration = "10s";
  std::string warmup = "1s";
  std::string json_out;  // append the result line to this file
};

struct PeerTableOptions {
  std::string in;   // JSON lines written by `peer --json`
  std::string out;  // the results file
  std::string machine;
  std::string command;
};

PeerRunOptions run_options;
PeerTableOptions table_options;
std::string echo_listen = "127.0.0.1:0";

// One slot's payload: `bytes` long, random letters and digits (so compression flatters nobody),
// quoted like a JSON string, with a unique job tag after the opening quote.
class PayloadMaker {
 public:
  PayloadMaker(size_t bytes, int slot) : slot_(slot) {
    std::mt19937_64 rng(0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(slot));
    static constexpr char kAlphabet[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    buf_.resize(std::max<size_t>(bytes, 2));
    for (char& c : buf_) c = kAlphabet[rng() % (sizeof kAlphabet - 1)];
    buf_.front() = '"';
    buf_.back() = '"';
    buf_.resize(bytes);
  }

  [[nodiscard]] std::string_view Next() {
    char tag[48];
    int n =
        std::snprintf(tag, sizeof tag, "%d-%llu-", slot_, static_cast<unsigned long long>(++seq_));
    const size_t room = buf_.size() > 2 ? buf_.size() - 2 : 0;
    std::copy_n(tag, std::min<size_t>(static_cast<size_t>(n), room), buf_.begin() + 1);
    return buf_;
  }

 private:
  int slot_;
  uint64_t seq_ = 0;
  std::string buf_;
};

struct SlotResult {
  std::vector<double> latencies_us;
  uint64_t errors = 0;
  std::string first_error;
};

[[nodiscard]] std::unique_ptr<PeerDriver> MakeDriver(const PeerRunOptions& o) {
  PeerConfig config;
  config.address = o.address;
  if (auto d = MakeGrpcDriver(o.system, config)) return d;
  if (o.system == "beanstalkd") return MakeBeanstalkDriver(config);
  if (o.system == "redis") return MakeRedisDriver(config);
  if (o.system == "postgres") return MakePostgresDriver(config);
  return nullptr;
}

// The measured window: operations started in [measure_from, stop_at) count. It opens after a
// warm-up that starts once every client is connected.
struct Window {
  Clock::duration warmup, duration;
  Clock::time_point measure_from, stop_at;

  void Open() {
    measure_from = Clock::now() + warmup;
    stop_at = measure_from + duration;
  }
};

constexpr int kMaxConsecutiveErrors = 100;  // then the client is taken as broken and stops

void Record(const Window& w, Clock::time_point t0, bool ok, const std::string& error, SlotResult* r,
            int* consecutive_errors) {
  if (!ok) {
    if (t0 >= w.measure_from) ++r->errors;
    if (r->first_error.empty()) r->first_error = error;
    ++*consecutive_errors;
    return;
  }
  *consecutive_errors = 0;
  if (t0 >= w.measure_from) {
    r->latencies_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
}

// Blocking clients: a thread each.
[[nodiscard]] bool RunBlocking(PeerDriver& driver, const PeerRunOptions& o, Window w,
                               std::vector<SlotResult>* results, std::string* error) {
  const bool cycle = o.workload == "cycle";
  std::vector<std::unique_ptr<PeerSession>> sessions;
  for (int i = 0; i < o.concurrency; ++i) {
    auto s = driver.Connect(error);
    if (!s) return false;
    sessions.push_back(std::move(s));
  }
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < o.concurrency; ++i) {
    threads.emplace_back([&, i] {
      PayloadMaker payloads(o.payload_bytes, i);
      SlotResult& r = (*results)[i];
      PeerSession& s = *sessions[i];
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      int consecutive_errors = 0;
      std::string err;
      for (;;) {
        const auto t0 = Clock::now();
        if (t0 >= w.stop_at || consecutive_errors >= kMaxConsecutiveErrors) break;
        const std::string_view p = payloads.Next();
        const bool ok = cycle ? s.Cycle(p, &err) : s.Enqueue(p, &err);
        Record(w, t0, ok, err, &r, &consecutive_errors);
        if (!ok) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
  }
  w.Open();
  go.store(true, std::memory_order_release);
  for (auto& t : threads) t.join();
  return true;
}

// Callback clients: the completion of one operation issues the client's next one.
class AsyncRun {
 public:
  AsyncRun(const PeerRunOptions& o, Window w, std::vector<SlotResult>* results)
      : cycle_(o.workload == "cycle"), w_(w), results_(results) {
    for (int i = 0; i < o.concurrency; ++i) slots_.emplace_back(o.payload_bytes, i);
  }

  [[nodiscard]] bool Run(PeerDriver& driver, std::string* error) {
    for (auto& slot : slots_) {
      slot.session = driver.ConnectAsync(error);
      if (!slot.session) return false;
    }
    w_.Open();
    outstanding_ = static_cast<int>(slots_.size());
    for (size_t i = 0; i < slots_.size(); ++i) Issue(i);
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return outstanding_ == 0; });
    return true;
  }

 private:
  struct Slot {
    Slot(size_t bytes, int i) : payloads(bytes, i) {}
    std::unique_ptr<AsyncPeerSession> session;
    PayloadMaker payloads;
    Clock::time_point t0;
    int consecutive_errors = 0;
  };

  void Issue(size_t i) {
    Slot& slot = slots_[i];
    slot.t0 = Clock::now();
    if (slot.t0 >= w_.stop_at || slot.consecutive_errors >= kMaxConsecutiveErrors) {
      std::lock_guard lock(mu_);
      if (--outstanding_ == 0) cv_.notify_all();
      return;
    }
    PeerDone done = [this, i](bool ok, const std::string& error) {
      Slot& s = slots_[i];
      Record(w_, s.t0, ok, error, &(*results_)[i], &s.consecutive_errors);
      Issue(i);
    };
    const std::string_view p = slot.payloads.Next();
    if (cycle_) {
      slot.session->StartCycle(p, std::move(done));
    } else {
      slot.session->StartEnqueue(p, std::move(done));
    }
  }

  bool cycle_;
  Window w_;
  std::vector<SlotResult>* results_;
  std::deque<Slot> slots_;
  std::mutex mu_;
  std::condition_variable cv_;
  int outstanding_ = 0;
};

// CPU seconds (user + system) this process used so far: the load generator's own cost.
[[nodiscard]] double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto secs = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return secs(u.ru_utime) + secs(u.ru_stime);
}

[[nodiscard]] double LoadAverage() {
  std::ifstream in("/proc/loadavg");
  double one = 0;
  in >> one;
  return one;
}

int RunPeer(const PeerRunOptions& o) {
  auto duration = ParseDuration(o.duration, "--duration");
  auto warmup = ParseDuration(o.warmup, "--warmup");
  if (!duration.ok() || !warmup.ok()) {
    std::cerr << (duration.ok() ? warmup.status() : duration.status()).message() << "\n";
    return 2;
  }
  std::unique_ptr<PeerDriver> driver = MakeDriver(o);
  if (!driver) {
    std::cerr << "unknown --system " << o.system << "\n";
    return 2;
  }
  std::string error;
  if (!driver->Prepare(&error)) {
    std::cerr << o.system << ": prepare: " << error << "\n";
    return 1;
  }
  const double load_before = LoadAverage();
  const double cpu_before = CpuSeconds();
  const auto wall_before = Clock::now();
  std::vector<SlotResult> results(o.concurrency);
  for (auto& r : results) r.latencies_us.reserve(1 << 16);
  Window w;
  w.warmup = std::chrono::duration_cast<Clock::duration>(*warmup);
  w.duration = std::chrono::duration_cast<Clock::duration>(*duration);
  const bool ran = driver->IsAsync() ? AsyncRun(o, w, &results).Run(*driver, &error)
                                     : RunBlocking(*driver, o, w, &results, &error);
  if (!ran) {
    std::cerr << o.system << ": connect: " << error << "\n";
    return 1;
  }
  // Over the whole run (warm-up included): the share of a core the load generator used.
  const double client_cpu_share =
      (CpuSeconds() - cpu_before) /
      std::max(1e-9, std::chrono::duration<double>(Clock::now() - wall_before).count());

  std::vector<double> lat;
  uint64_t errors = 0;
  std::string first_error;
  for (auto& r : results) {
    lat.insert(lat.end(), r.latencies_us.begin(), r.latencies_us.end());
    errors += r.errors;
    if (first_error.empty()) first_error = r.first_error;
  }
  const LatencySummary l = Summarize(lat);
  const double secs = std::chrono::duration<double>(*duration).count();
  const std::string label = o.label.empty() ? o.system : o.label;
  nlohmann::json j{{"system", label},
                   {"driver", o.system},
                   {"workload", o.workload},
                   {"payload_bytes", o.payload_bytes},
                   {"concurrency", o.concurrency},
                   {"seconds", secs},
                   {"jobs", l.count},
                   {"errors", errors},
                   {"jobs_per_sec", l.count / secs},
                   {"p50_ms", l.p50_ms},
                   {"p99_ms", l.p99_ms},
                   {"max_ms", l.max_ms},
                   {"loadavg_1m_before", load_before},
                   {"client_cpu_cores", client_cpu_share},
                   {"first_error", first_error}};
  std::printf(
      "%-16s %-7s %5zu B x%-3d %9.0f jobs/s  p50 %7.2f ms  p99 %7.2f ms  errors %llu  "
      "client %.2f cores%s%s\n",
      label.c_str(), o.workload.c_str(), o.payload_bytes, o.concurrency, l.count / secs, l.p50_ms,
      l.p99_ms, static_cast<unsigned long long>(errors), client_cpu_share,
      first_error.empty() ? "" : "  first error: ", first_error.c_str());
  std::fflush(stdout);
  if (!o.json_out.empty()) {
    std::ofstream out(o.json_out, std::ios::app);
    out << j.dump() << "\n";
    if (!out) {
      std::cerr << "cannot append to " << o.json_out << "\n";
      return 1;
    }
  }
  return l.count == 0 ? 1 : 0;
}

[[nodiscard]] std::string Thousands(double v) {
  std::string digits = std::to_string(static_cast<long long>(v + 0.5));
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

[[nodiscard]] std::string Ms(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, v < 10 ? "%.2f" : (v < 100 ? "%.1f" : "%.0f"), v);
  return buf;
}

int PeerTable(const PeerTableOptions& o) {
  std::ifstream in(o.in);
  if (!in) {
    std::cerr << "cannot read " << o.in << "\n";
    return 1;
  }
  nlohmann::json results = nlohmann::json::array();
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      std::cerr << "not JSON: " << line << "\n";
      return 1;
    }
    results.push_back(std::move(j));
  }
  char date[32];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  nlohmann::json doc{
      {"date", date}, {"machine", o.machine}, {"command", o.command}, {"results", results}};
  if (!o.out.empty()) {
    std::ofstream out(o.out);
    out << doc.dump(2) << "\n";
    if (!out) {
      std::cerr << "cannot write " << o.out << "\n";
      return 1;
    }
  }
  // One table per workload: a row per system (in the order run), a column per payload size and
  // concurrency.
  for (const char* workload : {"enqueue", "cycle"}) {
    std::vector<std::string> rows;
    std::vector<std::pair<size_t, int>> cols;
    std::map<std::pair<std::string, std::pair<size_t, int>>, const nlohmann::json*> cells;
    for (const auto& r : results) {
      if (r.value("workload", "") != workload) continue;
      const std::string sys = r.value("system", "");
      const std::pair<size_t, int> col{r.value("payload_bytes", size_t{0}),
                                       r.value("concurrency", 0)};
      if (std::find(rows.begin(), rows.end(), sys) == rows.end()) rows.push_back(sys);
      if (std::find(cols.begin(), cols.end(), col) == cols.end()) cols.push_back(col);
      cells[{sys, col}] = &r;
    }
    if (rows.empty()) continue;
    std::sort(cols.begin(), cols.end());
    std::printf("\n%s: jobs/s (p50 / p99 ms)\n\n| system |",
                std::string(workload) == "enqueue" ? "Enqueue only"
                                                   : "Full cycle (enqueue, take, complete)");
    for (const auto& [bytes, conc] : cols) {
      std::printf(" %s x%d |",
                  bytes >= 1024 && bytes % 1024 == 0
                      ? (std::to_string(bytes / 1024) + " KiB").c_str()
                      : (std::to_string(bytes) + " B").c_str(),
                  conc);
    }
    std::printf("\n|---|");
    for (size_t i = 0; i < cols.size(); ++i) std::printf("---|");
    std::printf("\n");
    for (const auto& sys : rows) {
      std::printf("| %s |", sys.c_str());
      for (const auto& col : cols) {
        auto it = cells.find({sys, col});
        if (it == cells.end()) {
          std::printf(" |");
          continue;
        }
        const nlohmann::json& r = *it->second;
        std::printf(" %s (%s / %s)%s |", Thousands(r.value("jobs_per_sec", 0.0)).c_str(),
                    Ms(r.value("p50_ms", 0.0)).c_str(), Ms(r.value("p99_ms", 0.0)).c_str(),
                    r.value("errors", 0) ? " !" : "");
      }
      std::printf("\n");
    }
  }
  return 0;
}

CLI::App* peer_cmd = nullptr;
CLI::App* echo_cmd = nullptr;
CLI::App* table_cmd = nullptr;

}  // namespace

void AddPeerCommands(CLI::App& app) {
  PeerRunOptions& o = run_options;
  peer_cmd = app.add_subcommand("peer", "One cell of the comparison with other job queues");
  peer_cmd->add_option("--system", o.system, "ledgerq, grpc-echo, beanstalkd, redis or postgres")
      ->required()
      ->check(CLI::IsMember({"ledgerq", "grpc-echo", "beanstalkd", "redis", "postgres"}));
  peer_cmd->add_option("--label", o.label, "Name in the results (default: the system)");
  peer_cmd->add_option("--server", o.address, "host:port of the system")->required();
  peer_cmd->add_option("--workload", o.workload, "enqueue or cycle")
      ->check(CLI::IsMember({"enqueue", "cycle"}));
  peer_cmd->add_option("--payload-bytes", o.payload_bytes, "Payload size")
      ->check(CLI::Range(size_t{2}, size_t{1} << 20));
  peer_cmd->add_option("--concurrency", o.concurrency, "Clients, one operation in flight each")
      ->check(CLI::Range(1, 1024));
  peer_cmd->add_option("--duration", o.duration, "Measured time (e.g. 10s)");
  peer_cmd->add_option("--warmup", o.warmup, "Unmeasured time before it (e.g. 1s)");
  peer_cmd->add_option("--json", o.json_out, "Append the result as one JSON line to this file");

  echo_cmd = app.add_subcommand("echo-server", "A bare gRPC echo service (the framework ceiling)");
  echo_cmd->add_option("--listen", echo_listen, "host:port (port 0 picks one)");

  PeerTableOptions& t = table_options;
  table_cmd = app.add_subcommand("peer-table", "JSON lines of `peer` runs -> results file + table");
  table_cmd->add_option("--in", t.in, "JSON lines from `peer --json`")->required();
  table_cmd->add_option("--out", t.out, "Results file to write");
  table_cmd->add_option("--machine", t.machine, "Machine description to record");
  table_cmd->add_option("--command", t.command, "Command that reproduces the run");
}

bool RunPeerCommands(const CLI::App& app, int* exit_code) {
  (void)app;
  if (peer_cmd && peer_cmd->parsed()) {
    *exit_code = RunPeer(run_options);
    return true;
  }
  if (echo_cmd && echo_cmd->parsed()) {
    *exit_code = RunEchoServer(echo_listen);
    return true;
  }
  if (table_cmd && table_cmd->parsed()) {
    *exit_code = PeerTable(table_options);
    return true;
  }
  return false;
}

}  // namespace ledgerq::bench
