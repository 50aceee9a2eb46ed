// End-to-end tests of ledgerqd's Prometheus metrics and structured lifecycle logs: a live scrape
// of /metrics passes `promtool check metrics`, the lifecycle counters and histograms move by
// exactly the right amounts through a scripted scenario (and the per-second gauges follow),
// error codes are capped per queue and type, and --log-format json writes one JSON object per
// line with the standard attributes and never a payload. Every TEST_CASE owns its TempDir and
// its Daemon, so `ctest -j` is safe.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "common/status.h"
#include "tests/support/daemon.h"
#include "tests/support/e2e_helpers.h"
#include "tests/support/temp_dir.h"

namespace {

using ledgerq::client::Client;
using ledgerq::testing::CompleteReq;
using ledgerq::testing::Daemon;
using ledgerq::testing::ExitInfo;
using ledgerq::testing::FailReq;
using ledgerq::testing::HttpGet;
using ledgerq::testing::HttpReply;
using ledgerq::testing::LeaseReq;
using ledgerq::testing::Lower;
using ledgerq::testing::MakeClient;
using ledgerq::testing::Req;
using ledgerq::testing::RunCommand;
using ledgerq::testing::TempDir;
using ledgerq::testing::Terminate;
using ledgerq::testing::WaitFor;
using ledgerq::testing::WriteFile;
namespace v1 = ledgerq::v1;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Helpers

// Leases until `want` jobs of `queue` are held or `limit` passes; returns what it got.
std::vector<v1::LeasedJob> LeaseAll(Client& client, const std::string& queue, size_t want,
                                    std::chrono::milliseconds limit, std::string* why) {
  std::vector<v1::LeasedJob> got;
  const auto deadline = SteadyClock::now() + limit;
  while (got.size() < want && SteadyClock::now() < deadline) {
    auto r = client.Lease(
        LeaseReq(queue, static_cast<uint32_t>(want - got.size()), 60, 1, "e2e-metrics"));
    if (!r.ok()) {
      *why = "Lease: " + r.status().ToString();
      return got;
    }
    for (const auto& j : r->jobs()) got.push_back(j);
  }
  return got;
}

// One sample of the text exposition format.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Parses the Prometheus text exposition format (comments skipped; label values unescaped;
// an optional timestamp after the value ignored). Lines it cannot parse go to *bad.
std::vector<Sample> ParseExposition(const std::string& text, std::vector<std::string>* bad) {
  std::vector<Sample> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    Sample s;
    size_t p = 0;
    while (p < line.size() && line[p] != '{' && line[p] != ' ') ++p;
    s.name = line.substr(0, p);
    bool ok = !s.name.empty();
    if (ok && p < line.size() && line[p] == '{') {
      ++p;
      for (;;) {
        while (p < line.size() && (line[p] == ' ' || line[p] == ',')) ++p;
        if (p < line.size() && line[p] == '}') {
          ++p;
          break;
        }
        size_t eq = line.find('=', p);
        if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"') {
          ok = false;
          break;
        }
        std::string key = line.substr(p, eq - p);
        std::string value;
        p = eq + 2;
        bool closed = false;
        while (p < line.size()) {
          char c = line[p++];
          if (c == '\\' && p < line.size()) {
            char e = line[p++];
            value += e == 'n' ? '\n' : e;
          } else if (c == '"') {
            closed = true;
            break;
          } else {
            value += c;
          }
        }
        if (!closed) {
          ok = false;
          break;
        }
        s.labels[key] = value;
      }
    }
    if (ok) {
      while (p < line.size() && line[p] == ' ') ++p;
      size_t end = line.find(' ', p);
      std::string num = line.substr(p, end == std::string::npos ? std::string::npos : end - p);
      if (num.empty()) {
        ok = false;
      } else if (num == "+Inf") {
        s.value = HUGE_VAL;
      } else if (num == "-Inf") {
        s.value = -HUGE_VAL;
      } else {
        char* stop = nullptr;
        s.value = std::strtod(num.c_str(), &stop);
        ok = stop && *stop == '\0';
      }
    }
    if (ok) {
      out.push_back(std::move(s));
    } else if (bad) {
      bad->push_back(line);
    }
  }
  return out;
}

using Labels = std::map<std::string, std::string>;

