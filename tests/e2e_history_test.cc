// End-to-end tests of a job's history and of failure forensics: GetJobHistory by id, by
// idempotency key and by trace id (with each attempt's own span), the `ledgerq job --history`
// timeline, the failure context kept with each failed attempt (worker host, lease times and a
// masked payload snapshot, with per-queue mask-fields from a --config file), and ListFailures /
// `ledgerq failures`. Every TEST_CASE owns its TempDir and its Daemon, so `ctest -j` is safe.
#include <google/protobuf/util/message_differencer.h>
#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "client/client.h"
#include "common/status.h"
#include "tests/support/daemon.h"
#include "tests/support/e2e_helpers.h"
#include "tests/support/temp_dir.h"

namespace {

using google::protobuf::util::MessageDifferencer;
using google::protobuf::util::TimeUtil;
using ledgerq::Code;
using ledgerq::client::Client;
using ledgerq::testing::Cli;
using ledgerq::testing::CompleteReq;
using ledgerq::testing::Daemon;
using ledgerq::testing::ExitInfo;
using ledgerq::testing::FailReq;
using ledgerq::testing::LeaseReq;
using ledgerq::testing::MakeClient;
using ledgerq::testing::NamesNumber;
using ledgerq::testing::Req;
using ledgerq::testing::Seconds;
using ledgerq::testing::TempDir;
using ledgerq::testing::WaitFor;
using ledgerq::testing::WriteFile;
namespace v1 = ledgerq::v1;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------
// Helpers

int64_t Us(const google::protobuf::Timestamp& t) { return TimeUtil::TimestampToMicroseconds(t); }

std::vector<std::string> EventTypes(const v1::JobHistory& h) {
  std::vector<std::string> out;
  for (const auto& e : h.events()) out.push_back(e.type());
  return out;
}

std::string Joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
  return s;
}

// A traceparent's pieces (W3C: 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>).
std::string TraceIdOf(const std::string& tp) { return tp.size() == 55 ? tp.substr(3, 32) : ""; }
std::string SpanIdOf(const std::string& tp) { return tp.size() == 55 ? tp.substr(36, 16) : ""; }

constexpr char kTraceId[] = "0af7651916cd43dd8448eb211c80319c";
constexpr char kSubmitSpan[] = "b7ad6b7169203331";
const std::string kTraceparent = std::string("00-") + kTraceId + "-" + kSubmitSpan + "-01";

// What RunRetriedJob did.
struct RetriedJob {
  uint64_t id = 0;
  std::string lease_tp[2];  // LeasedJob.traceparent of attempts 1 and 2
};

