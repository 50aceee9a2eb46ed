// The real ledgerqd on a disk that fills up, stalls or fails. Each test starts its own daemon.
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <set>

#include "tests/support/daemon.h"
#include "tests/support/e2e_helpers.h"
#include "tests/support/temp_dir.h"

namespace ledgerq::testing {
namespace {

using namespace std::chrono_literals;

// A tmpfs of `size` mounted on `dir` for the test's lifetime.
class Tmpfs {
 public:
  Tmpfs(const std::string& dir, const std::string& size) : dir_(dir) {
    std::filesystem::create_directories(dir);
    mounted_ = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0;
  }
  ~Tmpfs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }

 private:
  std::string dir_;
  bool mounted_ = false;
};

// Fills the filesystem holding `path` with one file, to the last byte it will take.
uint64_t FillDisk(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return 0;
  std::string chunk(1 << 16, '\0');
  uint64_t total = 0;
  for (size_t size = chunk.size(); size > 0;) {
    ssize_t n = ::write(fd, chunk.data(), size);
    if (n > 0) {
      total += static_cast<uint64_t>(n);
    } else {
      size /= 2;  // the tail: smaller writes until not even one byte fits
    }
  }
  ::close(fd);
  return total;
}

bool Refused(const Status& st) {
  return st.code() == Code::kResourceExhausted || st.code() == Code::kUnavailable;
}

// Every job in `ids` exists, and `audit verify` passes on the data dir (daemon stopped).
void CheckNothingLost(const std::string& grpc, const std::set<uint64_t>& ids) {
  auto c = MakeClient(grpc);
  for (uint64_t id : ids) {
    auto job = c.GetJob(id);
    INFO("job " << id);
    REQUIRE(job.ok());
  }
}

void AuditOk(const std::string& data_dir) {
  std::string out, err;
  auto r = RunCommand({LedgerqCliPath(), "audit", "verify", "--data-dir", data_dir}, &out, &err);
  INFO(out << err);
  CHECK((r.exited && r.code == 0));
}

TEST_CASE("disk full: writes refused, reads and health served, resumes by itself, nothing lost",
          "[faults]") {
  TempDir dir;
  Tmpfs fs(dir.Sub("mnt"), "160m");
  REQUIRE(fs.mounted());
  const std::string data = dir.Sub("mnt/data");
  Daemon d;
  REQUIRE(d.Start(data));
  auto c = MakeClient(d.grpc_address());

  std::set<uint64_t> acked;
  for (int i = 0; i < 20; ++i) {
    auto r = c.Enqueue(Req("q", "t", "{\"n\":" + std::to_string(i) + "}"));
    REQUIRE(r.ok());
    acked.insert(r->job().id());
  }
  const uint64_t ballast = FillDisk(dir.Sub("mnt/ballast"));
  INFO("ballast " << ballast << " bytes");
  REQUIRE(ballast > 0);

  // RocksDB preallocates its write-ahead log, so some writes still fit; keep going with large
  // payloads until the disk refuses one.
  const std::string big(256 << 10, 'x');
  Status refused;
  for (int i = 0; i < 2000 && refused.ok(); ++i) {
    auto r = c.Enqueue(Req("q", "t", big));
    if (r.ok()) {
      acked.insert(r->job().id());
    } else {
      refused = r.status();
    }
  }
  INFO(refused.ToString());
  REQUIRE(Refused(refused));
  CHECK(refused.message().find("disk full") != std::string::npos);

  // Writes stay refused (and change nothing); reads and health are served.
  auto again = c.Enqueue(Req("q", "t", "{}", "while-full"));
  REQUIRE_FALSE(again.ok());
  CHECK(Refused(again.status()));
  CHECK(c.GetJob(*acked.begin()).ok());
  v1::GetJobHistoryRequest hreq;
  hreq.set_id(*acked.rbegin());
  CHECK(c.GetJobHistory(hreq).ok());
  CHECK(c.ListQueues().ok());
  CHECK(HttpGet(d.http_port(), "/healthz").status == 200);
  auto ready = HttpGet(d.http_port(), "/readyz");
  CHECK(ready.status == 503);
  CHECK(ready.body.find("writes refused") != std::string::npos);
  CHECK(WaitFor(
      [&] {
        return HttpGet(d.http_port(), "/metrics").body.find("ledgerq_store_writes_refused 1") !=
               std::string::npos;
      },
      5s));

  // Space comes back: the daemon notices on its own (no write needed) and takes writes again.
  std::filesystem::remove(dir.Sub("mnt/ballast"));
  CHECK(WaitFor([&] { return HttpGet(d.http_port(), "/readyz").status == 200; }, 60s, 200ms));
  auto after = c.Enqueue(Req("q", "t", "{}", "after-full"));
  REQUIRE(after.ok());
  CHECK_FALSE(after->deduplicated());  // the refused enqueue with this key left nothing behind
  auto dedup = c.Enqueue(Req("q", "t", "{}", "while-full"));
  REQUIRE(dedup.ok());
  CHECK_FALSE(dedup->deduplicated());
  acked.insert(after->job().id());
  acked.insert(dedup->job().id());

  // Every acknowledged job can still be worked to the end.
  size_t done = 0;
  while (done < acked.size()) {
    auto lease = c.Lease(LeaseReq("q", 64, 30, 2));
    REQUIRE(lease.ok());
    REQUIRE(lease->jobs_size() > 0);
    for (const auto& lj : lease->jobs()) {
      REQUIRE(c.Complete(CompleteReq(lj.token(), "ok")).ok());
      ++done;
    }
  }

  // A crash right after: everything acknowledged survives it, and the chain verifies.
  d.Signal(SIGKILL);
  d.Wait();
  Daemon d2;
  REQUIRE(d2.Start(data));
  CheckNothingLost(d2.grpc_address(), acked);
  auto c2 = MakeClient(d2.grpc_address());
  for (uint64_t id : acked) CHECK(c2.GetJob(id)->state() == v1::JOB_STATE_SUCCEEDED);
  REQUIRE(Terminate(d2).code == 0);
  AuditOk(data);
}

// Starts a daemon whose fsync/fdatasync go through the fault shim, controlled in `faults`.
bool StartWithShim(Daemon& d, const std::string& data, const std::string& faults,
                   const std::vector<std::string>& extra_args = {}) {
  ::setenv("LD_PRELOAD", LEDGERQ_FSYNC_SHIM_PATH, 1);
  ::setenv("LEDGERQ_FAULT_DIR", faults.c_str(), 1);
  // Under AddressSanitizer the shim comes before its runtime; that is fine for a shim that only
  // wraps two syscalls.
  const char* asan = std::getenv("ASAN_OPTIONS");
  const std::string saved = asan ? asan : "";
  ::setenv("ASAN_OPTIONS", (saved + ":verify_asan_link_order=0").c_str(), 1);
  bool ok = d.Start(data, extra_args);
  ::unsetenv("LD_PRELOAD");
  ::unsetenv("LEDGERQ_FAULT_DIR");
  if (asan) {
    ::setenv("ASAN_OPTIONS", saved.c_str(), 1);
  } else {
    ::unsetenv("ASAN_OPTIONS");
  }
  return ok;
}

template <typename F>
auto Timed(F&& f, std::chrono::milliseconds* took) {
  auto start = std::chrono::steady_clock::now();
  auto r = f();
  *took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                start);
  return r;
}

