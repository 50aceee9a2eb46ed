#include "server/housekeeping.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <future>

#include "storage/audit_export.h"

namespace ledgerq::server {

constexpr char kArchivePrincipal[] = "ledgerqd:archive";

Result<storage::Checkpoint> ArchiveRange(storage::JobStore& store, const std::string& dir,
                                         uint64_t to_seq, const std::string& principal) {
  const uint64_t from = store.GetCheckpoint().seq + 1;
  if (to_seq < from) {
    return Status::InvalidArgument("to_seq: " + std::to_string(to_seq) +
                                   " is not after the checkpoint (" + std::to_string(from - 1) +
                                   ")");
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return Status::Unavailable("archive-dir: cannot create " + dir + ": " + ec.message());
  }
  const std::string path = (std::filesystem::path(dir) / ("audit-" + std::to_string(from) + "-" +
                                                          std::to_string(to_seq) + ".jsonl"))
                               .string();
  auto file = storage::ExportFile::Create(path);
  if (!file.ok()) return file.status();
  Status add;
  LEDGERQ_RETURN_IF_ERROR(store.ScanRawEvents(from, [&](const storage::RawEvent& ev) {
    if (ev.seq > to_seq) return false;
    add = (*file)->Add(ev);
    return add.ok();
  }));
  LEDGERQ_RETURN_IF_ERROR(add);
  if ((*file)->manifest().to != to_seq || (*file)->manifest().from != from) {
    return Status::FailedPrecondition("archive: the log no longer holds events " +
                                      std::to_string(from) + ".." + std::to_string(to_seq) +
                                      " (archived meanwhile by someone else?)");
  }
  auto manifest = (*file)->Commit();  // fsyncs the file, renames it, fsyncs the directory
  if (!manifest.ok()) return manifest.status();
  std::promise<Result<storage::Checkpoint>> p;
  auto f = p.get_future();
  store.TruncateLog(manifest->to, manifest->head_hash, principal,
                    [&p](Result<storage::Checkpoint> r) { p.set_value(std::move(r)); });
  auto cp = f.get();
  if (!cp.ok()) {
    return Status(
        cp.status().code(),
        "archive " + path + " written, but the log was not truncated: " + cp.status().message());
  }
  // Give the space back now rather than whenever compaction reaches the range.
  LEDGERQ_RETURN_IF_ERROR(store.CompactArchived());
  return cp;
}

Housekeeper::Housekeeper(storage::JobStore* store, metrics::Metrics* metrics, Clock* clock,
                         HousekeepingOptions opts)
    : store_(store), metrics_(metrics), clock_(clock), opts_(std::move(opts)) {}

Housekeeper::~Housekeeper() { Stop(); }

void Housekeeper::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void Housekeeper::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Status Housekeeper::RunOnce() {
  auto swept = store_->RunRetention(opts_.batch);
  if (!swept.ok()) return swept.status();
  if (metrics_) {
    metrics_->RetentionSwept(swept->purged_payloads, swept->removed_records, swept->expired_keys,
                             swept->seconds);
  }
  if (swept->purged_payloads + swept->removed_records + swept->expired_keys > 0) {
    spdlog::info(
        "retention: purged {} payloads, removed {} records, expired {} idempotency keys in "
        "{:.3f}s ({} batches)",
        swept->purged_payloads, swept->removed_records, swept->expired_keys, swept->seconds,
        swept->batches);
  }
  auto archived = ArchiveDue();
  if (!archived.ok()) {
    if (metrics_) metrics_->ArchiveFailed();
    return archived.status();
  }
  return Status::Ok();
}

Result<uint64_t> Housekeeper::ArchiveDue() {
  if (opts_.archive_dir.empty() || opts_.archive_after.count() <= 0) return uint64_t{0};
  const int64_t cutoff = clock_->WallMicros() - opts_.archive_after.count();
  const uint64_t from = store_->GetCheckpoint().seq + 1;
  uint64_t to = 0;
  bool only_archive_marks = true;
  LEDGERQ_RETURN_IF_ERROR(store_->ScanEvents(from, [&](const storage::EventBody& ev) {
    if (ev.time_us() > cutoff || ev.seq() - from >= opts_.max_archive_events) return false;
    to = ev.seq();
    only_archive_marks &= ev.type() == storage::v1::EVENT_LOG_ARCHIVED;
    return true;
  }));
  // Nothing but the previous round's LOG_ARCHIVED event: an idle daemon writes no files.
  if (to < from || only_archive_marks) return uint64_t{0};
  auto cp = ArchiveRange(*store_, opts_.archive_dir, to, kArchivePrincipal);
  if (!cp.ok()) return cp.status();
  const uint64_t events = to - from + 1;
  if (metrics_) metrics_->LogArchived(events);
  spdlog::info("archived events {}..{} to {}/audit-{}-{}.jsonl", from, to, opts_.archive_dir, from,
               to);
  return events;
}

void Housekeeper::Loop() {
  auto indexed = store_->RebuildRetentionIndex();
  if (!indexed.ok()) {
    spdlog::error("retention: indexing finished jobs failed: {}", indexed.status().message());
  } else if (*indexed > 0) {
    spdlog::info("retention: indexed {} finished jobs and idempotency keys", *indexed);
  }
  std::unique_lock lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, opts_.interval, [this] { return stop_; });
    if (stop_) break;
    lock.unlock();
    Status st = RunOnce();
    if (!st.ok()) spdlog::error("housekeeping: {}", st.message());
    lock.lock();
  }
}

}  // namespace ledgerq::server