// Enqueues a job with `key` and kTraceparent, resubmits it (deduplicated), leases it, fails it
// transiently with DB_TIMEOUT, waits for the retry to come due (full jitter on a 1s base: under
// 1 s), leases it again and completes it. Seven events: SUBMITTED, DEDUPLICATED, LEASED, FAILED,
// RETRY_SCHEDULED, LEASED, COMPLETED.
RetriedJob RunRetriedJob(Client& client, const std::string& queue, const std::string& key) {
  RetriedJob out;
  auto req = Req(queue, "report.build", R"({"report":"q3","rows":12})", key);
  req.set_traceparent(kTraceparent);
  auto first = client.Enqueue(req);
  REQUIRE(first.ok());
  REQUIRE_FALSE(first->deduplicated());
  out.id = first->job().id();
  CHECK(first->job().traceparent() == kTraceparent);

  auto again = client.Enqueue(req);
  REQUIRE(again.ok());
  CHECK(again->deduplicated());
  CHECK(again->job().id() == out.id);

  auto lease1 = client.Lease(LeaseReq(queue, 1, 30, 5, "hist-worker-1"));
  REQUIRE(lease1.ok());
  REQUIRE(lease1->jobs_size() == 1);
  const auto& lj1 = lease1->jobs(0);
  REQUIRE(lj1.job().id() == out.id);
  CHECK(lj1.token().attempt() == 1);
  CHECK(lj1.job().traceparent() == kTraceparent);  // the job's own traceparent is unchanged
  out.lease_tp[0] = lj1.traceparent();

  auto failed = client.Fail(
      FailReq(lj1.token(), v1::ERROR_KIND_TRANSIENT, "DB_TIMEOUT", "db timed out after 5s"));
  REQUIRE(failed.ok());
  CHECK((failed->job().state() == v1::JOB_STATE_SCHEDULED ||
         failed->job().state() == v1::JOB_STATE_READY));

  // The retry comes due within the first backoff ceiling (1 s).
  std::string last_state;
  const bool due = WaitFor(
      [&] {
        auto j = client.GetJob(out.id);
        if (!j.ok()) {
          last_state = j.status().ToString();
          return false;
        }
        last_state = v1::JobState_Name(j->state());
        return j->state() == v1::JOB_STATE_READY;
      },
      5s);
  INFO("job state while waiting for the retry: " << last_state);
  REQUIRE(due);

  auto lease2 = client.Lease(LeaseReq(queue, 1, 30, 5, "hist-worker-2"));
  REQUIRE(lease2.ok());
  REQUIRE(lease2->jobs_size() == 1);
  const auto& lj2 = lease2->jobs(0);
  REQUIRE(lj2.job().id() == out.id);
  CHECK(lj2.token().attempt() == 2);
  out.lease_tp[1] = lj2.traceparent();

  auto completed = client.Complete(CompleteReq(lj2.token(), R"({"ok":true})"));
  REQUIRE(completed.ok());
  CHECK(completed->job().state() == v1::JOB_STATE_SUCCEEDED);
  return out;
}

// Every payload_snapshot the server holds for `id`: the job's errors and the FAILED events'.
std::vector<std::string> Snapshots(Client& client, uint64_t id) {
  std::vector<std::string> out;
  auto job = client.GetJob(id);
  REQUIRE(job.ok());
  for (const auto& e : job->errors()) out.push_back(e.payload_snapshot());
  v1::GetJobHistoryRequest req;
  req.set_id(id);
  auto h = client.GetJobHistory(req);
  REQUIRE(h.ok());
  REQUIRE(h->jobs_size() == 1);
  for (const auto& ev : h->jobs(0).events()) {
    if (ev.has_error()) out.push_back(ev.error().payload_snapshot());
  }
  return out;
}

// Leases jobs of `queue` (up to `max_jobs` a call, as hist-worker) until `want` are held or 5 s
// pass, adding each token to *tokens by job id; returns how many it leased.
size_t LeaseTokens(Client& client, const std::string& queue, uint32_t max_jobs, size_t want,
                   std::map<uint64_t, v1::LeaseToken>* tokens) {
  size_t got = 0;
  WaitFor(
      [&] {
        auto l = client.Lease(LeaseReq(queue, max_jobs, 30, 2, "hist-worker"));
        if (l.ok()) {
          for (const auto& lj : l->jobs()) {
            (*tokens)[lj.job().id()] = lj.token();
            ++got;
          }
        }
        return got >= want;
      },
      5s, 1ms);
  return got;
}

