#include <google/protobuf/util/time_util.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "server/config.h"
#include "server/http_server.h"
#include "server/job_mapping.h"
#include "server/lifecycle.h"
#include "server/payload_snapshot.h"

using namespace ledgerq;
using namespace ledgerq::server;
using google::protobuf::util::TimeUtil;

namespace {

constexpr int64_t kNow = 1'800'000'000'000'000;

v1::EnqueueRequest Valid() {
  v1::EnqueueRequest r;
  r.set_queue("emails");
  r.set_type("send.v1");
  r.set_payload(R"({"to":"x"})");
  return r;
}

Status Check(const v1::EnqueueRequest& r, std::string_view md_tp = {}) {
  storage::NewJob out;
  return ToNewJob(r, EnqueueLimits{1024, 5, {}}, kNow, md_tp, &out);
}

}  // namespace

TEST_CASE("a valid request gets defaults and a generated traceparent", "[server]") {
  storage::NewJob out;
  REQUIRE(ToNewJob(Valid(), EnqueueLimits{1024, 5, {}}, kNow, {}, &out).ok());
  CHECK(out.max_attempts == 5);
  CHECK(out.run_at_us == kNow);
  CHECK(IsValidTraceparent(out.traceparent));
  CHECK(NewTraceparent() != NewTraceparent());
}

TEST_CASE("traceparent comes from the field, else from metadata", "[server]") {
  const std::string tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  storage::NewJob out;
  REQUIRE(ToNewJob(Valid(), EnqueueLimits{}, kNow, tp, &out).ok());
  CHECK(out.traceparent == tp);
}

