// Writes the seed corpus of every fuzz target: valid (and a few near-valid) requests, real HTTP
// requests, real config files and records encoded as the store encodes them. The output is
// committed under tests/fuzz/corpus/<target>/; rerun after a wire or record format change:
//   build-fuzz/tests/fuzz/fuzz_seeds tests/fuzz/corpus
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/time_util.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "common/sha256.h"
#include "ledgerq/storage/v1/records.pb.h"
#include "ledgerq/v1/ledgerq.pb.h"
#include "storage/codec.h"
#include "tests/fuzz/grpc_methods.h"

namespace {

namespace fs = std::filesystem;
namespace v1 = ledgerq::v1;
namespace sv1 = ledgerq::storage::v1;
namespace st = ledgerq::storage;
using namespace ledgerq::fuzz;

constexpr char kTraceparent[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
constexpr int64_t kT0 = 1'700'000'000'000'000;  // unix microseconds

fs::path root;
int written = 0;

void Write(const std::string& target, const std::string& name, std::string_view bytes) {
  fs::create_directories(root / target);
  std::ofstream out(root / target / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ++written;
}

// Map entries in a fixed order, so regenerating the seeds rewrites only the time-dependent ones.
std::string Serialize(const google::protobuf::Message& m) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream raw(&out);
    google::protobuf::io::CodedOutputStream coded(&raw);
    coded.SetSerializationDeterministic(true);
    m.SerializeToCodedStream(&coded);
  }
  return out;
}

void Grpc(const std::string& name, MethodIndex m, const google::protobuf::Message& req) {
  Write("grpc_handlers", name, std::string(1, static_cast<char>(m)) + Serialize(req));
  // The same request with ids 1..16 standing for the latest leases and jobs (the top bit).
  switch (m) {
    case kGetJob:
    case kCancelJob:
    case kGetJobHistory:
    case kHeartbeat:
    case kComplete:
    case kCompleteBatch:
    case kFail:
    case kRelease:
    case kRedrive:
      Write("grpc_handlers", name + "_live",
            std::string(1, static_cast<char>(m | 0x80)) + Serialize(req));
      break;
    default:
      break;
  }
}

v1::EnqueueRequest Job(const std::string& queue, const std::string& type,
                       const std::string& payload) {
  v1::EnqueueRequest r;
  r.set_queue(queue);
  r.set_type(type);
  r.set_payload(payload);
  return r;
}

v1::LeaseToken Token(uint64_t id, uint32_t attempt) {
  v1::LeaseToken t;
  t.set_job_id(id);
  t.set_attempt(attempt);
  return t;
}

void GrpcSeeds() {
  // JobService
  Grpc("enqueue_minimal", kEnqueue, Job("emails", "welcome", R"({"to":"ada@example.com"})"));
  {
    auto r = Job("emails", "welcome", R"({"to":"ada@example.com","password":"x"})");
    r.set_idempotency_key("signup-42");
    r.set_priority(5);
    r.set_max_attempts(3);
    (*r.mutable_labels())["tenant"] = "acme";
    (*r.mutable_labels())["region"] = "eu";
    r.set_traceparent(kTraceparent);
    r.set_tracestate("vendor=opaque");
    r.set_parent_job_id(1);
    Grpc("enqueue_full", kEnqueue, r);
  }
  {
    auto r = Job("reports", "monthly", "binary\x01\x02\xff payload");
    r.mutable_delay()->set_seconds(3600);
    Grpc("enqueue_delay", kEnqueue, r);
  }
  {
    auto r = Job("reports", "daily", "{}");
    *r.mutable_run_at() = google::protobuf::util::TimeUtil::GetCurrentTime();
    r.mutable_run_at()->set_seconds(r.run_at().seconds() + 60);
    Grpc("enqueue_run_at", kEnqueue, r);
  }
  {
    auto r =
        Job("fuzz", "retry", R"({"card":"4111","nested":{"token":"t","list":[1,2,{"secret":3}]}})");
    r.mutable_retry_policy()->mutable_backoff_base()->set_nanos(5'000'000);
    r.mutable_retry_policy()->set_backoff_factor(3);
    r.mutable_retry_policy()->mutable_backoff_cap()->set_seconds(2);
    r.set_max_attempts(2);
    Grpc("enqueue_retry_policy", kEnqueue, r);
  }
  {
    auto r = Job("bad queue!", "t", "");
    Grpc("enqueue_bad_name", kEnqueue, r);
    r = Job("emails", "welcome", "x");
    r.set_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01");
    Grpc("enqueue_bad_traceparent", kEnqueue, r);
    r = Job("emails", "welcome", "x");
    r.mutable_delay()->set_seconds(1);
    r.mutable_run_at()->set_seconds(1);
    Grpc("enqueue_run_at_and_delay", kEnqueue, r);
  }
  {
    v1::EnqueueBatchRequest b;
    *b.add_items() = Job("emails", "welcome", "1");
    *b.add_items() = Job("emails", "welcome", "2");
    auto dup = Job("emails", "welcome", "3");
    dup.set_idempotency_key("batch-key");
    *b.add_items() = dup;
    *b.add_items() = dup;
    *b.add_items() = Job("", "no-queue", "4");
    Grpc("enqueue_batch", kEnqueueBatch, b);
  }
  {
    v1::GetJobRequest g;
    g.set_id(1);
    Grpc("get_job_id", kGetJob, g);
    g.mutable_idempotency()->set_queue("emails");
    g.mutable_idempotency()->set_idempotency_key("signup-42");
    Grpc("get_job_idempotency", kGetJob, g);
    Grpc("get_job_empty", kGetJob, v1::GetJobRequest());
  }
  {
    v1::CancelJobRequest c;
    c.set_id(12);
    c.set_reason("sent by hand");
    Grpc("cancel_job", kCancelJob, c);
  }
  {
    v1::GetJobHistoryRequest h;
    h.set_id(1);
    Grpc("history_id", kGetJobHistory, h);
    h.mutable_idempotency()->set_queue("emails");
    h.mutable_idempotency()->set_idempotency_key("signup-42");
    Grpc("history_idempotency", kGetJobHistory, h);
    h.set_trace_id("4bf92f3577b34da6a3ce929d0e0e4736");
    Grpc("history_trace", kGetJobHistory, h);
  }
  // WorkerService. Tokens {1..8, attempt 1} are leased by the harness at start; the "_live"
  // variants name the latest leases instead.
  {
    v1::LeaseRequest l;
    l.add_queues("emails");
    l.add_queues("fuzz");
    l.set_worker_id("host:4711");
    l.set_max_jobs(4);
    l.mutable_lease_duration()->set_seconds(1);
    Grpc("lease_short", kLease, l);
    l.clear_lease_duration();
    l.mutable_wait()->set_seconds(1);
    Grpc("lease_wait", kLease, l);
    v1::LeaseRequest p;
    p.add_queues("primed");
    p.set_worker_id("w");
    Grpc("lease_primed", kLease, p);
  }
  {
    v1::HeartbeatRequest h;
    *h.add_tokens() = Token(1, 1);
    *h.add_tokens() = Token(2, 1);
    h.mutable_extend_by()->set_seconds(60);
    Grpc("heartbeat", kHeartbeat, h);
    h.set_checkpoint("step=3");
    h.set_set_checkpoint(true);
    Grpc("heartbeat_checkpoint", kHeartbeat, h);
  }
  {
    v1::CompleteRequest c;
    *c.mutable_token() = Token(3, 1);
    c.set_result(R"({"sent":true})");
    Grpc("complete", kComplete, c);
    v1::CompleteBatchRequest b;
    *b.add_items() = c;
    *b.add_items()->mutable_token() = Token(4, 1);
    *b.add_items()->mutable_token() = Token(999, 7);
    Grpc("complete_batch", kCompleteBatch, b);
  }
  {
    v1::FailRequest f;
    *f.mutable_token() = Token(5, 1);
    f.mutable_error()->set_kind(v1::ERROR_KIND_TRANSIENT);
    f.mutable_error()->set_code("DB_TIMEOUT");
    f.mutable_error()->set_message("connecting");
    f.mutable_error()->set_details("at db.connect()\nat main()");
    f.mutable_retry_after()->set_nanos(10'000'000);
    Grpc("fail_transient", kFail, f);
    *f.mutable_token() = Token(6, 1);
    f.mutable_error()->set_kind(v1::ERROR_KIND_PERMANENT);
    f.clear_retry_after();
    Grpc("fail_permanent", kFail, f);
  }
  {
    v1::ReleaseRequest r;
    *r.mutable_token() = Token(7, 1);
    r.mutable_delay()->set_seconds(1);
    Grpc("release", kRelease, r);
  }
  // AdminService
  Grpc("list_queues", kListQueues, v1::ListQueuesRequest());
  {
    v1::QueueRequest q;
    q.set_queue("emails");
    Grpc("pause", kPauseQueue, q);
    Grpc("resume", kResumeQueue, q);
  }
  {
    v1::ListJobsRequest l;
    l.set_queue("primed");
    Grpc("list_jobs", kListJobs, l);
    l.set_state(v1::JOB_STATE_LEASED);
    l.set_type("seed");
    l.set_page_size(2);
    l.set_page_token("3");
    Grpc("list_jobs_filtered", kListJobs, l);
    v1::ListJobsRequest d;
    d.set_queue("primed");
    d.set_page_size(1);
    Grpc("list_dead_letters", kListDeadLetters, d);
  }
  {
    v1::RedriveRequest r;
    r.add_ids(6);
    r.add_ids(99);
    Grpc("redrive_ids", kRedrive, r);
    v1::RedriveRequest q;
    q.set_queue("primed");
    q.set_limit(10);
    Grpc("redrive_queue", kRedrive, q);
  }
  {
    v1::ListFailuresRequest f;
    Grpc("list_failures", kListFailures, f);
    f.set_queue("primed");
    f.set_type("seed");
    f.mutable_since()->set_seconds(86400);
    Grpc("list_failures_filtered", kListFailures, f);
  }
}

void HttpSeeds() {
  const std::pair<const char*, const char*> reqs[] = {
      {"get_metrics", "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:7401\r\nAccept: */*\r\n\r\n"},
      {"get_healthz", "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"},
      {"get_readyz_close", "GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"},
      {"head_metrics", "HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"},
      {"get_query", "GET /metrics?name[]=ledgerq_up HTTP/1.1\r\nHost: x\r\n\r\n"},
      {"get_http10", "GET /healthz HTTP/1.0\r\n\r\n"},
      {"get_not_found", "GET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n"},
      {"post_body", "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"},
      {"put_chunked",
       "PUT /readyz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
       "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: t\r\n\r\n"},
      {"delete", "DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n"},
      {"options_star", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"},
      {"absolute_target", "GET http://127.0.0.1:7401/metrics HTTP/1.1\r\nHost: x\r\n\r\n"},
      {"pipelined",
       "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nHEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
       "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"},
      {"keep_alive_10", "GET /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"},
      {"upgrade",
       "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
      {"folded_header", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: a\r\n b\r\n\r\n"},
      {"prometheus_scrape",
       "GET /metrics HTTP/1.1\r\nHost: 10.0.0.7:7401\r\nUser-Agent: Prometheus/2.45.0\r\n"
       "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n"
       "Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n"},
      {"kubelet_probe",
       "GET /readyz HTTP/1.1\r\nHost: 10.0.0.7:7401\r\nUser-Agent: kube-probe/1.28\r\n"
       "Accept: */*\r\nConnection: close\r\n\r\n"},
      {"bare_lf", "GET /healthz HTTP/1.1\nHost: x\n\n"},
      {"content_length_twice",
       "POST /metrics HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"},
      {"body_no_length_10", "POST /metrics HTTP/1.0\r\n\r\nbody until close"},
  };
  for (const auto& [name, text] : reqs) Write("http_request", name, text);
}

void ConfigSeeds() {
  const std::pair<const char*, const char*> files[] = {
      {"empty", ""},
      {"comment_only", "# ledgerqd.toml\n"},
      {"listeners",
       "data-dir = \"/var/lib/ledgerq\"\ngrpc-listen = \"0.0.0.0:7400\"\n"
       "http-listen = \"[::1]:7401\"\n"},
      {"sync_batch", "sync = \"batch\"\n"},
      {"sync_bad", "sync = \"sometimes\"\n"},
      {"limits", "max-payload-bytes = 2097152\ndedup-window = \"48h\"\ndefault-max-attempts = 8\n"},
      {"logging", "log-level = \"debug\"\nlog-format = \"json\"\n"},
      {"backoff",
       "backoff-base = \"500ms\"\nbackoff-factor = 1.5\nbackoff-cap = \"10m\"\n"
       "redrive-rate = 250.5\n"},
      {"queues",
       "[queues.emails]\nmax-attempts = 10\nbackoff-base = \"2s\"\nbackoff-cap = \"1h\"\n"
       "mask-fields = [\"password\", \"ssn\"]\n\n[queues.reports]\nbackoff-factor = 3\n"},
      {"queues_inline",
       "queues = { emails = { max-attempts = 3 }, \"odd name\" = { backoff-cap = \"1d\" } }\n"},
      {"full",
       "# every key\ndata-dir = \"./ledgerq-data\"\ngrpc-listen = \"127.0.0.1:7400\"\n"
       "http-listen = \"127.0.0.1:7401\"\nsync = \"always\"\nmax-payload-bytes = 1048576\n"
       "dedup-window = \"24h\"\ndefault-max-attempts = 5\nlog-level = \"info\"\n"
       "log-format = \"text\"\nbackoff-base = \"1s\"\nbackoff-factor = 2.0\n"
       "backoff-cap = \"1h\"\nredrive-rate = 5000\n\n[queues.emails]\nmax-attempts = 7\n"
       "mask-fields = [\"card\"]\n"},
      {"unknown_key", "retries = 3\n"},
      {"wrong_type", "max-payload-bytes = \"big\"\n"},
      {"negative", "max-payload-bytes = -1\n"},
      {"too_many_attempts", "default-max-attempts = 100000\n"},
      {"bad_duration", "backoff-base = \"1fortnight\"\n"},
      {"duration_overflow", "backoff-cap = \"99999999999999999d\"\n"},
      {"cap_below_base", "backoff-base = \"1h\"\nbackoff-cap = \"1s\"\n"},
      {"factor_nan", "backoff-factor = nan\n"},
      {"redrive_inf", "redrive-rate = inf\n"},
      {"mask_not_strings", "[queues.q]\nmask-fields = [1, \"\"]\n"},
      {"queue_not_table", "queues = 3\n"},
      {"syntax_error", "data-dir = \n[queues.\n"},
      {"multiline_strings", "data-dir = '''\n/tmp/x'''\ngrpc-listen = \"\"\"\n127.0.0.1:1\"\"\"\n"},
      {"unicode", "data-dir = \"/srv/\\u00e9t\\u00e9\"\n# caf\xc3\xa9\n"},
      {"dotted_keys", "queues.emails.max-attempts = 4\nqueues.emails.backoff-base = \"3s\"\n"},
      {"array_tables", "[[queues]]\nname = \"x\"\n"},
      {"dates", "data-dir = 1979-05-27T07:32:00Z\n"},
      {"bad_listen", "grpc-listen = \"no-port\"\nhttp-listen = \"[::1]:99999\"\n"},
  };
  for (const auto& [name, text] : files) Write("config_file", name, text);
}

void RecordSeeds() {
  auto write = [](const std::string& name, std::string_view bytes) {
    Write("record_decode", name, bytes);
  };
  write("key_u64", st::EncodeU64(42));
  write("payload_json", st::EncodePayload(R"({"to":"ada@example.com","password":"hunter2"})"));
  write("payload_nested", st::EncodePayload(R"([{"a":{"card":[1,2,{"token":null}]}},true,1.5e3])"));
  write("payload_binary", st::EncodePayload(std::string("\x00\xff\x01 not json", 13)));
  write("payload_empty", st::EncodePayload(""));

  sv1::JobRecord job;
  job.set_id(7);
  job.set_queue("emails");
  job.set_type("welcome");
  job.set_priority(3);
  job.set_run_at_us(kT0);
  job.set_max_attempts(5);
  job.set_idempotency_key("signup-42");
  job.set_parent_job_id(1);
  (*job.mutable_labels())["tenant"] = "acme";
  job.set_traceparent(kTraceparent);
  job.set_state(sv1::STATE_READY);
  job.set_created_at_us(kT0);
  job.set_updated_at_us(kT0 + 1000);
  job.set_payload_sha256(std::string(32, '\x11'));
  job.set_payload_size(44);
  job.set_submitted_by("anonymous");
  job.set_last_event_seq(9);
  job.add_event_seqs(1);
  job.add_event_seqs(9);
  write("job_ready", st::EncodeRecord(st::kJobFormatVersion, job));
  job.set_state(sv1::STATE_LEASED);
  job.set_attempts(2);
  job.set_lease_worker_id("host:4711");
  job.set_lease_started_us(kT0 + 5000);
  job.set_lease_granted_us(kT0 + 5000);
  job.set_lease_deadline_us(kT0 + 35'000'000);
  job.set_attempt_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01");
  job.mutable_retry()->set_backoff_base_us(5000);
  job.mutable_retry()->set_backoff_factor(3);
  job.mutable_retry()->set_backoff_cap_us(2'000'000);
  auto* err = job.add_errors();
  err->set_attempt(1);
  err->set_at_us(kT0 + 4000);
  err->set_worker_id("host:4711");
  err->set_kind(1);
  err->set_code("DB_TIMEOUT");
  err->set_message("connecting");
  err->set_worker_host("ipv4:10.0.0.7");
  err->set_lease_started_us(kT0 + 2000);
  err->set_lease_ended_us(kT0 + 4000);
  err->set_payload_snapshot(R"({"password":"***","to":"ada@example.com"})");
  write("job_leased", st::EncodeRecord(st::kJobFormatVersion, job));
  job.set_state(sv1::STATE_DEAD);
  job.set_dead_reason("attempts_exhausted");
  job.set_attempt_budget_base(1);
  write("job_dead", st::EncodeRecord(st::kJobFormatVersion, job));
  job.set_state(sv1::STATE_SUCCEEDED);
  job.set_completed_attempt(2);
  job.set_result_size(12);
  job.set_has_checkpoint(true);
  write("job_succeeded", st::EncodeRecord(st::kJobFormatVersion, job));
  job.set_state(sv1::STATE_SCHEDULED);
  job.set_run_at_us(INT64_MAX);
  write("job_far_future", st::EncodeRecord(st::kJobFormatVersion, job));
  write("job_wrong_version", st::EncodeRecord(st::kJobFormatVersion + 1, job));

  // Events, hash-chained as the store appends them.
  ledgerq::Digest prev{};
  uint64_t seq = 0;
  auto event = [&](const std::string& name, sv1::EventBody ev) {
    ev.set_seq(++seq);
    const std::string body = ev.SerializeAsString();
    const ledgerq::Digest hash = st::ChainHash(prev, body);
    write(name, st::EncodeEvent(prev, hash, body));
    prev = hash;
  };
  sv1::EventBody ev;
  ev.set_job_id(7);
  ev.set_time_us(kT0);
  ev.set_principal("anonymous");
  ev.set_queue("emails");
  ev.set_job_type("welcome");
  ev.set_type(sv1::EVENT_SUBMITTED);
  ev.set_payload_sha256(std::string(32, '\x11'));
  ev.set_idempotency_key("signup-42");
  ev.set_traceparent(kTraceparent);
  ev.set_run_at_us(kT0);
  ev.set_max_attempts(5);
  (*ev.mutable_labels())["tenant"] = "acme";
  ev.set_to_state(sv1::STATE_READY);
  event("event_submitted", ev);
  ev.clear_labels();
  ev.clear_payload_sha256();
  ev.set_type(sv1::EVENT_LEASED);
  ev.set_attempt(1);
  ev.set_from_state(sv1::STATE_READY);
  ev.set_to_state(sv1::STATE_LEASED);
  ev.set_worker_id("host:4711");
  ev.set_time_us(kT0 + 2000);
  ev.set_lease_deadline_us(kT0 + 32'000'000);
  event("event_leased", ev);
  ev.set_type(sv1::EVENT_FAILED);
  ev.set_from_state(sv1::STATE_LEASED);
  ev.set_to_state(sv1::STATE_SCHEDULED);
  ev.set_time_us(kT0 + 4000);
  ev.set_attempt_started_us(kT0 + 2000);
  *ev.mutable_error() = job.errors(0);
  event("event_failed", ev);
  ev.clear_error();
  ev.set_type(sv1::EVENT_RETRY_SCHEDULED);
  ev.set_run_at_us(kT0 + 800'000);
  event("event_retry_scheduled", ev);
  ev.set_type(sv1::EVENT_COMPLETED);
  ev.set_to_state(sv1::STATE_SUCCEEDED);
  ev.set_result_sha256(std::string(32, '\x22'));
  ev.set_result_size(12);
  event("event_completed", ev);
  ev.set_type(sv1::EVENT_DEAD_LETTERED);
  ev.set_to_state(sv1::STATE_DEAD);
  ev.set_reason("permanent_error");
  event("event_dead_lettered", ev);
  ev.set_type(sv1::EVENT_LEASE_EXPIRED);
  event("event_lease_expired", ev);
  sv1::EventBody qev;
  qev.set_type(sv1::EVENT_QUEUE_PAUSED);
  qev.set_queue("emails");
  qev.set_principal("anonymous");
  qev.set_time_us(kT0);
  event("event_queue_paused", qev);

  sv1::IdempotencyRecord idem;
  idem.set_job_id(7);
  idem.set_fingerprint(std::string(32, '\x33'));
  idem.set_created_at_us(kT0);
  write("idempotency", st::EncodeRecord(st::kIdempotencyFormatVersion, idem));
  sv1::QueueRecord q;
  q.set_paused(true);
  q.set_updated_at_us(kT0);
  q.set_updated_by("anonymous");
  write("queue", st::EncodeRecord(1, q));
  sv1::ChainHead head;
  head.set_seq(seq);
  head.set_hash(std::string(ledgerq::AsBytes(prev)));
  head.set_next_job_id(8);
  write("chain_head", st::EncodeRecord(st::kMetaFormatVersion, head));
  sv1::FailureRecord f;
  f.set_job_id(7);
  f.set_queue("emails");
  f.set_job_type("welcome");
  f.set_code("DB_TIMEOUT");
  f.set_kind(1);
  write("failure", st::EncodeRecord(1, f));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR (e.g. tests/fuzz/corpus)\n", argv[0]);
    return 2;
  }
  root = argv[1];
  GrpcSeeds();
  HttpSeeds();
  ConfigSeeds();
  RecordSeeds();
  std::printf("wrote %d seeds under %s\n", written, root.c_str());
  return 0;
}
