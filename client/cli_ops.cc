// Operator commands: queues, jobs, dlq list/redrive, pause, resume.
#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "client/cli_common.h"
#include "client/render.h"

namespace ledgerq::cli {
namespace {

using google::protobuf::util::TimeUtil;

std::string Age(const google::protobuf::Duration& d) {
  int64_t us = TimeUtil::DurationToMicroseconds(d);
  return us == 0 ? "-" : FormatDuration(std::chrono::microseconds(us));
}

std::string Short(const std::string& s, size_t n) {
  std::string one = s.substr(0, s.find('\n'));
  return one.size() <= n ? one : one.substr(0, n - 3) + "...";
}

nlohmann::json QueueJson(const v1::QueueInfo& q) {
  return {
      {"name", q.name()},
      {"paused", q.paused()},
      {"scheduled", q.scheduled()},
      {"ready", q.ready()},
      {"leased", q.leased()},
      {"succeeded", q.succeeded()},
      {"dead", q.dead()},
      {"cancelled", q.cancelled()},
      {"oldest_ready_age_seconds", TimeUtil::DurationToMicroseconds(q.oldest_ready_age()) / 1e6},
      {"held_back", q.held_back()},
      {"limits", LimitsJson(q.limits())},
      {"circuits", [&] {
         auto arr = nlohmann::json::array();
         for (const auto& c : q.circuits()) arr.push_back(CircuitJson(c));
         return arr;
       }()}};
}

Result<v1::JobState> ParseState(const std::string& s) {
  if (s.empty()) return v1::JOB_STATE_UNSPECIFIED;
  std::string upper = s;
  std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
  v1::JobState state;
  if (!v1::JobState_Parse("JOB_STATE_" + upper, &state) || state == v1::JOB_STATE_UNSPECIFIED) {
    return Status::InvalidArgument("--state: \"" + s +
                                   "\" is not one of scheduled, ready, leased, succeeded, dead, "
                                   "cancelled");
  }
  return state;
}

// Pages through ListJobs or ListDeadLetters until `limit` jobs or the end.
template <typename Call>
Result<std::vector<v1::Job>> Collect(Call call, v1::ListJobsRequest req, uint32_t limit) {
  std::vector<v1::Job> out;
  for (;;) {
    req.set_page_size(std::min<uint32_t>(1000, limit - out.size()));
    auto page = call(req);
    if (!page.ok()) return page.status();
    for (auto& j : *page->mutable_jobs()) out.push_back(std::move(j));
    if (page->next_page_token().empty() || out.size() >= limit) return out;
    req.set_page_token(page->next_page_token());
  }
}

int PrintJobs(const Globals& g, const std::vector<v1::Job>& jobs, bool dead) {
  if (g.output == "json") {
    auto arr = nlohmann::json::array();
    for (const auto& j : jobs) arr.push_back(client::JobToJson(j));
    std::cout << arr.dump(2) << "\n";
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  if (dead) {
    rows.push_back(
        {"ID", "QUEUE", "TYPE", "ATTEMPTS", "REASON", "ATTENTION", "COMPENSATION", "LAST_ERROR"});
  } else {
    rows.push_back({"ID", "TYPE", "STATE", "ATTEMPTS", "PRIORITY", "RUN_AT"});
  }
  for (const auto& j : jobs) {
    if (dead) {
      std::string last;
      if (j.errors_size() > 0) {
        const auto& e = j.errors(j.errors_size() - 1);
        last = e.code() + ": " + Short(e.message(), 60);
      }
      rows.push_back(
          {std::to_string(j.id()), j.queue(), j.type(), std::to_string(j.attempts()),
           j.dead_reason(), j.needs_attention() ? "needed" : "-",
           j.compensation_job_id() ? "job " + std::to_string(j.compensation_job_id()) : "-", last});
    } else {
      rows.push_back({std::to_string(j.id()), j.type(), client::StateName(j.state()),
                      std::to_string(j.attempts()), std::to_string(j.priority()),
                      TimeUtil::ToString(j.run_at())});
    }
  }
  PrintTable(rows);
  return 0;
}

}  // namespace

void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    width.resize(std::max(width.size(), r.size()));
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  }
}

