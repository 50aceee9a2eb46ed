#include "storage/reconcile.h"

#include <algorithm>
#include <unordered_map>

namespace ledgerq::storage {
namespace {

struct LogJob {
  std::string queue;
  State state = v1::STATE_UNSPECIFIED;
  uint64_t last_seq = 0;     // the event that gave `state`
  uint64_t removed_seq = 0;  // a RECORD_REMOVED event, if any
};

void Differ(RecountReport* r, const std::string& queue, std::string line) {
  if (r->differences.size() < kMaxListedDifferences) {
    r->differences.push_back(std::move(line));
    r->difference_queues.push_back(queue);
  } else {
    ++r->omitted_differences;
  }
}

std::string Job(uint64_t id) { return "job " + std::to_string(id); }

}  // namespace

std::string StateShortName(State s) {
  std::string name = v1::State_Name(s);
  return name.rfind("STATE_", 0) == 0 ? name.substr(6) : name;
}

Result<RecountReport> Recount(const ReadView& view, int64_t now_us) {
  RecountReport r;
  r.head_seq = view.head_seq();
  std::unordered_map<uint64_t, LogJob> log;
  LEDGERQ_RETURN_IF_ERROR(view.ScanRawEvents(0, [&](const RawEvent& raw) {
    if (r.first_seq == 0) r.first_seq = raw.seq;
    ++r.events_checked;
    const EventBody& ev = raw.event;
    if (ev.job_id() == 0) return true;  // queue and policy events
    LogJob& job = log[ev.job_id()];
    if (job.queue.empty()) job.queue = ev.queue();
    if (ev.type() == v1::EVENT_RECORD_REMOVED) {
      job.removed_seq = raw.seq;
    } else if (ev.to_state() != v1::STATE_UNSPECIFIED) {
      job.state = ev.to_state();
      job.last_seq = raw.seq;
    }
    return true;
  }));

  LEDGERQ_RETURN_IF_ERROR(view.ScanJobs([&](const JobRecord& rec) {
    ++r.jobs_checked;
    r.counts[{rec.queue(), rec.state()}].live++;
    if (rec.state() == v1::STATE_SCHEDULED && rec.run_at_us() <= now_us) {
      r.scheduled_due[rec.queue()]++;
    }
    auto it = log.find(rec.id());
    if (it == log.end()) {
      const uint64_t last = rec.event_seqs_size() > 0
                                ? static_cast<uint64_t>(*std::max_element(rec.event_seqs().begin(),
                                                                          rec.event_seqs().end()))
                                : rec.last_event_seq();
      if (r.first_seq != 0 && last < r.first_seq) {
        // Its whole history was archived: the retained log cannot speak for it.
        ++r.archived_only;
        r.counts[{rec.queue(), rec.state()}].from_log++;
      } else {
        Differ(&r, rec.queue(),
               Job(rec.id()) + " (queue " + rec.queue() + ") is " + StateShortName(rec.state()) +
                   " but has no event in the log");
      }
      return true;
    }
    LogJob& lj = it->second;
    if (lj.removed_seq != 0) {
      Differ(&r, rec.queue(),
             Job(rec.id()) + " still has a record (" + StateShortName(rec.state()) +
                 ") though event " + std::to_string(lj.removed_seq) + " removed it");
    } else if (lj.state == v1::STATE_UNSPECIFIED) {
      Differ(&r, rec.queue(),
             Job(rec.id()) + " is " + StateShortName(rec.state()) +
                 " but none of its retained events states one");
    } else {
      r.counts[{lj.queue, lj.state}].from_log++;
      if (lj.queue != rec.queue()) {
        Differ(&r, rec.queue(),
               Job(rec.id()) + ": the log puts it in queue " + lj.queue + ", its record in queue " +
                   rec.queue());
      } else if (lj.state != rec.state()) {
        Differ(&r, rec.queue(),
               Job(rec.id()) + " (queue " + rec.queue() + "): the log says " +
                   StateShortName(lj.state) + " (event " + std::to_string(lj.last_seq) +
                   "), its record says " + StateShortName(rec.state()));
      }
    }
    log.erase(it);
    return true;
  }));

  // What is left in `log` has no live record.
  std::vector<uint64_t> missing;
  for (const auto& [id, lj] : log) {
    if (lj.removed_seq != 0) {
      ++r.removed;
    } else if (lj.state != v1::STATE_UNSPECIFIED) {
      r.counts[{lj.queue, lj.state}].from_log++;
      missing.push_back(id);
    }
  }
  std::sort(missing.begin(), missing.end());
  for (uint64_t id : missing) {
    const LogJob& lj = log[id];
    Differ(&r, lj.queue,
           Job(id) + " (queue " + lj.queue + ") is " + StateShortName(lj.state) +
               " in the log (event " + std::to_string(lj.last_seq) +
               ") but has no record, and no RECORD_REMOVED event");
  }

  r.notes.push_back("log and job records read from one snapshot at event " +
                    std::to_string(r.head_seq));
  if (r.first_seq > 1) {
    r.notes.push_back("events before " + std::to_string(r.first_seq) +
                      " are archived; jobs are recounted from their retained events");
  }
  if (r.archived_only > 0) {
    r.notes.push_back(std::to_string(r.archived_only) +
                      " jobs have every event archived; the log column counts them by their "
                      "record (verify the archives for them)");
  }
  if (r.removed > 0) {
    r.notes.push_back(std::to_string(r.removed) +
                      " jobs were removed by retention (RECORD_REMOVED); counted in no state");
  }
  r.notes.push_back("PURGED events keep a job's state (only payload and result go)");
  return r;
}

namespace {

// The live count as the dispatcher sees it: due SCHEDULED jobs are READY there.
uint64_t EffectiveLive(const RecountReport& r, const StateKey& key, uint64_t live) {
  auto due = r.scheduled_due.find(key.first);
  if (due == r.scheduled_due.end()) return live;
  if (key.second == v1::STATE_READY) return live + due->second;
  if (key.second == v1::STATE_SCHEDULED) return live - std::min(live, due->second);
  return live;
}

}  // namespace

std::map<StateKey, int64_t> GaugeMismatches(const GaugeCounts& gauge, const RecountReport& report) {
  std::set<StateKey> keys;
  for (const auto& [key, t] : report.counts) keys.insert(key);
  for (const auto& [key, n] : gauge) keys.insert(key);
  for (const auto& [queue, n] : report.scheduled_due) keys.insert({queue, v1::STATE_READY});
  std::map<StateKey, int64_t> out;
  for (const auto& key : keys) {
    auto c = report.counts.find(key);
    auto g = gauge.find(key);
    uint64_t live = EffectiveLive(report, key, c == report.counts.end() ? 0 : c->second.live);
    uint64_t shown = g == gauge.end() ? 0 : g->second;
    if (live != shown) out[key] = static_cast<int64_t>(live) - static_cast<int64_t>(shown);
  }
  return out;
}

void CompareWithGauge(const GaugeCounts& gauge, RecountReport* report,
                      const std::set<StateKey>* listed) {
  auto bad = GaugeMismatches(gauge, *report);
  for (const auto& [key, n] : gauge) report->counts[key].gauge = n;
  for (const auto& [key, delta] : bad) {
    if (listed && !listed->count(key)) continue;
    const StateTally& t = report->counts[key];
    const uint64_t live = EffectiveLive(*report, key, t.live);
    std::string due;
    if (live != t.live) due = " (counting due SCHEDULED jobs as READY)";
    Differ(report, key.first,
           "queue " + key.first + " " + StateShortName(key.second) + ": " + std::to_string(live) +
               " job records" + due + ", the ledgerq_jobs gauge says " + std::to_string(t.gauge));
  }
}

void ScopeRecount(RecountReport* report, const std::function<bool(const std::string&)>& visible) {
  for (auto it = report->counts.begin(); it != report->counts.end();) {
    it = visible(it->first.first) ? std::next(it) : report->counts.erase(it);
  }
  std::vector<std::string> lines, queues;
  for (size_t i = 0; i < report->differences.size(); ++i) {
    if (!visible(report->difference_queues[i])) continue;
    lines.push_back(std::move(report->differences[i]));
    queues.push_back(std::move(report->difference_queues[i]));
  }
  report->differences = std::move(lines);
  report->difference_queues = std::move(queues);
  // Differences beyond the listed ones are not known by queue: they are not claimed either.
  report->omitted_differences = 0;
  for (auto it = report->scheduled_due.begin(); it != report->scheduled_due.end();) {
    it = visible(it->first) ? std::next(it) : report->scheduled_due.erase(it);
  }
}

}  // namespace ledgerq::storage