// The samples named `name` whose labels include every pair of `want`.
std::vector<Sample> Matching(const std::vector<Sample>& samples, const std::string& name,
                             const Labels& want) {
  std::vector<Sample> out;
  for (const auto& s : samples) {
    if (s.name != name) continue;
    bool all = std::all_of(want.begin(), want.end(), [&](const auto& kv) {
      auto it = s.labels.find(kv.first);
      return it != s.labels.end() && it->second == kv.second;
    });
    if (all) out.push_back(s);
  }
  return out;
}

// How many samples named `name` whose labels include `want` are not zero.
size_t NonZero(const std::vector<Sample>& samples, const std::string& name, const Labels& want) {
  auto m = Matching(samples, name, want);
  return static_cast<size_t>(
      std::count_if(m.begin(), m.end(), [](const Sample& s) { return s.value != 0; }));
}

// The value of the one sample named `name` with exactly the labels `labels`; nullopt when there
// is none.
std::optional<double> Exact(const std::vector<Sample>& samples, const std::string& name,
                            const Labels& labels) {
  for (const auto& s : samples) {
    if (s.name == name && s.labels == labels) return s.value;
  }
  return std::nullopt;
}

std::string Describe(const std::optional<double>& v) {
  if (!v) return "(absent)";
  std::ostringstream o;
  o << *v;
  return o.str();
}

