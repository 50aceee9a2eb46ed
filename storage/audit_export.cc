#include "storage/audit_export.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "storage/codec.h"

namespace ledgerq::storage {
namespace {

// Ordered: seq and the hashes come first on every line, readable fields after.
using json = nlohmann::ordered_json;

std::string Trimmed(std::string name, std::string_view prefix) {
  return name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
}

std::string TimeText(int64_t us) {
  // RFC 3339, UTC, microseconds: the resolution events are stamped with.
  int64_t secs = us >= 0 ? us / 1'000'000 : -((-us + 999'999) / 1'000'000);
  int64_t frac = us - secs * 1'000'000;
  std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%06lldZ", static_cast<long long>(frac));
  return buf;
}

std::string Hex(const std::string& bytes) { return ToHex(std::string_view(bytes)); }

// The readable fields a body gives: the same for the writer and the verifier.
json ReadableFields(const EventBody& b) {
  json j;
  j["time"] = TimeText(b.time_us());
  j["event"] = Trimmed(v1::EventType_Name(b.type()), "EVENT_");
  auto put = [&j](const char* key, const auto& value, bool present) {
    if (present) j[key] = value;
  };
  put("job_id", b.job_id(), b.job_id() != 0);
  put("queue", b.queue(), !b.queue().empty());
  put("type", b.job_type(), !b.job_type().empty());
  put("principal", b.principal(), !b.principal().empty());
  put("attempt", b.attempt(), b.attempt() != 0);
  put("from_state", Trimmed(v1::State_Name(b.from_state()), "STATE_"), b.from_state() != 0);
  put("to_state", Trimmed(v1::State_Name(b.to_state()), "STATE_"), b.to_state() != 0);
  put("worker", b.worker_id(), !b.worker_id().empty());
  put("reason", b.reason(), !b.reason().empty());
  put("idempotency_key", b.idempotency_key(), !b.idempotency_key().empty());
  put("traceparent", b.traceparent(), !b.traceparent().empty());
  put("parent_job_id", b.parent_job_id(), b.parent_job_id() != 0);
  put("related_job_id", b.related_job_id(), b.related_job_id() != 0);  // COMPENSATION_ENQUEUED
  put("needs_attention", b.needs_attention(), b.needs_attention());    // DEAD_LETTERED
  put("payload_sha256", Hex(b.payload_sha256()), !b.payload_sha256().empty());
  put("payload_size", b.payload_size(), b.payload_size() != 0);
  put("result_sha256", Hex(b.result_sha256()), !b.result_sha256().empty());
  put("result_size", b.result_size(), b.result_size() != 0);
  put("policy_version", b.policy_version(), b.policy_version() != 0);
  put("policy_digest", Hex(b.policy_digest()), !b.policy_digest().empty());
  put("policy_text", b.policy_text(), !b.policy_text().empty());
  put("range_from_seq", b.range_from_seq(), b.range_from_seq() != 0);
  put("range_to_seq", b.range_to_seq(), b.range_to_seq() != 0);
  put("range_head_hash", Hex(b.range_head_hash()), !b.range_head_hash().empty());
  if (b.has_schedule()) {  // SCHEDULE_ADDED / SCHEDULE_REMOVED (the payload only as its digest)
    const auto& s = b.schedule();
    j["schedule"] = {{"name", s.name()},
                     {"cron", s.cron()},
                     {"source", s.source()},
                     {"missed", s.missed()},
                     {"priority", s.priority()}};
  }
  if (b.has_error()) {
    json e;
    e["code"] = b.error().code();
    e["kind"] = b.error().kind();
    if (!b.error().message().empty()) e["message"] = b.error().message();
    j["error"] = std::move(e);
  }
  return j;
}

json EventJson(const RawEvent& ev) {
  json j;
  j["seq"] = ev.seq;
  j["prev_hash"] = ToHex(ev.prev_hash);
  j["hash"] = ToHex(ev.hash);
  if (!ev.withheld.empty()) {
    j["withheld"] = ev.withheld;
    return j;
  }
  j["body"] = Base64Encode(ev.body);
  j.update(ReadableFields(ev.event));
  return j;
}

std::string Dump(const json& j) {
  // Invalid UTF-8 in a string field (protobuf does not check `bytes`-like text in every field)
  // is replaced, never thrown on: the body keeps the exact bytes.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

Status NotAfter(const ExportManifest& m, const RawEvent& ev) {
  if (ev.seq != m.to + 1) {
    return Status::InvalidArgument("event " + std::to_string(ev.seq) + " does not follow event " +
                                   std::to_string(m.to) + " (sequences must be contiguous)");
  }
  if (ev.prev_hash != m.head_hash) {
    return Status::InvalidArgument("event " + std::to_string(ev.seq) +
                                   " does not chain onto event " + std::to_string(m.to) +
                                   " (prev_hash differs)");
  }
  return Status::Ok();
}

bool FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

std::string Base64Encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

Result<std::string> Base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) return Status::InvalidArgument("base64 length is not a multiple of 4");
  std::string out(text.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0) return Status::InvalidArgument("not valid base64");
  // EVP_DecodeBlock counts the padding as zero bytes.
  size_t pad = 0;
  if (!text.empty() && text.back() == '=') ++pad;
  if (text.size() > 1 && text[text.size() - 2] == '=') ++pad;
  out.resize(static_cast<size_t>(n) - pad);
  // Only the canonical spelling is accepted: anything else could hide bytes from a reader.
  if (Base64Encode(out) != text) return Status::InvalidArgument("not canonical base64");
  return out;
}

Result<Digest> DigestFromHex(std::string_view hex) {
  if (hex.size() != 64) return Status::InvalidArgument("not 64 hex digits");
  Digest d{};
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < 32; ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return Status::InvalidArgument("not lowercase hex");
    d[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return d;
}

std::string ExportEventLine(const RawEvent& ev) { return Dump(EventJson(ev)); }

std::string ExportManifestLine(const ExportManifest& m) {
  json inner;
  inner["format"] = m.withheld > 0 ? kExportFormatWithheldVersion : kExportFormatVersion;
  inner["from"] = m.from;
  inner["to"] = m.to;
  inner["count"] = m.count;
  inner["prev_hash"] = ToHex(m.prev_hash);
  inner["head_hash"] = ToHex(m.head_hash);
  if (m.withheld > 0) inner["withheld"] = m.withheld;
  json j;
  j["manifest"] = std::move(inner);
  return Dump(j);
}

Result<RawEvent> ParseExportEventLine(std::string_view line) {
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Status::InvalidArgument("not a JSON object");
  auto text = [&j](const char* key) -> Result<std::string> {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string()) {
      return Status::InvalidArgument(std::string("\"") + key + "\" is missing or not a string");
    }
    return it->get<std::string>();
  };
  RawEvent ev;
  auto seq = j.find("seq");
  if (seq == j.end() || !seq->is_number_unsigned()) {
    return Status::InvalidArgument("\"seq\" is missing or not a positive integer");
  }
  ev.seq = seq->get<uint64_t>();
  for (auto [key, out] : {std::pair{"prev_hash", &ev.prev_hash}, std::pair{"hash", &ev.hash}}) {
    auto hex = text(key);
    if (!hex.ok()) return hex.status();
    auto d = DigestFromHex(*hex);
    if (!d.ok())
      return Status::InvalidArgument(std::string("\"") + key + "\": " + d.status().message());
    *out = *d;
  }
  if (j.contains("withheld")) {
    auto why = text("withheld");
    if (!why.ok()) return why.status();
    if (*why != "payload" && *why != "scope") {
      return Status::InvalidArgument("\"withheld\": must be \"payload\" or \"scope\", got \"" +
                                     *why + "\"");
    }
    ev.withheld = std::move(why).value();
    if (ExportEventLine(ev) != line) {
      return Status::InvalidArgument("a withheld event's line holds fields it should not");
    }
    return ev;
  }
  auto b64 = text("body");
  if (!b64.ok()) return b64.status();
  auto body = Base64Decode(*b64);
  if (!body.ok()) return Status::InvalidArgument("\"body\": " + body.status().message());
  ev.body = std::move(body).value();
  if (!ev.event.ParseFromString(ev.body)) {
    return Status::InvalidArgument("\"body\" is not an event body");
  }
  if (ev.event.seq() != ev.seq) {
    return Status::InvalidArgument("the body says it is event " + std::to_string(ev.event.seq()) +
                                   ", the line says " + std::to_string(ev.seq));
  }
  if (ChainHash(ev.prev_hash, ev.body) != ev.hash) {
    return Status::InvalidArgument("hash differs from SHA-256(prev_hash || body): altered");
  }
  // Every line is a pure function of the hashed event: anything else was edited in.
  if (ExportEventLine(ev) != line) {
    return Status::InvalidArgument("the readable fields differ from the hashed body: altered");
  }
  return ev;
}

Result<std::string> ExportBuilder::Add(const RawEvent& ev) {
  if (manifest_.count > 0) {
    LEDGERQ_RETURN_IF_ERROR(NotAfter(manifest_, ev));
  } else if (ev.seq == 0) {
    return Status::InvalidArgument("event sequence 0 does not exist");
  }
  std::string line = ExportEventLine(ev);
  line.push_back('\n');
  if (manifest_.count == 0) {
    manifest_.from = ev.seq;
    manifest_.prev_hash = ev.prev_hash;
  }
  manifest_.to = ev.seq;
  manifest_.head_hash = ev.hash;
  ++manifest_.count;
  if (!ev.withheld.empty()) ++manifest_.withheld;
  return line;
}

Result<std::string> ExportBuilder::Finish() const {
  if (manifest_.count == 0) return Status::FailedPrecondition("an export needs at least one event");
  return ExportManifestLine(manifest_) + "\n";
}

// ---------------------------------------------------------------------------------------------

ExportFile::ExportFile(std::string path, std::FILE* file)
    : path_(std::move(path)), tmp_path_(path_ + ".tmp"), file_(file) {}

ExportFile::~ExportFile() {
  if (file_) std::fclose(file_);
  if (!committed_) std::remove(tmp_path_.c_str());
}

Result<std::unique_ptr<ExportFile>> ExportFile::Create(const std::string& path) {
  if (path.empty()) return Status::InvalidArgument("export file: the path is empty");
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    return Status::AlreadyExists("export file " + path + " exists; archives are never replaced");
  }
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wbx");
  if (!f && errno == EEXIST) {
    // A leftover of an interrupted export: it was never committed, so nothing relies on it.
    std::remove(tmp.c_str());
    f = std::fopen(tmp.c_str(), "wbx");
  }
  if (!f)
    return Status::Unavailable("export file: cannot create " + tmp + ": " + std::strerror(errno));
  return std::unique_ptr<ExportFile>(new ExportFile(path, f));
}

Status ExportFile::Write(std::string_view bytes) {
  if (!file_ || committed_) return Status::FailedPrecondition("export file is already committed");
  if (std::fwrite(bytes.data(), 1, bytes.size(), file_) != bytes.size()) {
    return Status::Unavailable("export file: cannot write " + tmp_path_ + ": " +
                               std::strerror(errno));
  }
  return Status::Ok();
}

Status ExportFile::Add(const RawEvent& ev) {
  if (!file_ || committed_) return Status::FailedPrecondition("export file is already committed");
  auto line = builder_.Add(ev);
  if (!line.ok()) return line.status();
  return Write(*line);
}

Result<ExportManifest> ExportFile::Commit() {
  auto last = builder_.Finish();
  if (!last.ok()) return last.status();
  LEDGERQ_RETURN_IF_ERROR(Write(*last));
  auto fail = [this](const char* what) {
    return Status::Unavailable(std::string("export file: cannot ") + what + " " + tmp_path_ + ": " +
                               std::strerror(errno));
  };
  if (std::fflush(file_) != 0) return fail("write");
  if (::fsync(::fileno(file_)) != 0) return fail("fsync");
  int rc = std::fclose(file_);
  file_ = nullptr;
  if (rc != 0) return fail("close");
  // link(2) rather than rename(2): it refuses to replace a file that appeared meanwhile.
  if (::link(tmp_path_.c_str(), path_.c_str()) != 0) {
    return Status::Unavailable("export file: cannot create " + path_ + ": " + std::strerror(errno));
  }
  committed_ = true;
  std::remove(tmp_path_.c_str());
  std::string dir = std::filesystem::path(path_).parent_path().string();
  if (!FsyncDir(dir.empty() ? "." : dir)) {
    return Status::Unavailable("export file: cannot fsync directory " + dir + ": " +
                               std::strerror(errno));
  }
  return builder_.manifest();
}

// ---------------------------------------------------------------------------------------------

ExportCheck VerifyExport(std::istream& in) {
  ExportCheck check;
  ExportManifest seen;  // what the event lines add up to
  std::string line;
  uint64_t number = 0;
  bool manifest_read = false;
  auto fail = [&check](uint64_t line_no, uint64_t seq, std::string problem) {
    check.ok = false;
    check.line = line_no;
    check.first_bad_seq = seq;
    check.problem = std::move(problem);
    return check;
  };
  while (std::getline(in, line)) {
    ++number;
    const uint64_t expected = seen.count == 0 ? 0 : seen.to + 1;
    if (manifest_read) {
      return fail(number, 0, "line " + std::to_string(number) + " follows the manifest");
    }
    json j = json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("manifest")) {
      manifest_read = true;
      const json& m = j["manifest"];
      auto number_of = [&m](const char* key, uint64_t* out) {
        auto it = m.find(key);
        if (it == m.end() || !it->is_number_unsigned()) return false;
        *out = it->get<uint64_t>();
        return true;
      };
      auto digest_of = [&m](const char* key, Digest* out) {
        auto it = m.find(key);
        if (it == m.end() || !it->is_string()) return false;
        auto d = DigestFromHex(it->get<std::string>());
        if (!d.ok()) return false;
        *out = *d;
        return true;
      };
      uint64_t format = 0;
      ExportManifest& stated = check.manifest;
      if (!m.is_object() || !number_of("format", &format) || !number_of("from", &stated.from) ||
          !number_of("to", &stated.to) || !number_of("count", &stated.count) ||
          !digest_of("prev_hash", &stated.prev_hash) ||
          !digest_of("head_hash", &stated.head_hash)) {
        return fail(number, 0,
                    "the manifest is malformed (format, from, to, count, prev_hash, "
                    "head_hash)");
      }
      if (format != static_cast<uint64_t>(kExportFormatVersion) &&
          format != static_cast<uint64_t>(kExportFormatWithheldVersion)) {
        return fail(number, 0, "unknown export format " + std::to_string(format));
      }
      if (m.contains("withheld") && !number_of("withheld", &stated.withheld)) {
        return fail(number, 0, "the manifest's withheld is not a count");
      }
      if (stated.withheld != seen.withheld) {
        return fail(number, 0,
                    "the manifest counts " + std::to_string(stated.withheld) +
                        " withheld events, the file holds " + std::to_string(seen.withheld));
      }
      if (ExportManifestLine(stated) != line) {
        return fail(number, 0, "the manifest line holds fields it should not");
      }
      if (seen.count == 0) return fail(number, 0, "the export holds no events");
      if (stated.count != seen.count) {
        return fail(number, 0,
                    "the manifest counts " + std::to_string(stated.count) +
                        " events, the file "
                        "holds " +
                        std::to_string(seen.count));
      }
      if (stated.from != seen.from || stated.to != seen.to) {
        return fail(number, 0,
                    "the manifest names events " + std::to_string(stated.from) + ".." +
                        std::to_string(stated.to) + ", the file holds " +
                        std::to_string(seen.from) + ".." + std::to_string(seen.to));
      }
      if (stated.prev_hash != seen.prev_hash) {
        return fail(
            number, seen.from,
            "the manifest's prev_hash is not event " + std::to_string(seen.from) + "'s prev_hash");
      }
      if (stated.head_hash != seen.head_hash) {
        return fail(number, seen.to,
                    "the manifest's head_hash is not event " + std::to_string(seen.to) + "'s hash");
      }
      continue;
    }
    auto ev = ParseExportEventLine(line);
    if (!ev.ok()) {
      // Name the sequence the line claims if it has one, else the one it should hold.
      uint64_t seq = expected;
      if (!j.is_discarded() && j.is_object() && j.contains("seq") &&
          j["seq"].is_number_unsigned()) {
        seq = j["seq"].get<uint64_t>();
      }
      return fail(number, seq,
                  "line " + std::to_string(number) + " (event " + std::to_string(seq) +
                      "): " + ev.status().message());
    }
    if (seen.count > 0) {
      if (ev->seq != expected) {
        return fail(number, expected,
                    "line " + std::to_string(number) + ": event " + std::to_string(expected) +
                        " is missing or out of order (the line holds event " +
                        std::to_string(ev->seq) + ")");
      }
      if (ev->prev_hash != seen.head_hash) {
        return fail(number, ev->seq,
                    "line " + std::to_string(number) + ": event " + std::to_string(ev->seq) +
                        " does not chain onto event " + std::to_string(seen.to) +
                        " (prev_hash differs)");
      }
    } else {
      seen.from = ev->seq;
      seen.prev_hash = ev->prev_hash;
    }
    seen.to = ev->seq;
    seen.head_hash = ev->hash;
    ++seen.count;
    if (!ev->withheld.empty()) ++seen.withheld;
    check.events = seen.count;
  }
  if (in.bad()) return fail(number, 0, "the export could not be read");
  if (!manifest_read) {
    return fail(number + 1, seen.count ? seen.to + 1 : 0,
                "the closing manifest line is missing (file truncated?)");
  }
  return check;
}

Result<ExportCheck> VerifyExportFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return Status::NotFound("export file " + path + " not found");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Unavailable("export file " + path + " cannot be read");
  return VerifyExport(in);
}

ExportCheck CheckChainsOnto(const ExportManifest& earlier, ExportCheck later) {
  if (!later.ok) return later;
  if (later.manifest.from != earlier.to + 1) {
    later.ok = false;
    later.line = 1;
    later.first_bad_seq = later.manifest.from;
    later.problem = "the export starts at event " + std::to_string(later.manifest.from) +
                    ", the earlier one ends at " + std::to_string(earlier.to) + " (expected " +
                    std::to_string(earlier.to + 1) + ")";
  } else if (later.manifest.prev_hash != earlier.head_hash) {
    later.ok = false;
    later.line = 1;
    later.first_bad_seq = later.manifest.from;
    later.problem = "event " + std::to_string(later.manifest.from) +
                    " does not chain onto the earlier export's head (prev_hash differs)";
  }
  return later;
}

}  // namespace ledgerq::storage