// SHA-256 of "hello" (a well-known test vector), so the snapshot is checked against an
// independent value.
constexpr char kHelloSha256[] = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("GetJobHistory by id, idempotency key and trace id gives one ordered timeline",
          "[e2e][history]") {
  TempDir tmp;
  REQUIRE_FALSE(tmp.path().empty());
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  Client client = MakeClient(daemon.grpc_address());

  const RetriedJob run = RunRetriedJob(client, "hq", "hist-key-1");

  v1::GetJobHistoryRequest by_id;
  by_id.set_id(run.id);
  auto h = client.GetJobHistory(by_id);
  REQUIRE(h.ok());
  REQUIRE(h->jobs_size() == 1);
  const v1::JobHistory& hist = h->jobs(0);
  INFO("history: " << hist.ShortDebugString());
  CHECK(hist.job().id() == run.id);
  CHECK(hist.job().state() == v1::JOB_STATE_SUCCEEDED);
  CHECK(hist.job().traceparent() == kTraceparent);
  CHECK(hist.job().payload().empty());  // histories come without the payload

  const std::vector<std::string> want = {"SUBMITTED",       "DEDUPLICATED", "LEASED",   "FAILED",
                                         "RETRY_SCHEDULED", "LEASED",       "COMPLETED"};
  REQUIRE(Joined(EventTypes(hist)) == Joined(want));
  for (int i = 1; i < hist.events_size(); ++i) {
    CHECK(hist.events(i).seq() > hist.events(i - 1).seq());
    CHECK(Us(hist.events(i).at()) >= Us(hist.events(i - 1).at()));
  }

  const v1::JobEvent& leased1 = hist.events(2);
  const v1::JobEvent& failed = hist.events(3);
  const v1::JobEvent& retry = hist.events(4);
  const v1::JobEvent& leased2 = hist.events(5);
  const v1::JobEvent& completed = hist.events(6);

  CHECK(leased1.attempt() == 1);
  CHECK(leased1.worker_id() == "hist-worker-1");
  CHECK(leased2.attempt() == 2);
  CHECK(leased2.worker_id() == "hist-worker-2");

  REQUIRE(failed.has_error());
  CHECK(failed.error().code() == "DB_TIMEOUT");
  CHECK(failed.error().kind() == v1::ERROR_KIND_TRANSIENT);
  CHECK(failed.error().message() == "db timed out after 5s");
  CHECK(failed.attempt() == 1);
  REQUIRE(failed.has_attempt_started());
  CHECK(Us(failed.attempt_started()) >= Us(hist.events(0).at()));
  CHECK(Us(failed.attempt_started()) <= Us(failed.at()));

  REQUIRE(retry.has_run_at());
  CHECK(Us(retry.run_at()) >= Us(retry.at()));
  CHECK(Us(retry.run_at()) - Us(retry.at()) <= 1'000'000);  // full jitter on a 1 s base
  CHECK(Us(leased2.at()) >= Us(retry.run_at()));

  CHECK(completed.has_attempt_started());
  CHECK(Us(completed.attempt_started()) <= Us(completed.at()));

  // Each attempt is a span of its own in the job's trace, and the worker was told that span.
  for (const auto* ev : {&leased1, &leased2}) {
    INFO("LEASED attempt " << ev->attempt() << " traceparent " << ev->traceparent());
    REQUIRE(ev->traceparent().size() == 55);
    CHECK(TraceIdOf(ev->traceparent()) == kTraceId);
    CHECK(SpanIdOf(ev->traceparent()) != kSubmitSpan);
  }
  CHECK(SpanIdOf(leased1.traceparent()) != SpanIdOf(leased2.traceparent()));
  CHECK(run.lease_tp[0] == leased1.traceparent());
  CHECK(run.lease_tp[1] == leased2.traceparent());

  // The same job and the same events by idempotency key and by trace id.
  v1::GetJobHistoryRequest by_key;
  by_key.mutable_idempotency()->set_queue("hq");
  by_key.mutable_idempotency()->set_idempotency_key("hist-key-1");
  v1::GetJobHistoryRequest by_trace;
  by_trace.set_trace_id(kTraceId);
  for (const auto* req : {&by_key, &by_trace}) {
    INFO("request: " << req->ShortDebugString());
    auto other = client.GetJobHistory(*req);
    REQUIRE(other.ok());
    REQUIRE(other->jobs_size() == 1);
    CHECK(other->jobs(0).job().id() == run.id);
    REQUIRE(other->jobs(0).events_size() == hist.events_size());
    for (int i = 0; i < hist.events_size(); ++i) {
      INFO("event " << i);
      CHECK(MessageDifferencer::Equals(other->jobs(0).events(i), hist.events(i)));
    }
  }

  // Errors.
  v1::GetJobHistoryRequest unknown;
  unknown.set_id(run.id + 1000);
  auto missing = client.GetJobHistory(unknown);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == Code::kNotFound);

  v1::GetJobHistoryRequest bad_trace;
  bad_trace.set_trace_id("xyz");
  auto bad = client.GetJobHistory(bad_trace);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code() == Code::kInvalidArgument);
  CHECK_THAT(bad.status().message(), Catch::Contains("trace_id"));

  v1::GetJobHistoryRequest no_job_trace;
  no_job_trace.set_trace_id("11111111111111111111111111111111");
  auto none = client.GetJobHistory(no_job_trace);
  REQUIRE_FALSE(none.ok());
  CHECK(none.status().code() == Code::kNotFound);
}