TEST_CASE("stuck disk: a write waits for its fsync, reads and health do not", "[faults]") {
  TempDir dir;
  std::filesystem::create_directories(dir.Sub("faults"));
  Daemon d;
  REQUIRE(StartWithShim(d, dir.Sub("data"), dir.Sub("faults")));
  auto c = MakeClient(d.grpc_address(), 30s);
  auto first = c.Enqueue(Req("q", "t", "{}"));
  REQUIRE(first.ok());

  // Every fsync now takes 6 s.
  REQUIRE(WriteFile(dir.Sub("faults/fsync_delay_ms"), "6000"));
  auto stuck = std::async(std::launch::async, [&] {
    auto w = MakeClient(d.grpc_address(), 30s);
    return w.Enqueue(Req("q", "t", "{}", "during-stall"));
  });
  std::this_thread::sleep_for(300ms);  // let it reach the fsync
  REQUIRE(stuck.wait_for(0ms) == std::future_status::timeout);

  // Liveness, not speed: each of these answers long before the stuck fsync ends.
  std::chrono::milliseconds took{};
  CHECK(Timed([&] { return c.GetJob(first->job().id()); }, &took).ok());
  CHECK(took < 3s);
  CHECK(Timed([&] { return HttpGet(d.http_port(), "/healthz"); }, &took).status == 200);
  CHECK(took < 3s);
  CHECK(Timed([&] { return HttpGet(d.http_port(), "/readyz"); }, &took).status == 200);
  CHECK(took < 3s);
  CHECK(Timed([&] { return HttpGet(d.http_port(), "/metrics"); }, &took).status == 200);
  CHECK(took < 3s);
  CHECK(Timed([&] { return c.ListQueues(); }, &took).ok());
  CHECK(took < 3s);
  CHECK(stuck.wait_for(0ms) == std::future_status::timeout);  // still waiting for the disk

  // The disk recovers: the write is acknowledged, durable, once its fsync returns.
  std::filesystem::remove(dir.Sub("faults/fsync_delay_ms"));
  auto r = stuck.get();
  REQUIRE(r.ok());
  CHECK(c.GetJob(r->job().id()).ok());
  REQUIRE(Terminate(d).code == 0);
  AuditOk(dir.Sub("data"));
}