int RunQueues(const Globals& g) {
  auto client = Connect(g);
  if (!client.ok()) return Fail(client.status());
  auto r = client->ListQueues();
  if (!r.ok()) return Fail(r.status());
  if (g.output == "json") {
    auto arr = nlohmann::json::array();
    for (const auto& q : r->queues()) arr.push_back(QueueJson(q));
    std::cout << arr.dump(2) << "\n";
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {{"QUEUE", "STATE", "SCHEDULED", "READY", "LEASED",
                                                 "SUCCEEDED", "DEAD", "CANCELLED", "OLDEST_READY"}};
  for (const auto& q : r->queues()) {
    rows.push_back({q.name(), q.paused() ? "paused" : "active", std::to_string(q.scheduled()),
                    std::to_string(q.ready()), std::to_string(q.leased()),
                    std::to_string(q.succeeded()), std::to_string(q.dead()),
                    std::to_string(q.cancelled()), Age(q.oldest_ready_age())});
  }
  PrintTable(rows);
  for (const auto& q : r->queues()) {
    for (const auto& line : FlowLines(q)) std::cout << line << "\n";
  }
  return 0;
}

int RunJobs(const Globals& g, const std::string& queue, const std::string& state,
            const std::string& type, uint32_t limit) {
  auto st = ParseState(state);
  if (!st.ok()) return Fail(st.status());
  auto client = Connect(g);
  if (!client.ok()) return Fail(client.status());
  v1::ListJobsRequest req;
  req.set_queue(queue);
  req.set_state(*st);
  req.set_type(type);
  auto jobs =
      Collect([&](const v1::ListJobsRequest& r) { return client->ListJobs(r); }, req, limit);
  if (!jobs.ok()) return Fail(jobs.status());
  return PrintJobs(g, *jobs, false);
}

int RunDlqList(const Globals& g, const std::string& queue, uint32_t limit, bool needs_attention) {
  if (queue.empty() && !needs_attention) {
    return Fail(Status::InvalidArgument(
        "--queue: required (without it, --needs-attention lists every queue's)"));
  }
  auto client = Connect(g);
  if (!client.ok()) return Fail(client.status());
  v1::ListJobsRequest req;
  req.set_queue(queue);
  req.set_needs_attention(needs_attention);
  auto jobs =
      Collect([&](const v1::ListJobsRequest& r) { return client->ListDeadLetters(r); }, req, limit);
  if (!jobs.ok()) return Fail(jobs.status());
  return PrintJobs(g, *jobs, true);
}

int RunDlqResolve(const Globals& g, const std::vector<uint64_t>& ids, const std::string& note) {
  if (ids.empty()) return Fail(Status::InvalidArgument("give the ids of dead jobs to resolve"));
  auto client = Connect(g);
  if (!client.ok()) return Fail(client.status());
  v1::ResolveAttentionRequest req;
  for (uint64_t id : ids) req.add_ids(id);
  req.set_note(note);
  auto r = client->ResolveAttention(req);
  if (!r.ok()) return Fail(r.status());
  int failed = 0;
  auto arr = nlohmann::json::array();
  for (int i = 0; i < r->results_size(); ++i) {
    const auto& res = r->results(i);
    if (res.has_error()) {
      ++failed;
      std::cerr << "ledgerq: " << ids[i] << ": "
                << client::FromGrpc(grpc::Status(static_cast<grpc::StatusCode>(res.error().code()),
                                                 res.error().message()),
                                    g.server)
                       .ToString()
                << "\n";
      arr.push_back({{"id", ids[i]}, {"error", res.error().message()}});
    } else if (g.output == "json") {
      arr.push_back({{"id", ids[i]}, {"resolved", true}});
    } else {
      std::cout << ids[i] << " resolved\n";
    }
  }
  if (g.output == "json") std::cout << arr.dump(2) << "\n";
  return failed ? 1 : 0;
}

int RunDlqRedrive(const Globals& g, const std::string& queue, uint32_t limit, uint64_t id) {
  if (queue.empty() == (id == 0)) {
    return Fail(Status::InvalidArgument("give --queue Q [--limit N] or --id ID"));
  }
  auto client = Connect(g);
  if (!client.ok()) return Fail(client.status());
  v1::RedriveRequest req;
  if (id) {
    req.add_ids(id);
  } else {
    req.set_queue(queue);
    req.set_limit(limit);
  }
  auto r = client->Redrive(req);
  if (!r.ok()) return Fail(r.status());
  if (id && r->results_size() == 1 && r->results(0).has_error()) {
    const auto& e = r->results(0).error();
    return Fail(client::FromGrpc(grpc::Status(static_cast<grpc::StatusCode>(e.code()), e.message()),
                                 g.server));
  }
  if (g.output == "json") {
    std::cout << nlohmann::json{{"redriven", r->redriven()}}.dump() << "\n";
  } else if (id) {
    std::cout << id << " redriven\n";
  } else {
    std::cout << r->redriven() << " dead jobs of " << queue
              << " are being redriven (paced; watch `ledgerq queues`)\n";
  }
  return 0;
}

int RunPause(const Globals& g, const std::string& queue, bool pause) {
  auto client = Connect(g);
  if (!client.ok()) return Fail(client.status());
  auto r = pause ? client->PauseQueue(queue) : client->ResumeQueue(queue);
  if (!r.ok()) return Fail(r.status());
  if (g.output == "json") {
    std::cout << QueueJson(*r).dump(2) << "\n";
  } else {
    std::cout << queue << (pause ? " paused" : " resumed") << "\n";
  }
  return 0;
}

int RunFailures(const Globals& g, const std::string& since, const std::string& queue,
                const std::string& type) {
  auto d = ParseDuration(since, "--since");
  if (!d.ok()) return Fail(d.status());
  auto client = Connect(g);
  if (!client.ok()) return Fail(client.status());
  v1::ListFailuresRequest req;
  req.set_queue(queue);
  req.set_type(type);
  *req.mutable_since() = TimeUtil::MicrosecondsToDuration(d->count());
  auto r = client->ListFailures(req);
  if (!r.ok()) return Fail(r.status());
  auto kind = [](v1::ErrorKind k) {
    return k == v1::ERROR_KIND_PERMANENT ? std::string("permanent") : std::string("transient");
  };
  if (g.output == "json") {
    auto arr = nlohmann::json::array();
    for (const auto& f : r->groups()) {
      arr.push_back({{"queue", f.queue()},
                     {"type", f.type()},
                     {"code", f.code()},
                     {"kind", kind(f.kind())},
                     {"count", f.count()},
                     {"first_seen", TimeUtil::ToString(f.first_seen())},
                     {"last_seen", TimeUtil::ToString(f.last_seen())},
                     {"sample_job_ids", std::vector<uint64_t>(f.sample_job_ids().begin(),
                                                              f.sample_job_ids().end())}});
    }
    std::cout << arr.dump(2) << "\n";
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {
      {"QUEUE", "TYPE", "CODE", "KIND", "COUNT", "FIRST_SEEN", "LAST_SEEN", "SAMPLE_JOBS"}};
  for (const auto& f : r->groups()) {
    std::string samples;
    for (uint64_t id : f.sample_job_ids())
      samples += (samples.empty() ? "" : ",") + std::to_string(id);
    rows.push_back({f.queue(), f.type(), f.code(), kind(f.kind()), std::to_string(f.count()),
                    TimeUtil::ToString(f.first_seen()), TimeUtil::ToString(f.last_seen()),
                    samples});
  }
  PrintTable(rows);
  return 0;
}

}  // namespace ledgerq::cli