// The body of GET /metrics (empty on any failure, with the reason in *why).
std::string Scrape(const Daemon& d, std::string* why) {
  HttpReply r = HttpGet(d.http_port(), "/metrics");
  if (r.status != 200) {
    *why = "GET /metrics answered " + std::to_string(r.status) + ": " + r.headers;
    return "";
  }
  return r.body;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("a live /metrics scrape passes promtool check metrics", "[e2e][metrics]") {
  TempDir tmp;
  REQUIRE_FALSE(tmp.path().empty());
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  Client client = MakeClient(daemon.grpc_address());

  // A small scenario so that every lifecycle family has samples: two jobs, one completed, one
  // failed transiently, plus a deduplicated submission.
  auto a = client.Enqueue(Req("pq", "lint.a", R"({"n":1})", "lint-key"));
  REQUIRE(a.ok());
  auto again = client.Enqueue(Req("pq", "lint.a", R"({"n":1})", "lint-key"));
  REQUIRE(again.ok());
  CHECK(again->deduplicated());
  auto b = client.Enqueue(Req("pq", "lint.b", R"({"n":2})"));
  REQUIRE(b.ok());
  std::string why;
  auto leased = LeaseAll(client, "pq", 2, 5s, &why);
  INFO(why);
  REQUIRE(leased.size() == 2);
  for (const auto& lj : leased) {
    if (lj.job().type() == "lint.a") {
      REQUIRE(client.Complete(CompleteReq(lj.token(), "ok")).ok());
    } else {
      REQUIRE(client.Fail(FailReq(lj.token(), v1::ERROR_KIND_TRANSIENT, "LINT_E")).ok());
    }
  }
  // Let the gauges refresh at least once after the scenario.
  std::this_thread::sleep_for(1100ms);

  const std::string body = Scrape(daemon, &why);
  INFO(why);
  REQUIRE_FALSE(body.empty());
  INFO("scrape:\n" << body);
  CHECK_THAT(body, Catch::Contains("ledgerq_build_info{version="));
  CHECK_THAT(body, Catch::Contains("ledgerq_jobs_completed_total"));
  CHECK_THAT(body, Catch::Contains("ledgerq_job_errors_total"));
  // No per-job label: no job id, key or payload.
  CHECK_THAT(body, !Catch::Contains("job_id="));
  CHECK_THAT(body, !Catch::Contains("lint-key"));
  CHECK_THAT(body, !Catch::Contains("\"n\""));

  const char* promtool = "/usr/bin/promtool";
  if (::access(promtool, X_OK) != 0) {
    WARN("promtool is not installed at /usr/bin/promtool: skipping `promtool check metrics`");
    return;
  }
  const std::string file = tmp.Sub("scrape.prom");
  REQUIRE(WriteFile(file, body));
  std::string out, err;
  ExitInfo e = RunCommand(
      {"/bin/sh", "-c", std::string(promtool) + " check metrics < '" + file + "'"}, &out, &err);
  INFO("promtool exit " << (e.exited ? "code " : "signal ") << e.code << "\nstdout:\n"
                        << out << "\nstderr:\n"
                        << err);
  CHECK(e.exited);
  CHECK(e.code == 0);
  std::istringstream lines(err);
  std::string line;
  while (std::getline(lines, line)) {
    INFO("promtool stderr line: " << line);
    CHECK(Lower(line).find("error") == std::string::npos);
  }
}

TEST_CASE("lifecycle counters, histograms and gauges move by exactly the scenario's amounts",
          "[e2e][metrics]") {
  TempDir tmp;
  REQUIRE_FALSE(tmp.path().empty());
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  Client client = MakeClient(daemon.grpc_address());
  const std::string q = "mq";

  // Three "a" jobs (the first with a key, resubmitted once: deduplicated), one "b" with a single
  // attempt.
  auto a1 = client.Enqueue(Req(q, "a", R"({"a":1})", "mq-key-1"));
  REQUIRE(a1.ok());
  auto a2 = client.Enqueue(Req(q, "a", R"({"a":2})"));
  REQUIRE(a2.ok());
  auto a3 = client.Enqueue(Req(q, "a", R"({"a":3})"));
  REQUIRE(a3.ok());
  auto dup = client.Enqueue(Req(q, "a", R"({"a":1})", "mq-key-1"));
  REQUIRE(dup.ok());
  CHECK(dup->deduplicated());
  CHECK(dup->job().id() == a1->job().id());
  auto breq = Req(q, "b", R"({"b":1})");
  breq.set_max_attempts(1);
  auto b = client.Enqueue(breq);
  REQUIRE(b.ok());

  std::string why;
  auto leased = LeaseAll(client, q, 4, 5s, &why);
  INFO(why);
  REQUIRE(leased.size() == 4);
  std::map<uint64_t, v1::LeaseToken> token;
  for (const auto& lj : leased) token[lj.job().id()] = lj.token();
  const uint64_t id1 = a1->job().id(), id2 = a2->job().id(), id3 = a3->job().id(),
                 idb = b->job().id();
  REQUIRE(token.count(id1));
  REQUIRE(token.count(id2));
  REQUIRE(token.count(id3));
  REQUIRE(token.count(idb));

  // Two completions, one of them repeated (which must not count twice).
  REQUIRE(client.Complete(CompleteReq(token[id1], "done-1")).ok());
  REQUIRE(client.Complete(CompleteReq(token[id2], "done-2")).ok());
  auto repeated = client.Complete(CompleteReq(token[id2], "done-2"));
  CHECK(repeated.ok());
  // A transient failure with attempts left: retried. One with none left: dead-lettered.
  auto f3 = client.Fail(FailReq(token[id3], v1::ERROR_KIND_TRANSIENT, "E1"));
  REQUIRE(f3.ok());
  CHECK(f3->job().state() == v1::JOB_STATE_SCHEDULED);
  auto fb = client.Fail(FailReq(token[idb], v1::ERROR_KIND_TRANSIENT, "E2"));
  REQUIRE(fb.ok());
  CHECK(fb->job().state() == v1::JOB_STATE_DEAD);
  CHECK(fb->job().dead_reason() == "attempts_exhausted");
  // Redrive "b" by id; cancel a fresh "a".
  v1::RedriveRequest rd;
  rd.add_ids(idb);
  auto redriven = client.Redrive(rd);
  REQUIRE(redriven.ok());
  CHECK(redriven->redriven() == 1);
  auto a4 = client.Enqueue(Req(q, "a", R"({"a":4})"));
  REQUIRE(a4.ok());
  auto cancelled = client.CancelJob(a4->job().id(), "not needed");
  REQUIRE(cancelled.ok());
  CHECK(cancelled->state() == v1::JOB_STATE_CANCELLED);

  // Lifecycle metrics are recorded before the calls are answered: one scrape sees them all.
  const std::string body = Scrape(daemon, &why);
  INFO(why);
  REQUIRE_FALSE(body.empty());
  std::vector<std::string> bad;
  const auto samples = ParseExposition(body, &bad);
  INFO("scrape:\n" << body);
  CHECK(bad.empty());

  struct Expect {
    std::string name;
    Labels labels;
    double value;
  };
  const std::vector<Expect> expected = {
      {"ledgerq_jobs_enqueued_total", {{"queue", q}, {"type", "a"}}, 4},
      {"ledgerq_jobs_enqueued_total", {{"queue", q}, {"type", "b"}}, 1},
      {"ledgerq_jobs_deduplicated_total", {{"queue", q}, {"type", "a"}}, 1},
      {"ledgerq_jobs_leased_total", {{"queue", q}, {"type", "a"}}, 3},
      {"ledgerq_jobs_leased_total", {{"queue", q}, {"type", "b"}}, 1},
      {"ledgerq_jobs_completed_total", {{"queue", q}, {"type", "a"}}, 2},
      {"ledgerq_jobs_failed_total", {{"kind", "transient"}, {"queue", q}, {"type", "a"}}, 1},
      {"ledgerq_jobs_failed_total", {{"kind", "transient"}, {"queue", q}, {"type", "b"}}, 1},
      {"ledgerq_job_errors_total", {{"code", "E1"}, {"queue", q}, {"type", "a"}}, 1},
      {"ledgerq_job_errors_total", {{"code", "E2"}, {"queue", q}, {"type", "b"}}, 1},
      {"ledgerq_jobs_retried_total", {{"queue", q}, {"type", "a"}}, 1},
      {"ledgerq_jobs_dead_lettered_total",
       {{"queue", q}, {"reason", "attempts_exhausted"}, {"type", "b"}},
       1},
      {"ledgerq_jobs_redriven_total", {{"queue", q}, {"type", "b"}}, 1},
      {"ledgerq_jobs_cancelled_total", {{"queue", q}, {"type", "a"}}, 1},
      {"ledgerq_queue_wait_seconds_count", {{"queue", q}, {"type", "a"}}, 3},
      {"ledgerq_queue_wait_seconds_count", {{"queue", q}, {"type", "b"}}, 1},
      {"ledgerq_job_end_to_end_seconds_count", {{"queue", q}, {"type", "a"}}, 2},
  };
  for (const auto& e : expected) {
    auto got = Exact(samples, e.name, e.labels);
    std::string labels;
    for (const auto& [k, v] : e.labels) labels += k + "=\"" + v + "\",";
    INFO(e.name << "{" << labels << "} = " << Describe(got) << ", expected " << e.value);
    CHECK(got == std::optional<double>(e.value));
  }
  // Nothing else of the queue moved: no other kinds, codes, reasons or types (series that are
  // exposed at zero ahead of time are fine).
  CHECK(NonZero(samples, "ledgerq_jobs_failed_total", {{"queue", q}}) == 2);
  CHECK(NonZero(samples, "ledgerq_job_errors_total", {{"queue", q}}) == 2);
  CHECK(NonZero(samples, "ledgerq_jobs_dead_lettered_total", {{"queue", q}}) == 1);
  CHECK(NonZero(samples, "ledgerq_jobs_completed_total", {{"queue", q}}) == 1);
  CHECK(NonZero(samples, "ledgerq_jobs_cancelled_total", {{"queue", q}}) == 1);
  CHECK(NonZero(samples, "ledgerq_jobs_retried_total", {{"queue", q}}) == 1);
  CHECK(NonZero(samples, "ledgerq_jobs_redriven_total", {{"queue", q}}) == 1);
  CHECK(NonZero(samples, "ledgerq_lease_expired_total", {{"queue", q}}) == 0);
  // A histogram's +Inf bucket equals its count.
  CHECK(Exact(samples, "ledgerq_queue_wait_seconds_bucket",
              {{"le", "+Inf"}, {"queue", q}, {"type", "a"}}) == std::optional<double>(3));
  CHECK(Exact(samples, "ledgerq_job_end_to_end_seconds_bucket",
              {{"le", "+Inf"}, {"queue", q}, {"type", "a"}}) == std::optional<double>(2));

  // The gauges refresh once a second. Expected for "mq": a1, a2 succeeded; a3 scheduled for a
  // retry within its backoff (it may already count as ready); b redriven to ready; a4
  // cancelled; nothing leased or dead.
  std::vector<Sample> g;
  auto gauge = [&](const std::string& state) {
    return Exact(g, "ledgerq_jobs", {{"queue", q}, {"state", state}});
  };
  auto gauges_match = [&] {
    std::string ignored;
    g = ParseExposition(Scrape(daemon, &ignored), nullptr);
    auto ready = gauge("ready"), scheduled = gauge("scheduled");
    return gauge("succeeded") == std::optional<double>(2) &&
           gauge("dead") == std::optional<double>(0) &&
           gauge("leased") == std::optional<double>(0) &&
           gauge("cancelled") == std::optional<double>(1) && ready && scheduled &&
           *ready + *scheduled == 2 && *ready >= 1 &&
           Exact(g, "ledgerq_active_leases", {}) == std::optional<double>(0);
  };
  const bool settled = WaitFor(gauges_match, 5s, 200ms);
  INFO("ledgerq_jobs{queue=\"mq\"}: succeeded="
       << Describe(gauge("succeeded")) << " dead=" << Describe(gauge("dead"))
       << " leased=" << Describe(gauge("leased")) << " cancelled=" << Describe(gauge("cancelled"))
       << " ready=" << Describe(gauge("ready")) << " scheduled=" << Describe(gauge("scheduled"))
       << "; ledgerq_active_leases=" << Describe(Exact(g, "ledgerq_active_leases", {})));
  CHECK(settled);
}

TEST_CASE("error codes are capped per queue and type, the rest counted as other",
          "[e2e][metrics]") {
  TempDir tmp;
  REQUIRE_FALSE(tmp.path().empty());
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  Client client = MakeClient(daemon.grpc_address());
  const std::string q = "capq", type = "many.codes";
  constexpr int kJobs = 25;

  v1::EnqueueBatchRequest batch;
  for (int i = 0; i < kJobs; ++i) {
    auto r = Req(q, type, R"({"i":)" + std::to_string(i) + "}");
    r.set_max_attempts(1);
    *batch.add_items() = r;
  }
  auto enq = client.EnqueueBatch(batch);
  REQUIRE(enq.ok());
  std::string why;
  auto leased = LeaseAll(client, q, kJobs, 10s, &why);
  INFO(why);
  REQUIRE(leased.size() == kJobs);
  for (size_t i = 0; i < leased.size(); ++i) {
    auto f = client.Fail(
        FailReq(leased[i].token(), v1::ERROR_KIND_TRANSIENT, "CODE_" + std::to_string(i)));
    INFO("Fail " << i << ": " << (f.ok() ? "ok" : f.status().ToString()));
    REQUIRE(f.ok());
    CHECK(f->job().state() == v1::JOB_STATE_DEAD);
  }

  const std::string body = Scrape(daemon, &why);
  INFO(why);
  REQUIRE_FALSE(body.empty());
  const auto samples = ParseExposition(body, nullptr);
  const auto errors = Matching(samples, "ledgerq_job_errors_total", {{"queue", q}, {"type", type}});
  std::set<std::string> codes;
  double sum = 0, other = 0;
  std::string listing;
  for (const auto& s : errors) {
    const std::string code = s.labels.count("code") ? s.labels.at("code") : "(none)";
    listing += code + "=" + Describe(s.value) + " ";
    sum += s.value;
    if (code == "other") {
      other = s.value;
    } else {
      codes.insert(code);
    }
  }
  INFO("ledgerq_job_errors_total{queue=\"capq\"}: " << listing);
  CHECK(codes.size() <= 20);
  CHECK(codes.size() == 20);  // the first 20 distinct codes keep their own series
  CHECK(other == kJobs - 20);
  CHECK(sum == kJobs);
  CHECK(Exact(samples, "ledgerq_jobs_failed_total",
              {{"kind", "transient"}, {"queue", q}, {"type", type}}) ==
        std::optional<double>(kJobs));
  CHECK(Exact(samples, "ledgerq_jobs_dead_lettered_total",
              {{"queue", q}, {"reason", "attempts_exhausted"}, {"type", type}}) ==
        std::optional<double>(kJobs));
}

TEST_CASE("JSON logs carry one lifecycle line per event and never a payload", "[e2e][metrics]") {
  TempDir tmp;
  REQUIRE_FALSE(tmp.path().empty());
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data"), {"--log-format", "json"}));
  const std::string payload = R"({"secret":"SECRET-PAYLOAD"})";
  uint64_t id = 0;
  std::string trace_id;
  // The client goes away before the SIGTERM: an idle, connected gRPC channel holds up the
  // drain by about 5 s.
  {
    Client client = MakeClient(daemon.grpc_address());
    auto enq = client.Enqueue(Req("lq", "log.me", payload));
    REQUIRE(enq.ok());
    id = enq->job().id();
    const std::string traceparent = enq->job().traceparent();
    REQUIRE(traceparent.size() >= 55);
    trace_id = traceparent.substr(3, 32);
    std::string why;
    auto leased = LeaseAll(client, "lq", 1, 5s, &why);
    INFO(why);
    REQUIRE(leased.size() == 1);
    REQUIRE(leased[0].job().id() == id);
    REQUIRE(client.Complete(CompleteReq(leased[0].token(), "SECRET-PAYLOAD-RESULT")).ok());
  }

  ExitInfo exit = Terminate(daemon);
  const std::string err = daemon.stderr_text();
  INFO("daemon stderr:\n" << err);
  CHECK(exit.exited);
  CHECK(exit.code == 0);
  CHECK(err.find("SECRET-PAYLOAD") == std::string::npos);

  std::map<std::string, nlohmann::json> of_job;  // msg -> line, for this job
  std::istringstream in(err);
  std::string line;
  int parsed = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    INFO("line: " << line);
    CHECK(!j.is_discarded());
    CHECK(j.is_object());
    if (j.is_discarded() || !j.is_object()) continue;
    ++parsed;
    if (j.contains("job_id") && j["job_id"] == id && j.contains("msg") && j["msg"].is_string()) {
      of_job[j["msg"].get<std::string>()] = j;
    }
  }
  CHECK(parsed > 0);

  for (const char* msg : {"job.submitted", "job.leased", "job.completed"}) {
    INFO(msg);
    REQUIRE(of_job.count(msg));
    const auto& j = of_job[msg];
    INFO(j.dump());
    for (const char* key : {"job_id", "queue", "type", "attempt", "status", "trace_id", "ts"}) {
      INFO("attribute " << key);
      CHECK(j.contains(key));
    }
    CHECK(j.value("queue", "") == "lq");
    CHECK(j.value("type", "") == "log.me");
    CHECK(j.value("trace_id", "") == trace_id);
  }
  const auto& sub = of_job["job.submitted"];
  CHECK(sub.value("status", "") == "ready");
  CHECK(sub.value("attempt", -1) == 0);
  const auto& lease = of_job["job.leased"];
  CHECK(lease.value("status", "") == "leased");
  CHECK(lease.value("attempt", -1) == 1);
  CHECK(lease.contains("wait_ms"));
  const auto& done = of_job["job.completed"];
  CHECK(done.value("status", "") == "succeeded");
  CHECK(done.value("attempt", -1) == 1);
  CHECK(done.value("outcome", "") == "success");
  CHECK(done.value("worker_id", "") == "e2e-metrics");
  for (const char* key : {"started_at", "finished_at", "run_ms"}) {
    INFO("attribute " << key);
    CHECK(done.contains(key));
  }
  CHECK(done.contains("run_ms"));
  if (done.contains("run_ms")) {
    CHECK(done["run_ms"].is_number());
    CHECK(done["run_ms"].get<double>() >= 0);
  }
  CHECK_FALSE(done.value("started_at", "").empty());
  CHECK_FALSE(done.value("finished_at", "").empty());
}

// With --log-format json the daemon's own messages are JSON too, escaped: "opened <data dir>"
// carries the path verbatim, and a '"' or '\\' in it must not break the line.
TEST_CASE("JSON logs escape the daemon's own messages (a data dir with quotes)", "[e2e][metrics]") {
  TempDir tmp;
  REQUIRE_FALSE(tmp.path().empty());
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data \"quoted\" back\\slash"), {"--log-format", "json"}));
  ExitInfo exit = Terminate(daemon);
  const std::string err = daemon.stderr_text();
  INFO("daemon stderr:\n" << err);
  CHECK(exit.exited);
  CHECK(exit.code == 0);
  std::istringstream in(err);
  std::string line;
  int parsed = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    INFO("line: " << line);
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    CHECK_FALSE(j.is_discarded());
    if (j.is_discarded()) continue;
    ++parsed;
    const std::string msg = j.value("msg", "");
    if (msg.rfind("opened ", 0) == 0 || msg.rfind("closed ", 0) == 0) {
      CHECK_THAT(msg, Catch::Contains("data \"quoted\" back\\slash"));
    }
  }
  CHECK(parsed >= 4);  // opened, recovered, received signal, closed
}
