// The audit export format, in one place: what `ledgerq audit export` and `ledgerq audit archive`
// write, what the daemon's automatic archiving writes, and what `ledgerq audit verify --archive`
// checks. It must never depend on anything but the hashed event bytes: every line of a file is a
// pure function of (seq, prev_hash, hash, body), so two exports of the same range are identical
// and an edited readable field is caught like an edited body.
//
// Format (JSON Lines, UTF-8, '\n' after every line):
//   one line per event, in sequence order:
//     {"seq":12,"prev_hash":"<64 hex>","hash":"<64 hex>","body":"<base64 of the EventBody
//      bytes exactly as hashed>","time":"2026-11-29T15:44:37.123456Z","event":"SUBMITTED",
//      "job_id":3,"queue":"q","type":"email","principal":"...", ...}
//     (readable fields derived from the body; empty ones are left out)
//   or, for an event the exporting caller may not see (format 2 only):
//     {"seq":13,"prev_hash":"<64 hex>","hash":"<64 hex>","withheld":"payload"|"scope"}
//     ("payload": an event from before 2026-12 whose body holds a masked payload snapshot, for a
//     role without payload access; "scope": an event of a queue outside the caller's, or of no
//     queue). Its links are checked; its own hash cannot be recomputed without the body.
//   then exactly one closing line:
//     {"manifest":{"format":1,"from":1,"to":12,"count":12,"prev_hash":"<hex>",
//                  "head_hash":"<hex>"}}
//   (format 2, with "withheld":K after head_hash, when K > 0 lines are withheld; an export
//   with nothing withheld is format 1, byte for byte what earlier versions wrote)
// hash = SHA-256(prev_hash || body). prev_hash of the manifest is the prev_hash of event `from`
// (the checkpoint the range chains onto; all zeros for event 1), head_hash the hash of `to`.
// A later export chains onto an earlier one when later.from == earlier.to + 1 and
// later.prev_hash == earlier.head_hash.
//
// To change the format: bump kExportFormatVersion and keep verifying every older version.
#pragma once

#include <cstdint>
#include <cstdio>
#include <istream>
#include <memory>
#include <string>
#include <string_view>

#include "common/sha256.h"
#include "common/status.h"
#include "storage/job_store.h"

namespace ledgerq::storage {

inline constexpr int kExportFormatVersion = 1;          // every event with its body
inline constexpr int kExportFormatWithheldVersion = 2;  // some events withheld

struct ExportManifest {
  uint64_t from = 0;
  uint64_t to = 0;
  uint64_t count = 0;
  Digest prev_hash{};     // prev_hash of event `from`: what the range chains onto
  Digest head_hash{};     // hash of event `to`
  uint64_t withheld = 0;  // lines without a body (format 2)
};

// One event's line (no trailing '\n'), and the closing manifest line.
std::string ExportEventLine(const RawEvent& ev);
std::string ExportManifestLine(const ExportManifest& m);

// Parses one event line back into the event it was made from. Checks the line's own integrity
// (the body decodes, its seq is the line's, the hash is SHA-256(prev_hash || body), the readable
// fields are the ones the body gives); not its place in a file.
[[nodiscard]] Result<RawEvent> ParseExportEventLine(std::string_view line);

// Builds an export line by line. Events must come in order and chained: each one's seq follows
// the previous one's and its prev_hash is the previous hash; anything else is refused and
// changes nothing, so a builder never produces a file that would not verify.
class ExportBuilder {
 public:
  // The event's line, '\n' included.
  [[nodiscard]] Result<std::string> Add(const RawEvent& ev);
  // The closing manifest line, '\n' included; kFailedPrecondition when no event was added.
  [[nodiscard]] Result<std::string> Finish() const;
  const ExportManifest& manifest() const { return manifest_; }

 private:
  ExportManifest manifest_;
};

// An export written durably to a file: lines go to "<path>.tmp"; Commit() appends the manifest,
// fsyncs, renames the file to `path` and fsyncs its directory. Until Commit succeeds nothing is
// at `path`; an uncommitted ExportFile removes its .tmp when destroyed. Refuses to replace an
// existing `path` (an archive is never overwritten).
class ExportFile {
 public:
  [[nodiscard]] static Result<std::unique_ptr<ExportFile>> Create(const std::string& path);
  ~ExportFile();
  ExportFile(const ExportFile&) = delete;
  ExportFile& operator=(const ExportFile&) = delete;

  [[nodiscard]] Status Add(const RawEvent& ev);
  [[nodiscard]] Result<ExportManifest> Commit();
  const ExportManifest& manifest() const { return builder_.manifest(); }

 private:
  ExportFile(std::string path, std::FILE* file);
  [[nodiscard]] Status Write(std::string_view bytes);

  std::string path_;
  std::string tmp_path_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
  ExportBuilder builder_;
};

// The outcome of checking an export. When !ok, `line` is the 1-based line of the first problem
// and `first_bad_seq` the sequence that line holds or should hold (0 when not known).
struct ExportCheck {
  bool ok = true;
  ExportManifest manifest;  // as the file states it (valid when ok)
  uint64_t events = 0;      // event lines that checked out before the first problem
  uint64_t first_bad_seq = 0;
  uint64_t line = 0;
  std::string problem;
};

// Checks a whole export: every line as in ParseExportEventLine, sequences contiguous, each
// prev_hash the hash before it, and the closing manifest (from, to, count, prev_hash, head_hash)
// matching the events; nothing after it.
[[nodiscard]] ExportCheck VerifyExport(std::istream& in);
// The same for a file; kNotFound / kUnavailable when it cannot be read.
[[nodiscard]] Result<ExportCheck> VerifyExportFile(const std::string& path);
// Whether `later` (a verified export) chains onto `earlier`: later.from == earlier.to + 1 and
// later's prev_hash == earlier's head hash. Returns `later`, failed with the reason if not.
[[nodiscard]] ExportCheck CheckChainsOnto(const ExportManifest& earlier, ExportCheck later);

// Base64 (RFC 4648, padded) through OpenSSL, and lowercase hex back to bytes.
std::string Base64Encode(std::string_view bytes);
[[nodiscard]] Result<std::string> Base64Decode(std::string_view text);
[[nodiscard]] Result<Digest> DigestFromHex(std::string_view hex);

}  // namespace ledgerq::storage