TEST_CASE("ledgerq job --history prints the timeline as text and JSON", "[e2e][history]") {
  TempDir tmp;
  REQUIRE_FALSE(tmp.path().empty());
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  const std::string server = daemon.grpc_address();
  Client client = MakeClient(server);

  const RetriedJob run = RunRetriedJob(client, "cq", "cli-key-1");
  const std::string id = std::to_string(run.id);

  std::string out, err;
  ExitInfo e = Cli(server, {"job", id, "--history"}, &out, &err);
  INFO("stdout:\n" << out << "\nstderr:\n" << err);
  REQUIRE(e.exited);
  REQUIRE(e.code == 0);
  CHECK(NamesNumber(out, run.id));
  CHECK_THAT(out, Catch::Contains(std::string("trace ") + kTraceId));
  // One line per event, in order.
  const std::vector<std::string> lines_want = {"submitted by",      "with the same idempotency key",
                                               "leased (attempt 1", "failed transient DB_TIMEOUT",
                                               "retry scheduled +", "leased (attempt 2",
                                               "completed after"};
  size_t from = 0;
  for (const auto& w : lines_want) {
    INFO("looking for \"" << w << "\" after offset " << from);
    auto p = out.find(w, from);
    CHECK(p != std::string::npos);
    if (p != std::string::npos) from = p + w.size();
  }
  CHECK_THAT(out, Catch::Contains("db timed out after 5s"));

  // JSON: one job, so one object.
  std::string json_out;
  e = Cli(server, {"--output", "json", "job", id, "--history"}, &json_out, &err);
  INFO("json stdout:\n" << json_out << "\nstderr:\n" << err);
  REQUIRE(e.exited);
  REQUIRE(e.code == 0);
  auto j = nlohmann::json::parse(json_out, nullptr, /*allow_exceptions=*/false);
  REQUIRE_FALSE(j.is_discarded());
  REQUIRE(j.is_object());
  REQUIRE(j.contains("events"));
  REQUIRE(j["events"].is_array());
  CHECK(j["events"].size() == 7);
  CHECK(j["job"]["id"] == run.id);
  if (j["events"].size() == 7) {
    CHECK(j["events"][3]["type"] == "FAILED");
    CHECK(j["events"][3]["error"]["code"] == "DB_TIMEOUT");
    CHECK(j["events"][2]["traceparent"] == run.lease_tp[0]);
    CHECK(j["events"][5]["traceparent"] == run.lease_tp[1]);
  }

  // By idempotency key, and by trace id.
  std::string key_out;
  e = Cli(server, {"job", "--queue", "cq", "--idempotency-key", "cli-key-1", "--history"}, &key_out,
          &err);
  INFO("by key stdout:\n" << key_out << "\nstderr:\n" << err);
  REQUIRE(e.exited);
  CHECK(e.code == 0);
  CHECK(key_out == out);

  std::string trace_out;
  e = Cli(server, {"job", "--trace-id", kTraceId, "--history"}, &trace_out, &err);
  INFO("by trace stdout:\n" << trace_out << "\nstderr:\n" << err);
  REQUIRE(e.exited);
  CHECK(e.code == 0);
  CHECK(trace_out == out);

  // A malformed trace id is bad usage.
  std::string bad_out, bad_err;
  e = Cli(server, {"job", "--trace-id", "xyz", "--history"}, &bad_out, &bad_err);
  INFO("bad trace stdout:\n" << bad_out << "\nstderr:\n" << bad_err);
  REQUIRE(e.exited);
  CHECK(e.code == 2);
  CHECK_THAT(bad_err, Catch::Contains("trace_id"));
}