TEST_CASE("every validation rule names its field", "[server]") {
  struct Case {
    const char* name;
    std::function<void(v1::EnqueueRequest&)> mutate;
    const char* field;
  };
  const std::vector<Case> cases = {
      {"empty queue", [](auto& r) { r.set_queue(""); }, "queue"},
      {"queue with space", [](auto& r) { r.set_queue("a b"); }, "queue"},
      {"queue too long", [](auto& r) { r.set_queue(std::string(129, 'a')); }, "queue"},
      {"queue with slash", [](auto& r) { r.set_queue("a/b"); }, "queue"},
      {"empty type", [](auto& r) { r.set_type(""); }, "type"},
      {"type with unicode", [](auto& r) { r.set_type("caf\xc3\xa9"); }, "type"},
      {"payload over limit", [](auto& r) { r.set_payload(std::string(1025, 'x')); }, "payload"},
      {"too many labels",
       [](auto& r) {
         for (int i = 0; i < 65; ++i) (*r.mutable_labels())["k" + std::to_string(i)] = "v";
       },
       "labels"},
      {"label value too long", [](auto& r) { (*r.mutable_labels())["k"] = std::string(257, 'v'); },
       "labels"},
      {"label key too long", [](auto& r) { (*r.mutable_labels())[std::string(257, 'k')] = "v"; },
       "labels"},
      {"empty label key", [](auto& r) { (*r.mutable_labels())[""] = "v"; }, "labels"},
      {"run_at two years ahead",
       [](auto& r) {
         *r.mutable_run_at() = TimeUtil::MicrosecondsToTimestamp(kNow + 2 * 366LL * 86400'000'000);
       },
       "run_at"},
      {"run_at two years ago",
       [](auto& r) {
         *r.mutable_run_at() = TimeUtil::MicrosecondsToTimestamp(kNow - 2 * 366LL * 86400'000'000);
       },
       "run_at"},
      {"run_at and delay",
       [](auto& r) {
         *r.mutable_run_at() = TimeUtil::MicrosecondsToTimestamp(kNow);
         *r.mutable_delay() = TimeUtil::SecondsToDuration(5);
       },
       "delay"},
      {"negative delay", [](auto& r) { *r.mutable_delay() = TimeUtil::SecondsToDuration(-5); },
       "delay"},
      {"delay over a year",
       [](auto& r) { *r.mutable_delay() = TimeUtil::SecondsToDuration(400LL * 86400); }, "delay"},
      {"bad traceparent", [](auto& r) { r.set_traceparent("00-xyz"); }, "traceparent"},
      {"zero trace id",
       [](auto& r) {
         r.set_traceparent("00-00000000000000000000000000000000-b7ad6b7169203331-01");
       },
       "traceparent"},
      {"max_attempts too high", [](auto& r) { r.set_max_attempts(1001); }, "max_attempts"},
      {"idempotency key too long", [](auto& r) { r.set_idempotency_key(std::string(257, 'k')); },
       "idempotency_key"},
      {"idempotency key with newline", [](auto& r) { r.set_idempotency_key("a\nb"); },
       "idempotency_key"},
      {"tracestate too long", [](auto& r) { r.set_tracestate(std::string(513, 'a')); },
       "tracestate"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    auto r = Valid();
    c.mutate(r);
    Status st = Check(r);
    CHECK(st.code() == Code::kInvalidArgument);
    CHECK_THAT(st.message(), Catch::Contains(c.field));
  }
}

TEST_CASE("tracestate comes from the field, else from metadata", "[server]") {
  storage::NewJob out;
  REQUIRE(ToNewJob(Valid(), EnqueueLimits{}, kNow, {}, &out, "vendor=abc").ok());
  CHECK(out.tracestate == "vendor=abc");
  auto r = Valid();
  r.set_tracestate("mine=1");
  REQUIRE(ToNewJob(r, EnqueueLimits{}, kNow, {}, &out, "vendor=abc").ok());
  CHECK(out.tracestate == "mine=1");
}

TEST_CASE("the metadata traceparent is validated too", "[server]") {
  CHECK(Check(Valid(), "garbage").code() == Code::kInvalidArgument);
}

TEST_CASE("a due SCHEDULED job shows READY", "[server]") {
  storage::JobRecord rec;
  rec.set_id(1);
  rec.set_state(storage::v1::STATE_SCHEDULED);
  rec.set_run_at_us(kNow + 10);
  CHECK(ToApiJob(rec, kNow).state() == v1::JOB_STATE_SCHEDULED);
  CHECK(ToApiJob(rec, kNow + 10).state() == v1::JOB_STATE_READY);
}

// Found by fuzz_record_decode: TimeUtil aborted the process on times a Timestamp cannot hold.
TEST_CASE("a stored job with out-of-range times maps without aborting", "[server][fuzz]") {
  storage::JobRecord rec;
  rec.set_id(1);
  rec.set_state(storage::v1::STATE_LEASED);
  rec.set_run_at_us(INT64_MAX);
  rec.set_created_at_us(INT64_MIN);
  rec.set_lease_deadline_us(INT64_MAX);
  rec.add_errors()->set_at_us(INT64_MIN);
  rec.mutable_retry()->set_backoff_base_us(INT64_MAX);
  rec.mutable_retry()->set_backoff_cap_us(INT64_MIN);
  v1::Job job = ToApiJob(rec, kNow);
  CHECK(job.run_at().seconds() == TimeUtil::kTimestampMaxSeconds);
  CHECK(job.created_at().seconds() == TimeUtil::kTimestampMinSeconds);
  CHECK(job.retry_policy().backoff_base().seconds() == TimeUtil::kDurationMaxSeconds);
  CHECK(job.retry_policy().backoff_cap().seconds() == TimeUtil::kDurationMinSeconds);
  storage::EventBody ev;
  ev.set_time_us(INT64_MAX);
  ev.set_lease_deadline_us(INT64_MIN);
  ev.set_attempt_started_us(INT64_MAX);
  CHECK(ToApiEvent(ev).at().seconds() == TimeUtil::kTimestampMaxSeconds);
}

// Found while fuzzing the Fail path: a payload nested 100k deep (200 KB, under the payload
// limit) overflowed the stack of the thread snapshotting a failed attempt.
TEST_CASE("payload snapshots survive deeply nested JSON", "[server][fuzz]") {
  const auto& masks = DefaultMaskFields();
  CHECK(PayloadSnapshot(R"({"a":[{"password":"x"}],"b":"[[[["})", masks) ==
        R"({"a":[{"password":"***"}],"b":"[[[["})");
  const std::string shallow = std::string(128, '[') + std::string(128, ']');
  CHECK(PayloadSnapshot(shallow, masks) == shallow);
  for (size_t depth : {129, 100'000, 500'000}) {
    const std::string deep = std::string(depth, '[') + std::string(depth, ']');
    const std::string snap = PayloadSnapshot(deep, masks);
    CHECK(snap.rfind("<" + std::to_string(deep.size()) + " bytes, sha256 ", 0) == 0);
  }
}

TEST_CASE("status codes map to gRPC codes", "[server]") {
  CHECK(ToGrpcStatus(Status::AlreadyExists("x")).error_code() == grpc::StatusCode::ALREADY_EXISTS);
  CHECK(ToGrpcStatus(Status::ResourceExhausted("x")).error_code() ==
        grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK(ToGrpcStatus(Status::Ok()).ok());
}

TEST_CASE("HTTP routing is a pure function of the request", "[server][http]") {
  bool draining = false;
  HttpRoutes routes{.metrics = [] { return std::string("ledgerq_up 1\n"); },
                    .alive = [] { return true; },
                    .not_ready_reason = [&]() -> std::string { return draining ? "draining" : ""; },
                    .authorize_metrics = {}};  // /metrics open
  auto get = [&](const std::string& target, http::verb verb = http::verb::get) {
    HttpRequest req{verb, target, 11};
    return Route(req, routes);
  };
  CHECK(get("/metrics").result() == http::status::ok);
  CHECK(get("/metrics").body() == "ledgerq_up 1\n");
  CHECK(get("/metrics?x=1").result() == http::status::ok);
  CHECK(get("/healthz").result() == http::status::ok);
  CHECK(get("/readyz").result() == http::status::ok);
  draining = true;
  CHECK(get("/readyz").result() == http::status::service_unavailable);
  CHECK(get("/<script>alert(1)</script>").result() == http::status::not_found);
  CHECK(get("/<script>alert(1)</script>").body().find("script") == std::string::npos);
  CHECK(get("/metrics", http::verb::post).result() == http::status::method_not_allowed);
  auto head = get("/metrics", http::verb::head);
  CHECK(head.body().empty());
}

TEST_CASE("listen addresses parse or name the flag", "[server]") {
  CHECK(ParseEndpoint("127.0.0.1:7400", "--grpc-listen").ok());
  CHECK(ParseEndpoint("[::1]:0", "--grpc-listen").ok());
  CHECK(ParseEndpoint("localhost:7401", "--http-listen").value().port() == 7401);
  for (const char* bad : {"7400", "127.0.0.1:", "127.0.0.1:99999", "nohost:1", ":1"}) {
    INFO(bad);
    auto r = ParseEndpoint(bad, "--http-listen");
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.status().message(), Catch::Contains("--http-listen"));
  }
}

TEST_CASE("config files use the flag names and reject mistakes by key", "[server][config]") {
  auto c = ParseConfigToml(R"(
data-dir = "/var/lib/ledgerq"
sync = "batch"
dedup-window = "12h"
max-payload-bytes = 2048
default-max-attempts = 9
)",
                           Config{});
  REQUIRE(c.ok());
  CHECK(c->data_dir == "/var/lib/ledgerq");
  CHECK(c->sync == storage::SyncMode::kBatch);
  CHECK(c->dedup_window == std::chrono::hours(12));
  CHECK(c->max_payload_bytes == 2048);
  CHECK(c->retry.max_attempts == 9);

  struct Bad {
    const char* text;
    const char* mention;
  };
  for (const Bad& b :
       {Bad{"sync = \"sometimes\"", "sync"}, Bad{"nope = 1", "nope"},
        Bad{"dedup-window = \"5\"", "dedup-window"},
        Bad{"max-payload-bytes = \"big\"", "max-payload-bytes"},
        Bad{"max-payload-bytes = 0", "max-payload-bytes"},
        Bad{"default-max-attempts = 0", "default-max-attempts"}, Bad{"data-dir = [", "line 1"}}) {
    INFO(b.text);
    auto r = ParseConfigToml(b.text, Config{});
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.status().message(), Catch::Contains(b.mention));
  }
}

// Found with fuzz_record_decode: run_ms and wait_ms subtracted a record's int64 times, which
// overflows (UB) for a corrupt record.
TEST_CASE("lifecycle lines survive out-of-range record times", "[server][logs][fuzz]") {
  storage::ObservedEvent e;
  e.event.set_type(storage::v1::EVENT_LEASED);
  e.event.set_job_id(1);
  e.event.set_time_us(INT64_MIN);
  e.event.set_attempt_started_us(INT64_MAX);
  e.job.emplace();
  e.job->set_run_at_us(INT64_MAX);
  Lifecycle json(nullptr, nullptr, LogFormat::kJson);
  auto j = nlohmann::json::parse(json.Line(e));
  CHECK(j["run_ms"].get<double>() < -1e15);
  CHECK(j["wait_ms"].get<double>() < -1e15);
}

TEST_CASE("lifecycle lines carry the standard attributes and never a payload", "[server][logs]") {
  storage::ObservedEvent e;
  e.event.set_seq(7);
  e.event.set_job_id(42);
  e.event.set_type(storage::v1::EVENT_FAILED);
  e.event.set_time_us(1'800'000'000'123'456);
  e.event.set_queue("emails");
  e.event.set_job_type("send");
  e.event.set_attempt(2);
  e.event.set_to_state(storage::v1::STATE_LEASED);
  e.event.set_attempt_started_us(1'800'000'000'000'000);
  e.event.set_worker_id("w1");
  e.event.set_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  e.event.mutable_error()->set_kind(1);
  e.event.mutable_error()->set_code("DB_TIMEOUT");
  e.event.mutable_error()->set_message("said \"no\"\n");
  e.event.mutable_error()->set_payload_snapshot("{\"password\":\"***\"}");
  e.job.emplace();
  e.job->set_created_at_us(1'799'999'999'000'000);
  e.job->set_parent_job_id(41);

  Lifecycle json(nullptr, nullptr, LogFormat::kJson);
  auto j = nlohmann::json::parse(json.Line(e));
  CHECK(j["msg"] == "job.failed");
  CHECK(j["job_id"] == 42);
  CHECK(j["parent_job_id"] == 41);
  CHECK(j["queue"] == "emails");
  CHECK(j["type"] == "send");
  CHECK(j["attempt"] == 2);
  CHECK(j["status"] == "leased");
  CHECK(j["trace_id"] == "0af7651916cd43dd8448eb211c80319c");
  CHECK(j["span_id"] == "b7ad6b7169203331");
  CHECK(j["outcome"] == "failure");
  CHECK(j["error.code"] == "DB_TIMEOUT");
  CHECK(j["error.kind"] == "transient");
  CHECK(j["error.message"] == "said \"no\"\n");
  CHECK(j["ts"] == "2027-01-15T08:00:00.123456Z");
  CHECK(j["started_at"] == "2027-01-15T08:00:00.000000Z");
  CHECK(j["enqueued_at"] == "2027-01-15T07:59:59.000000Z");
  CHECK(j["run_ms"] == Approx(123.456));
  CHECK(j.dump().find("password") == std::string::npos);  // not even a masked snapshot

  Lifecycle text(nullptr, nullptr, LogFormat::kText);
  std::string line = text.Line(e);
  CHECK(line.rfind("job.failed ", 0) == 0);
  CHECK_THAT(line, Catch::Contains("job_id=42"));
  CHECK_THAT(line, Catch::Contains("error.code=DB_TIMEOUT"));
}

// Stored records can hold any int64 time; TimeUtil aborts the process outside its range, so
// every conversion to the API goes through these clamps (ListFailures' first/last seen too).
TEST_CASE("record times outside a protobuf Timestamp's range are clamped, not fatal",
          "[server][fuzz]") {
  CHECK(TimestampFromMicros(INT64_MAX).seconds() == TimeUtil::kTimestampMaxSeconds);
  CHECK(TimestampFromMicros(INT64_MIN).seconds() == TimeUtil::kTimestampMinSeconds);
  CHECK(TimestampFromMicros(1'500'000).seconds() == 1);
  CHECK(DurationFromMicros(INT64_MAX).seconds() == TimeUtil::kDurationMaxSeconds);
  CHECK(DurationFromMicros(INT64_MIN).seconds() == -TimeUtil::kDurationMaxSeconds);
  CHECK(DurationFromMicros(-2'000'000).seconds() == -2);
}