TEST_CASE("failing fsync: nothing more is acknowledged, not ready, a restart recovers",
          "[faults]") {
  TempDir dir;
  std::filesystem::create_directories(dir.Sub("faults"));
  Daemon d;
  REQUIRE(StartWithShim(d, dir.Sub("data"), dir.Sub("faults")));
  auto c = MakeClient(d.grpc_address());
  std::set<uint64_t> acked;
  for (int i = 0; i < 5; ++i) {
    auto r = c.Enqueue(Req("q", "t", "{}"));
    REQUIRE(r.ok());
    acked.insert(r->job().id());
  }

  REQUIRE(WriteFile(dir.Sub("faults/fsync_eio"), ""));
  auto failed = c.Enqueue(Req("q", "t", "{}", "k1"));
  REQUIRE_FALSE(failed.ok());
  CHECK(failed.status().code() == Code::kUnavailable);
  CHECK(failed.status().message().find("restart") != std::string::npos);
  // Even with the disk healthy again, nothing more is acknowledged from this process: after a
  // failed fsync the kernel may have dropped the unsynced pages.
  std::filesystem::remove(dir.Sub("faults/fsync_eio"));
  auto later = c.Enqueue(Req("q", "t", "{}", "k2"));
  CHECK_FALSE(later.ok());
  CHECK(c.GetJob(*acked.begin()).ok());
  CHECK(HttpGet(d.http_port(), "/healthz").status == 200);
  auto ready = HttpGet(d.http_port(), "/readyz");
  CHECK(ready.status == 503);
  CHECK(ready.body.find("fsync") != std::string::npos);

  d.Signal(SIGKILL);
  d.Wait();
  Daemon d2;
  REQUIRE(d2.Start(dir.Sub("data")));
  CheckNothingLost(d2.grpc_address(), acked);
  auto c2 = MakeClient(d2.grpc_address());
  CHECK(c2.Enqueue(Req("q", "t", "{}", "k3")).ok());
  CHECK(HttpGet(d2.http_port(), "/readyz").status == 200);
  REQUIRE(Terminate(d2).code == 0);
  AuditOk(dir.Sub("data"));
}

TEST_CASE("failing fsync under --sync=batch: the timer's failure stops writes and readiness",
          "[faults]") {
  // The batch syncer used to drop SyncWAL's status: the disk failed, and the daemon went on
  // taking (and answering) writes and reporting ready.
  TempDir dir;
  std::filesystem::create_directories(dir.Sub("faults"));
  Daemon d;
  REQUIRE(StartWithShim(d, dir.Sub("data"), dir.Sub("faults"), {"--sync", "batch"}));
  auto c = MakeClient(d.grpc_address());
  std::set<uint64_t> acked;
  for (int i = 0; i < 5; ++i) {
    auto r = c.Enqueue(Req("q", "t", "{}"));
    REQUIRE(r.ok());
    acked.insert(r->job().id());
  }
  // Let the timer make those durable, then break the disk.
  std::this_thread::sleep_for(500ms);
  REQUIRE(WriteFile(dir.Sub("faults/fsync_eio"), ""));
  CHECK(WaitFor([&] { return HttpGet(d.http_port(), "/readyz").status == 503; }, 10s));
  CHECK(HttpGet(d.http_port(), "/readyz").body.find("fsync") != std::string::npos);
  auto refused = c.Enqueue(Req("q", "t", "{}", "after-eio"));
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == Code::kUnavailable);
  CHECK(refused.status().message().find("restart") != std::string::npos);
  std::filesystem::remove(dir.Sub("faults/fsync_eio"));

  d.Signal(SIGKILL);
  d.Wait();
  Daemon d2;
  REQUIRE(d2.Start(dir.Sub("data")));
  CheckNothingLost(d2.grpc_address(), acked);
  REQUIRE(Terminate(d2).code == 0);
  AuditOk(dir.Sub("data"));
}

}  // namespace
}  // namespace ledgerq::testing