TEST_CASE("a failed attempt keeps its host, lease times and a payload snapshot masked per queue",
          "[e2e][history]") {
  TempDir tmp;
  REQUIRE_FALSE(tmp.path().empty());
  const std::string config = tmp.Sub("ledgerq.toml");
  REQUIRE(WriteFile(config, "[queues.pay]\nmask-fields = [\"ssn\"]\n"));
  Daemon daemon;
  const bool started = daemon.Start(tmp.Sub("data"), {"--config", config});
  INFO("daemon stderr:\n" << daemon.stderr_text());
  REQUIRE(started);
  Client client = MakeClient(daemon.grpc_address());

  const std::string payload =
      R"({"ssn":"123","password":"pw","nested":{"SSN_last4":"9"},"amount":5})";
  auto pay = client.Enqueue(Req("pay", "charge", payload));
  auto other = client.Enqueue(Req("other", "charge", payload));
  auto raw = client.Enqueue(Req("other", "blob", "hello"));
  REQUIRE(pay.ok());
  REQUIRE(other.ok());
  REQUIRE(raw.ok());

  // Lease and fail all three.
  std::map<uint64_t, v1::LeaseToken> tokens;
  for (const auto& [queue, n] :
       std::vector<std::pair<std::string, size_t>>{{"pay", 1}, {"other", 2}}) {
    REQUIRE(LeaseTokens(client, queue, static_cast<uint32_t>(n), n, &tokens) == n);
  }
  REQUIRE(tokens.size() == 3);
  for (const auto& [id, token] : tokens) {
    auto f = client.Fail(FailReq(token, v1::ERROR_KIND_TRANSIENT, "UPSTREAM_500", "upstream down"));
    INFO("job " << id);
    REQUIRE(f.ok());
  }

  auto error_of = [&](uint64_t id) {
    auto job = client.GetJob(id);
    REQUIRE(job.ok());
    REQUIRE(job->errors_size() == 1);
    return job->errors(0);
  };

  {  // per-queue mask-fields replace the default list
    const v1::AttemptError e = error_of(pay->job().id());
    INFO("pay snapshot: " << e.payload_snapshot());
    auto j = nlohmann::json::parse(e.payload_snapshot(), nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    CHECK(j["ssn"] == "***");
    CHECK(j["nested"]["SSN_last4"] == "***");
    CHECK(j["password"] == "pw");  // not in this queue's list
    CHECK(j["amount"] == 5);
    for (const auto& s : Snapshots(client, pay->job().id())) {
      INFO("snapshot: " << s);
      CHECK(s.find("123") == std::string::npos);
      CHECK(s.find("\"9\"") == std::string::npos);
    }
  }

  {  // other queues use the default list
    const v1::AttemptError e = error_of(other->job().id());
    INFO("other snapshot: " << e.payload_snapshot());
    auto j = nlohmann::json::parse(e.payload_snapshot(), nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    CHECK(j["password"] == "***");
    CHECK(j["ssn"] == "123");
    CHECK(j["nested"]["SSN_last4"] == "9");
    CHECK(j["amount"] == 5);
    for (const auto& s : Snapshots(client, other->job().id())) {
      INFO("snapshot: " << s);
      CHECK(s.find("\"pw\"") == std::string::npos);
    }
  }

  {  // a payload that is not JSON is shown by size and hash
    const v1::AttemptError e = error_of(raw->job().id());
    CHECK(e.payload_snapshot() == std::string("<5 bytes, sha256 ") + kHelloSha256 + ">");
    for (const auto& s : Snapshots(client, raw->job().id())) {
      CHECK(s.find("hello") == std::string::npos);
    }
  }

  {  // the worker's host and the lease's start and end are kept
    for (uint64_t id : {pay->job().id(), other->job().id(), raw->job().id()}) {
      const v1::AttemptError e = error_of(id);
      INFO("job " << id << " error: " << e.ShortDebugString());
      CHECK(e.attempt() == 1);
      CHECK(e.code() == "UPSTREAM_500");
      CHECK(e.worker_id() == "hist-worker");
      CHECK_FALSE(e.worker_host().empty());
      CHECK_THAT(e.worker_host(), Catch::Contains("127.0.0.1"));
      REQUIRE(e.has_lease_started());
      REQUIRE(e.has_lease_ended());
      CHECK(Us(e.lease_started()) <= Us(e.lease_ended()));
      CHECK(Us(e.lease_ended()) <= Us(e.at()));
    }
  }
}

TEST_CASE("ListFailures groups failed attempts by queue, type and code", "[e2e][history]") {
  TempDir tmp;
  REQUIRE_FALSE(tmp.path().empty());
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  const std::string server = daemon.grpc_address();
  Client client = MakeClient(server);

  // (type, code, kind) per job in "fq", in the order they fail; and one in another queue.
  struct Plan {
    std::string queue, type, code;
    v1::ErrorKind kind;
  };
  const std::vector<Plan> plan = {
      {"fq", "a", "E1", v1::ERROR_KIND_TRANSIENT}, {"fq", "b", "E1", v1::ERROR_KIND_TRANSIENT},
      {"fq", "a", "E1", v1::ERROR_KIND_TRANSIENT}, {"fq", "a", "E2", v1::ERROR_KIND_TRANSIENT},
      {"fq", "a", "P", v1::ERROR_KIND_PERMANENT},  {"fq", "b", "E1", v1::ERROR_KIND_TRANSIENT},
      {"fq", "a", "E1", v1::ERROR_KIND_TRANSIENT}, {"oq", "c", "E1", v1::ERROR_KIND_TRANSIENT},
  };
  std::vector<uint64_t> ids;
  for (size_t i = 0; i < plan.size(); ++i) {
    auto r = client.Enqueue(Req(plan[i].queue, plan[i].type, R"({"i":)" + std::to_string(i) + "}"));
    REQUIRE(r.ok());
    ids.push_back(r->job().id());
  }
  std::map<uint64_t, v1::LeaseToken> tokens;
  for (const std::string queue : {"fq", "oq"}) {
    const size_t want =
        std::count_if(plan.begin(), plan.end(), [&](const Plan& p) { return p.queue == queue; });
    REQUIRE(LeaseTokens(client, queue, 16, want, &tokens) == want);
  }
  // Fail them one at a time, in plan order, so "latest first" is well defined.
  for (size_t i = 0; i < plan.size(); ++i) {
    auto f = client.Fail(FailReq(tokens.at(ids[i]), plan[i].kind, plan[i].code, "boom"));
    INFO("job " << ids[i]);
    REQUIRE(f.ok());
  }

  v1::ListFailuresRequest req;
  *req.mutable_since() = Seconds(3600);
  req.set_queue("fq");
  auto r = client.ListFailures(req);
  REQUIRE(r.ok());
  INFO("groups: " << r->ShortDebugString());
  REQUIRE(r->groups_size() == 4);
  std::map<std::tuple<std::string, std::string, std::string>, v1::FailureGroup> by_key;
  for (int i = 0; i < r->groups_size(); ++i) {
    const auto& g = r->groups(i);
    by_key[{g.queue(), g.type(), g.code()}] = g;
    if (i > 0) CHECK(r->groups(i - 1).count() >= g.count());  // most frequent first
    CHECK(Us(g.first_seen()) <= Us(g.last_seen()));
  }
  CHECK(r->groups(0).code() == "E1");
  CHECK(r->groups(0).type() == "a");
  CHECK(r->groups(0).count() == 3);
  CHECK(r->groups(1).type() == "b");
  CHECK(r->groups(1).count() == 2);

  REQUIRE(by_key.count({"fq", "a", "E1"}) == 1);
  const auto& a_e1 = by_key[{"fq", "a", "E1"}];
  CHECK(a_e1.count() == 3);
  CHECK(a_e1.kind() == v1::ERROR_KIND_TRANSIENT);
  CHECK(std::vector<uint64_t>(a_e1.sample_job_ids().begin(), a_e1.sample_job_ids().end()) ==
        std::vector<uint64_t>{ids[6], ids[2], ids[0]});
  REQUIRE(by_key.count({"fq", "a", "E2"}) == 1);
  CHECK(by_key[{"fq", "a", "E2"}].count() == 1);
  CHECK(by_key[{"fq", "a", "E2"}].kind() == v1::ERROR_KIND_TRANSIENT);
  REQUIRE(by_key.count({"fq", "b", "E1"}) == 1);
  CHECK(by_key[{"fq", "b", "E1"}].count() == 2);
  CHECK(std::vector<uint64_t>(by_key[{"fq", "b", "E1"}].sample_job_ids().begin(),
                              by_key[{"fq", "b", "E1"}].sample_job_ids().end()) ==
        std::vector<uint64_t>{ids[5], ids[1]});
  REQUIRE(by_key.count({"fq", "a", "P"}) == 1);
  CHECK(by_key[{"fq", "a", "P"}].count() == 1);
  CHECK(by_key[{"fq", "a", "P"}].kind() == v1::ERROR_KIND_PERMANENT);
  CHECK(by_key[{"fq", "a", "P"}].sample_job_ids_size() == 1);

  // No queue filter: the other queue's group too.
  v1::ListFailuresRequest all;
  *all.mutable_since() = Seconds(3600);
  auto r_all = client.ListFailures(all);
  REQUIRE(r_all.ok());
  CHECK(r_all->groups_size() == 5);

  // Type filter (across queues), and queue + type.
  v1::ListFailuresRequest type_b = all;
  type_b.set_type("b");
  auto r_b = client.ListFailures(type_b);
  REQUIRE(r_b.ok());
  REQUIRE(r_b->groups_size() == 1);
  CHECK(r_b->groups(0).queue() == "fq");
  CHECK(r_b->groups(0).code() == "E1");
  CHECK(r_b->groups(0).count() == 2);
  v1::ListFailuresRequest fq_a = req;
  fq_a.set_type("a");
  auto r_a = client.ListFailures(fq_a);
  REQUIRE(r_a.ok());
  CHECK(r_a->groups_size() == 3);
  for (const auto& g : r_a->groups()) CHECK(g.type() == "a");

  // A window that ends before any failure: nothing.
  std::this_thread::sleep_for(50ms);
  v1::ListFailuresRequest recent;
  *recent.mutable_since() = Seconds(0, 1'000'000);  // 1 ms
  auto r_recent = client.ListFailures(recent);
  REQUIRE(r_recent.ok());
  CHECK(r_recent->groups_size() == 0);

  // More than 30 days back is refused.
  v1::ListFailuresRequest too_far;
  *too_far.mutable_since() = Seconds(31 * 86400);
  auto r_far = client.ListFailures(too_far);
  REQUIRE_FALSE(r_far.ok());
  CHECK(r_far.status().code() == Code::kInvalidArgument);
  CHECK_THAT(r_far.status().message(), Catch::Contains("since"));

  // The CLI: a table, and JSON.
  std::string out, err;
  ExitInfo e = Cli(server, {"failures", "--since", "1h", "--queue", "fq"}, &out, &err);
  INFO("stdout:\n" << out << "\nstderr:\n" << err);
  REQUIRE(e.exited);
  REQUIRE(e.code == 0);
  CHECK_THAT(out, Catch::Contains("E1"));
  CHECK_THAT(out, Catch::Contains("3"));
  CHECK_THAT(out, Catch::Contains("permanent"));
  CHECK(out.find("oq") == std::string::npos);
  bool found_row = false;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string x; words >> x;) w.push_back(x);
    if (w.size() >= 5 && w[0] == "fq" && w[1] == "a" && w[2] == "E1") {
      found_row = true;
      CHECK(w[3] == "transient");
      CHECK(w[4] == "3");
    }
  }
  CHECK(found_row);

  std::string json_out;
  e = Cli(server, {"--output", "json", "failures", "--since", "1h", "--queue", "fq"}, &json_out,
          &err);
  INFO("json stdout:\n" << json_out << "\nstderr:\n" << err);
  REQUIRE(e.exited);
  REQUIRE(e.code == 0);
  auto j = nlohmann::json::parse(json_out, nullptr, /*allow_exceptions=*/false);
  REQUIRE_FALSE(j.is_discarded());
  REQUIRE(j.is_array());
  REQUIRE(j.size() == 4);
  CHECK(j[0]["code"] == "E1");
  CHECK(j[0]["type"] == "a");
  CHECK(j[0]["count"] == 3);
  CHECK(j[0]["kind"] == "transient");
  CHECK(j[0]["sample_job_ids"] == nlohmann::json::array({ids[6], ids[2], ids[0]}));
  bool permanent = false;
  for (const auto& g : j) permanent = permanent || (g["code"] == "P" && g["kind"] == "permanent");
  CHECK(permanent);
}

