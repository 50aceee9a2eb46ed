// Bounded storage under retention and archiving (issue 6): drives jobs through
// enqueue -> lease -> complete on a FakeClock, with retention sweeps and automatic archiving by
// the daemon's Housekeeper, measures the data dir's peak size in every `--step` jobs and fails
// unless it plateaus (the second half's peak below 1.2 x the first half's). Then measures
// the latency of lease-like transitions while one large retention sweep runs.
//
//   retention_bound [--jobs N] [--step N]     default 100000 / 20000 (about 30 s);
//                                             the long run: --jobs 300000 --step 50000
// Exit 0 when bounded, 1 when not, 2 on an error. Prints every figure.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "server/housekeeping.h"
#include "storage/audit_export.h"
#include "storage/job_store.h"
#include "tests/support/temp_dir.h"

using namespace ledgerq;
using namespace ledgerq::storage;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

uint64_t DirBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_regular_file(ec)) total += it->file_size(ec);
  }
  return total;
}

[[noreturn]] void Die(const std::string& what, const Status& st) {
  std::fprintf(stderr, "retention_bound: %s: %s\n", what.c_str(), st.ToString().c_str());
  std::exit(2);
}

std::vector<uint64_t> Enqueue(JobStore& store, uint64_t first, size_t n) {
  std::vector<NewJob> items(n);
  for (size_t i = 0; i < n; ++i) {
    items[i].queue = "q";
    items[i].type = "t";
    items[i].payload = std::string(200, 'p') + std::to_string(first + i);
    items[i].max_attempts = 3;
    if ((first + i) % 2 == 0) items[i].idempotency_key = "key-" + std::to_string(first + i);
  }
  std::promise<std::vector<EnqueueOutcome>> p;
  auto f = p.get_future();
  store.Enqueue(std::move(items), "producer",
                [&p](std::vector<EnqueueOutcome> o) { p.set_value(std::move(o)); });
  std::vector<uint64_t> ids;
  for (auto& o : f.get()) {
    if (!o.status.ok()) Die("enqueue", o.status);
    ids.push_back(o.job.id());
  }
  return ids;
}

