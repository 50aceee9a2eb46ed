// Audit commands: verify (online, offline on a data dir, or an export file), export, archive,
// reconcile. The export format is storage/audit_export.h's, the same the daemon archives with.
#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>

#include "client/cli_common.h"
#include "storage/audit_export.h"
#include "storage/job_store.h"

namespace ledgerq::cli {
namespace {

using nlohmann::json;

// Whole-log walks take longer than one request's default deadline.
constexpr std::chrono::minutes kLongCall{10};

template <typename Resp, typename Req, typename Method>
Result<Resp> AuditCall(client::Client& c, Method method, const Req& req,
                       std::chrono::milliseconds deadline) {
  v1::AuditService::Stub stub(c.channel());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  c.Authorize(&ctx);
  Resp resp;
  Status st = client::FromGrpc((stub.*method)(&ctx, req, &resp), c.options().server);
  if (!st.ok()) return st;
  return resp;
}

Result<Digest> AsDigest(const std::string& bytes, const char* what) {
  if (bytes.size() != 32) {
    return Status::Internal(std::string("the server sent a ") + what + " of " +
                            std::to_string(bytes.size()) + " bytes");
  }
  Digest d{};
  std::copy(bytes.begin(), bytes.end(), d.begin());
  return d;
}

Result<storage::RawEvent> ToRaw(const v1::AuditEvent& e) {
  storage::RawEvent raw;
  raw.seq = e.seq();
  auto prev = AsDigest(e.prev_hash(), "prev_hash");
  if (!prev.ok()) return prev.status();
  auto hash = AsDigest(e.hash(), "hash");
  if (!hash.ok()) return hash.status();
  raw.prev_hash = *prev;
  raw.hash = *hash;
  if (!e.withheld().empty()) {  // the caller may not see it: its links still chain
    raw.withheld = e.withheld();
    return raw;
  }
  raw.body = e.body();
  if (!raw.event.ParseFromString(raw.body)) {
    return Status::Corruption("event " + std::to_string(e.seq()) + ": body cannot be decoded");
  }
  return raw;
}

// Pages through ExportAudit, handing every event to `sink` in order.
Status ExportRange(client::Client& c, const Globals& g, uint64_t from, uint64_t to,
                   const std::function<Status(const storage::RawEvent&)>& sink) {
  auto t = ParseDuration(g.timeout, "--timeout");
  if (!t.ok()) return t.status();
  const auto deadline = std::chrono::duration_cast<std::chrono::milliseconds>(*t);
  v1::ExportAuditRequest req;
  req.set_from_seq(from);
  req.set_to_seq(to);
  for (;;) {
    auto page =
        AuditCall<v1::ExportAuditResponse>(c, &v1::AuditService::Stub::ExportAudit, req, deadline);
    if (!page.ok()) return page.status();
    for (const auto& e : page->events()) {
      auto raw = ToRaw(e);
      if (!raw.ok()) return raw.status();
      LEDGERQ_RETURN_IF_ERROR(sink(*raw));
    }
    if (page->next_seq() == 0) return Status::Ok();
    req.set_from_seq(page->next_seq());
  }
}

json ManifestJson(const storage::ExportManifest& m) {
  json j{{"from", m.from},
         {"to", m.to},
         {"count", m.count},
         {"prev_hash", ToHex(m.prev_hash)},
         {"head_hash", ToHex(m.head_hash)}};
  if (m.withheld > 0) j["withheld"] = m.withheld;  // lines whose links alone were checked
  return j;
}

int PrintVerdict(const Globals& g, bool ok, uint64_t events, const std::string& head,
                 uint64_t bad_seq, const std::string& problem, json extra = json::object()) {
  if (g.output == "json") {
    json j{{"ok", ok}, {"events", events}, {"head_hash", head}};
    if (!ok) {
      j["first_bad_seq"] = bad_seq;
      j["problem"] = problem;
    }
    j.update(extra);
    std::cout << j.dump(2) << "\n";
  } else if (ok) {
    std::cout << "ok " << events << " " << head << "\n";
  } else {
    std::cout << "broken at " << bad_seq << ": " << problem << "\n";
  }
  return ok ? 0 : 1;
}

int VerifyOffline(const Globals& g, const std::string& data_dir) {
  auto report = storage::VerifyChain(data_dir);
  if (!report.ok()) return Fail(report.status());
  return PrintVerdict(g, report->ok, report->events, ToHex(report->head), report->first_bad_seq,
                      report->problem,
                      {{"checkpoint_seq", report->checkpoint_seq},
                       {"checkpoint_hash", ToHex(report->checkpoint_hash)}});
}

int VerifyOnline(const Globals& g) {
  auto c = Connect(g);
  if (!c.ok()) return Fail(c.status());
  auto r = AuditCall<v1::VerifyAuditResponse>(*c, &v1::AuditService::Stub::VerifyAudit,
                                              v1::VerifyAuditRequest(), kLongCall);
  if (!r.ok()) return Fail(r.status());
  return PrintVerdict(g, r->ok(), r->events(), ToHex(r->head_hash()), r->first_bad_seq(),
                      r->problem(),
                      {{"head_seq", r->head_seq()},
                       {"checkpoint_seq", r->checkpoint().seq()},
                       {"checkpoint_hash", ToHex(r->checkpoint().hash())}});
}

int VerifyArchive(const Globals& g, const std::string& path, const std::string& after) {
  auto check = storage::VerifyExportFile(path);
  if (!check.ok()) return Fail(check.status());
  std::string where = path;
  if (check->ok && !after.empty()) {
    auto earlier = storage::VerifyExportFile(after);
    if (!earlier.ok()) return Fail(earlier.status());
    if (!earlier->ok) {
      check = *earlier;
      where = after + " (the earlier export)";
    } else {
      check = storage::CheckChainsOnto(earlier->manifest, std::move(check).value());
    }
  }
  std::string problem;
  if (!check->ok) {
    problem = where + ": " + (check->line ? "line " + std::to_string(check->line) + ": " : "") +
              check->problem;
  }
  json extra = {{"file", path}};
  if (check->ok) extra["manifest"] = ManifestJson(check->manifest);
  if (!check->ok && check->line) extra["line"] = check->line;
  return PrintVerdict(g, check->ok, check->events, ToHex(check->manifest.head_hash),
                      check->first_bad_seq, problem, extra);
}

}  // namespace

int RunAuditVerify(const Globals& g, const AuditVerifyArgs& a) {
  if (!a.archive.empty()) {
    if (!a.data_dir.empty()) {
      return Fail(Status::InvalidArgument("--archive and --data-dir: give one of them"));
    }
    return VerifyArchive(g, a.archive, a.after);
  }
  if (!a.after.empty()) return Fail(Status::InvalidArgument("--after: needs --archive"));
  if (!a.data_dir.empty()) return VerifyOffline(g, a.data_dir);
  return VerifyOnline(g);
}

int RunAuditExport(const Globals& g, uint64_t from, uint64_t to) {
  if (to != 0 && from > to) {
    return Fail(Status::InvalidArgument("--from: " + std::to_string(from) + " is after --to " +
                                        std::to_string(to)));
  }
  auto c = Connect(g);
  if (!c.ok()) return Fail(c.status());
  storage::ExportBuilder builder;
  Status st = ExportRange(*c, g, from, to, [&](const storage::RawEvent& e) {
    auto line = builder.Add(e);
    if (!line.ok()) return line.status();
    std::cout << *line;
    return std::cout ? Status::Ok() : Status::Unavailable("cannot write to stdout");
  });
  if (!st.ok()) return Fail(st);
  auto last = builder.Finish();
  if (!last.ok()) return Fail(Status::NotFound("no events in the range to export"));
  std::cout << *last << std::flush;
  if (!std::cout) return Fail(Status::Unavailable("cannot write to stdout"));
  const auto& m = builder.manifest();
  std::cerr << "exported " << m.count << " events " << m.from << ".." << m.to << ", head "
            << ToHex(m.head_hash) << "\n";
  return 0;
}

int RunAuditArchive(const Globals& g, uint64_t from, uint64_t to, const std::string& out) {
  if (to == 0) return Fail(Status::InvalidArgument("--to: the last event to archive is required"));
  if (out.empty()) return Fail(Status::InvalidArgument("--out: the archive file is required"));
  if (from > to) {
    return Fail(Status::InvalidArgument("--from: " + std::to_string(from) + " is after --to " +
                                        std::to_string(to)));
  }
  auto c = Connect(g);
  if (!c.ok()) return Fail(c.status());
  auto file = storage::ExportFile::Create(out);
  if (!file.ok()) return Fail(file.status());
  Status st =
      ExportRange(*c, g, from, to, [&](const storage::RawEvent& e) { return (*file)->Add(e); });
  if (!st.ok()) return Fail(st);
  if ((*file)->manifest().count == 0 || (*file)->manifest().to != to) {
    return Fail(Status::FailedPrecondition("the log does not hold event " + std::to_string(to) +
                                           "; nothing archived"));
  }
  // The file is complete and on disk (fsynced, renamed, directory fsynced) before anything is
  // removed from the daemon.
  auto m = (*file)->Commit();
  if (!m.ok()) return Fail(m.status());
  v1::TruncateAuditRequest req;
  req.set_to_seq(m->to);
  req.set_to_hash(std::string(AsBytes(m->head_hash)));
  auto r = AuditCall<v1::TruncateAuditResponse>(*c, &v1::AuditService::Stub::TruncateAudit, req,
                                                kLongCall);
  if (!r.ok()) {
    std::cerr << "ledgerq: " << out << " is written and verifies; the daemon kept the events\n";
    return Fail(r.status());
  }
  if (g.output == "json") {
    json j{{"file", out},
           {"manifest", ManifestJson(*m)},
           {"removed", r->removed()},
           {"checkpoint",
            {{"seq", r->checkpoint().seq()},
             {"hash", ToHex(r->checkpoint().hash())},
             {"principal", r->checkpoint().principal()}}}};
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << "archived " << m->count << " events " << m->from << ".." << m->to << " to " << out
              << "; removed " << r->removed() << "; checkpoint " << r->checkpoint().seq() << " "
              << ToHex(r->checkpoint().hash()) << "\n";
  }
  return 0;
}

int RunAuditReconcile(const Globals& g) {
  auto c = Connect(g);
  if (!c.ok()) return Fail(c.status());
  auto r = AuditCall<v1::ReconcileResponse>(*c, &v1::AuditService::Stub::Reconcile,
                                            v1::ReconcileRequest(), kLongCall);
  if (!r.ok()) return Fail(r.status());
  auto state_name = [](v1::JobState s) {
    std::string n = v1::JobState_Name(s);
    return n.rfind("JOB_STATE_", 0) == 0 ? n.substr(10) : n;
  };
  if (g.output == "json") {
    json counts = json::array();
    for (const auto& s : r->counts()) {
      counts.push_back({{"queue", s.queue()},
                        {"state", state_name(s.state())},
                        {"from_log", s.from_log()},
                        {"live", s.live()},
                        {"metrics", s.metrics()}});
    }
    json j{
        {"ok", r->ok()},
        {"jobs_checked", r->jobs_checked()},
        {"events_checked", r->events_checked()},
        {"counts", counts},
        {"differences", std::vector<std::string>(r->differences().begin(), r->differences().end())},
        {"notes", std::vector<std::string>(r->notes().begin(), r->notes().end())}};
    std::cout << j.dump(2) << "\n";
  } else {
    std::vector<std::vector<std::string>> rows{{"QUEUE", "STATE", "LOG", "LIVE", "METRICS"}};
    for (const auto& s : r->counts()) {
      if (s.from_log() == 0 && s.live() == 0 && s.metrics() == 0) continue;
      rows.push_back({s.queue(), state_name(s.state()), std::to_string(s.from_log()),
                      std::to_string(s.live()), std::to_string(s.metrics())});
    }
    PrintTable(rows);
    for (const auto& d : r->differences()) std::cout << "difference: " << d << "\n";
    for (const auto& n : r->notes()) std::cout << "note: " << n << "\n";
    std::cout << (r->ok() ? "ok" : "DIFFERENCES") << ": " << r->jobs_checked() << " jobs, "
              << r->events_checked() << " events checked\n";
  }
  return r->ok() ? 0 : 1;
}

}  // namespace ledgerq::cli