// GetJobHistory's FAILED events carry the same lease times as GetJob shows for that attempt.
TEST_CASE("a FAILED event's error carries the same lease times as the job's error",
          "[e2e][history]") {
  TempDir tmp;
  REQUIRE_FALSE(tmp.path().empty());
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  Client client = MakeClient(daemon.grpc_address());

  auto enq = client.Enqueue(Req("lq", "t", R"({"x":1})"));
  REQUIRE(enq.ok());
  auto l = client.Lease(LeaseReq("lq", 1, 30, 5, "hist-worker"));
  REQUIRE(l.ok());
  REQUIRE(l->jobs_size() == 1);
  REQUIRE(client.Fail(FailReq(l->jobs(0).token(), v1::ERROR_KIND_TRANSIENT, "E", "m")).ok());

  auto job = client.GetJob(enq->job().id());
  REQUIRE(job.ok());
  REQUIRE(job->errors_size() == 1);
  const v1::AttemptError& kept = job->errors(0);
  REQUIRE(kept.has_lease_started());
  REQUIRE(kept.has_lease_ended());

  v1::GetJobHistoryRequest req;
  req.set_id(enq->job().id());
  auto h = client.GetJobHistory(req);
  REQUIRE(h.ok());
  REQUIRE(h->jobs_size() == 1);
  const v1::JobEvent* failed = nullptr;
  for (const auto& ev : h->jobs(0).events()) {
    if (ev.type() == "FAILED") failed = &ev;
  }
  REQUIRE(failed != nullptr);
  REQUIRE(failed->has_error());
  INFO("FAILED event error: " << failed->error().ShortDebugString());
  INFO("GetJob error: " << kept.ShortDebugString());
  CHECK(failed->error().worker_host() == kept.worker_host());
  CHECK(failed->error().payload_snapshot() == kept.payload_snapshot());
  CHECK(failed->error().has_lease_started());
  CHECK(failed->error().has_lease_ended());
  CHECK(Us(failed->error().lease_started()) == Us(kept.lease_started()));
  CHECK(Us(failed->error().lease_ended()) == Us(kept.lease_ended()));
}