void Move(JobStore& store, const std::vector<uint64_t>& ids, State to, EventType type) {
  std::vector<TransitionItem> items;
  for (uint64_t id : ids) {
    items.push_back({id, [to, type](JobRecord& job, TransitionWriter& w, int64_t) {
                       EventBody ev;
                       ev.set_type(type);
                       ev.set_from_state(job.state());
                       ev.set_to_state(to);
                       ev.set_worker_id("w1");
                       job.set_state(to);
                       if (to == v1::STATE_LEASED) job.set_attempts(job.attempts() + 1);
                       w.Event(ev);
                       if (to == v1::STATE_SUCCEEDED) w.PutResult(std::string(100, 'r'));
                       return Status::Ok();
                     }});
  }
  std::promise<std::vector<Result<JobRecord>>> p;
  auto f = p.get_future();
  store.Transition(std::move(items), "worker",
                   [&p](std::vector<Result<JobRecord>> r) { p.set_value(std::move(r)); });
  for (auto& r : f.get()) {
    if (!r.ok()) Die("transition", r.status());
  }
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

// Lease-like round trips (one READY -> LEASED transition each) from another thread for as long
// as `busy` runs; milliseconds each.
template <typename Fn>
std::vector<double> LeaseLatencies(JobStore& store, Fn busy) {
  auto ids = Enqueue(store, 10'000'000, 5000);
  std::atomic<bool> done{false};
  std::vector<double> ms;
  std::thread leaser([&] {
    for (size_t i = 0; i < ids.size() && !done; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      Move(store, {ids[i]}, v1::STATE_LEASED, v1::EVENT_LEASED);
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  });
  busy();
  done = true;
  leaser.join();
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t jobs = 100'000, step = 20'000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--jobs")) jobs = std::strtoull(argv[i + 1], nullptr, 10);
    if (!std::strcmp(argv[i], "--step")) step = std::strtoull(argv[i + 1], nullptr, 10);
  }
  if (jobs == 0 || step == 0 || jobs < 2 * step) {
    std::fprintf(stderr, "usage: retention_bound [--jobs N] [--step N] (N >= 2 steps)\n");
    return 2;
  }
  ledgerq::testing::TempDir tmp;
  const std::string data = tmp.Sub("data"), archive = tmp.Sub("archive");
  FakeClock clock;
  // 500 jobs per batch, 36 s of fake time per batch: 50,000 jobs an hour.
  constexpr size_t kBatch = 500;
  const auto kPerBatch = 36s;
  StoreOptions o;
  o.data_dir = data;
  o.clock = &clock;
  o.sync = SyncMode::kNone;  // the point is space, not fsyncs
  o.dedup_window = 30min;
  o.retention = [](const std::string&, const std::string&) {
    return RetentionPolicy{.payloads = 15min, .records = 30min, .dead = 30min};
  };
  auto opened = JobStore::Open(o);
  if (!opened.ok()) Die("open", opened.status());
  auto store = std::move(opened).value();
  server::Housekeeper keeper(store.get(), nullptr, &clock,
                             {.archive_dir = archive, .archive_after = 45min});

  std::printf("jobs      peak_data_dir_MB  events_in_log  checkpoint  jobs/s\n");
  std::vector<uint64_t> sizes;
  RetentionStats total;
  uint64_t archived = 0;
  uint64_t step_peak = 0;
  auto start = std::chrono::steady_clock::now();
  auto step_start = start;
  for (uint64_t done = 0; done < jobs;) {
    auto ids = Enqueue(*store, done, kBatch);
    Move(*store, ids, v1::STATE_LEASED, v1::EVENT_LEASED);
    Move(*store, ids, v1::STATE_SUCCEEDED, v1::EVENT_COMPLETED);
    done += kBatch;
    clock.Advance(kPerBatch);
    if ((done / kBatch) % 10 == 0) {  // a housekeeping round every 6 fake minutes
      auto swept = store->RunRetention(256);
      if (!swept.ok()) Die("retention", swept.status());
      total.purged_payloads += swept->purged_payloads;
      total.removed_records += swept->removed_records;
      total.expired_keys += swept->expired_keys;
      auto a = keeper.ArchiveDue();
      if (!a.ok()) Die("archive", a.status());
      archived += *a;
      // Archives leave the daemon: keep only the newest file here, verified.
      std::vector<fs::path> files;
      std::error_code dir_ec;
      for (auto& e : fs::directory_iterator(archive, dir_ec)) files.push_back(e.path());
      std::sort(files.begin(), files.end(), [](const fs::path& x, const fs::path& y) {
        return fs::last_write_time(x) < fs::last_write_time(y);
      });
      for (size_t i = 0; i + 1 < files.size(); ++i) fs::remove(files[i]);
      // The size swings with the write-ahead log (flushed and dropped past 64 MB) and with
      // compactions, so each step keeps the largest size seen in it.
      step_peak = std::max(step_peak, DirBytes(data));
    }
    if (done % step == 0) {
      const uint64_t bytes = std::max(step_peak, DirBytes(data));
      step_peak = 0;
      sizes.push_back(bytes);
      const auto now = std::chrono::steady_clock::now();
      const auto head = store->Head();
      const auto cp = store->GetCheckpoint();
      std::printf(
          "%-9llu %16.1f  %13llu  %10llu  %6.0f\n", static_cast<unsigned long long>(done),
          static_cast<double>(bytes) / 1e6, static_cast<unsigned long long>(head.seq - cp.seq),
          static_cast<unsigned long long>(cp.seq),
          static_cast<double>(step) / std::chrono::duration<double>(now - step_start).count());
      std::fflush(stdout);
      step_start = now;
    }
  }
  std::printf(
      "retention: %llu payloads purged, %llu records removed, %llu keys expired; %llu "
      "events archived; %.1f s\n",
      static_cast<unsigned long long>(total.purged_payloads),
      static_cast<unsigned long long>(total.removed_records),
      static_cast<unsigned long long>(total.expired_keys),
      static_cast<unsigned long long>(archived),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  auto verify = store->VerifyLog();
  if (!verify.ok() || !verify->ok) {
    std::fprintf(stderr, "retention_bound: the retained chain does not verify: %s\n",
                 verify.ok() ? verify->problem.c_str() : verify.status().ToString().c_str());
    return 1;
  }
  for (auto& e : fs::directory_iterator(archive)) {
    auto check = VerifyExportFile(e.path().string());
    if (!check.ok() || !check->ok) {
      std::fprintf(stderr, "retention_bound: archive %s does not verify\n", e.path().c_str());
      return 1;
    }
  }

  // Lease latency: alone, and while one sweep works through a large due backlog.
  auto idle = LeaseLatencies(*store, [] { std::this_thread::sleep_for(1500ms); });
  for (uint64_t i = 0; i < 40; ++i) {
    auto ids = Enqueue(*store, 20'000'000 + i * kBatch, kBatch);
    Move(*store, ids, v1::STATE_LEASED, v1::EVENT_LEASED);
    Move(*store, ids, v1::STATE_SUCCEEDED, v1::EVENT_COMPLETED);
  }
  clock.Advance(16min);  // 20,000 payloads due at once
  RetentionStats big;
  auto during = LeaseLatencies(*store, [&] {
    auto r = store->RunRetention(256);
    if (!r.ok()) Die("retention", r.status());
    big = *r;
  });
  std::printf("lease latency alone:            n=%zu p50=%.2f ms p99=%.2f ms max=%.2f ms\n",
              idle.size(), Percentile(idle, 0.5), Percentile(idle, 0.99), Percentile(idle, 1));
  std::printf(
      "lease latency during the sweep: n=%zu p50=%.2f ms p99=%.2f ms max=%.2f ms "
      "(sweep: %llu purged in %.2f s, %llu batches)\n",
      during.size(), Percentile(during, 0.5), Percentile(during, 0.99), Percentile(during, 1),
      static_cast<unsigned long long>(big.purged_payloads), big.seconds,
      static_cast<unsigned long long>(big.batches));

  // Bounded: the peak of the second half of the run stays below 1.2 x the peak of the first
  // half (which ends once retention and archiving are in steady state). Unbounded growth, as
  // before the WAL bound, fails this: 28, 77, 118, 157, 197 MB.
  const size_t half = (sizes.size() + 1) / 2;
  const uint64_t first = *std::max_element(sizes.begin(), sizes.begin() + half);
  const uint64_t second = *std::max_element(sizes.begin() + half, sizes.end());
  const bool bounded = static_cast<double>(second) < 1.2 * static_cast<double>(first);
  std::printf("%s: peak %.1f MB in the second half against %.1f MB in the first (limit 1.2x)\n",
              bounded ? "bounded" : "NOT BOUNDED", static_cast<double>(second) / 1e6,
              static_cast<double>(first) / 1e6);
  (void)store->Close();
  return bounded ? 0 : 1;
}
