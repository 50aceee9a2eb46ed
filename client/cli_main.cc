// ledgerq: the command-line client. Errors go to stderr as "ledgerq: CODE: message" with a
// non-zero exit (1 for a failed operation, 2 for bad usage); results go to stdout.
#include <google/protobuf/util/time_util.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "client/cli_common.h"
#include "client/client.h"
#include "client/render.h"
#include "common/duration.h"
#include "common/sha256.h"
#include "storage/job_store.h"

namespace ledgerq::cli {

Result<std::string> ReadPayload(const std::string& arg) {
  if (!arg.empty() && arg[0] == '@') {
    std::string path = arg.substr(1);
    std::string data;
    if (path == "-") {
      data.assign(std::istreambuf_iterator<char>(std::cin), {});
    } else {
      std::ifstream in(path, std::ios::binary);
      if (!in) return Status::InvalidArgument("--payload: cannot read file " + path);
      data.assign(std::istreambuf_iterator<char>(in), {});
    }
    return data;
  }
  if (!nlohmann::json::accept(arg)) {
    return Status::InvalidArgument(
        "--payload: not valid JSON (give JSON inline, or @FILE / @- for raw bytes)");
  }
  return arg;
}

}  // namespace ledgerq::cli

namespace {

using namespace ledgerq::cli;
using ledgerq::Result;
using ledgerq::Status;
namespace v1 = ledgerq::v1;

void PrintJob(const Globals& g, const v1::Job& job, const bool* deduplicated = nullptr) {
  if (g.output == "json") {
    auto j = ledgerq::client::JobToJson(job);
    if (deduplicated) j["deduplicated"] = *deduplicated;
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << ledgerq::client::JobToText(job);
  }
}

struct EnqueueArgs {
  std::string queue, type, payload = "{}", key, delay, traceparent;
  int32_t priority = 0;
  uint32_t max_attempts = 0;
  uint64_t parent = 0;
  std::vector<std::string> labels;
  std::string concurrency_key;
};

int RunEnqueue(const Globals& g, const EnqueueArgs& a) {
  v1::EnqueueRequest req;
  req.set_queue(a.queue);
  req.set_type(a.type);
  auto payload = ReadPayload(a.payload);
  if (!payload.ok()) return Fail(payload.status());
  req.set_payload(*payload);
  req.set_idempotency_key(a.key);
  req.set_priority(a.priority);
  req.set_max_attempts(a.max_attempts);
  req.set_parent_job_id(a.parent);
  req.set_traceparent(a.traceparent);
  req.set_concurrency_key(a.concurrency_key);
  if (!a.delay.empty()) {
    auto d = ledgerq::ParseDuration(a.delay, "--delay");
    if (!d.ok()) return Fail(d.status());
    *req.mutable_delay() = google::protobuf::util::TimeUtil::MicrosecondsToDuration(d->count());
  }
  for (const auto& l : a.labels) {
    auto eq = l.find('=');
    if (eq == std::string::npos || eq == 0) {
      return Fail(Status::InvalidArgument("--label: \"" + l + "\" is not key=value"));
    }
    (*req.mutable_labels())[l.substr(0, eq)] = l.substr(eq + 1);
  }
  auto client = Connect(g);
  if (!client.ok()) return Fail(client.status());
  auto resp = client->Enqueue(req);
  if (!resp.ok()) return Fail(resp.status());
  if (g.output == "json") {
    bool dedup = resp->deduplicated();
    PrintJob(g, resp->job(), &dedup);
  } else if (resp->deduplicated()) {
    std::cout << resp->job().id() << " deduplicated (idempotency key \"" << a.key
              << "\" already names this job; nothing new was created)\n";
  } else {
    std::cout << resp->job().id() << " created (" << ledgerq::client::StateName(resp->job().state())
              << ")\n";
  }
  return 0;
}

struct JobArgs {
  uint64_t id = 0;
  std::string queue, key, trace_id;
  bool history = false;
};

int RunJob(const Globals& g, const JobArgs& a) {
  const int selectors = (a.id != 0) + (!a.key.empty()) + (!a.trace_id.empty());
  if (selectors != 1 || (!a.key.empty() && a.queue.empty())) {
    return Fail(Status::InvalidArgument(
        "give a job ID, or --queue Q --idempotency-key K, or --trace-id T (with --history)"));
  }
  if (!a.trace_id.empty() && !a.history) {
    return Fail(Status::InvalidArgument("--trace-id: use it with --history"));
  }
  auto client = Connect(g);
  if (!client.ok()) return Fail(client.status());
  if (!a.history) {
    auto job = a.id ? client->GetJob(a.id) : client->GetJobByIdempotencyKey(a.queue, a.key);
    if (!job.ok()) return Fail(job.status());
    PrintJob(g, *job);
    return 0;
  }
  v1::GetJobHistoryRequest req;
  if (a.id) {
    req.set_id(a.id);
  } else if (!a.key.empty()) {
    req.mutable_idempotency()->set_queue(a.queue);
    req.mutable_idempotency()->set_idempotency_key(a.key);
  } else {
    req.set_trace_id(a.trace_id);
  }
  auto h = client->GetJobHistory(req);
  if (!h.ok()) return Fail(h.status());
  if (g.output == "json") {
    auto arr = nlohmann::json::array();
    for (const auto& one : h->jobs()) arr.push_back(ledgerq::client::HistoryToJson(one));
    std::cout << (arr.size() == 1 ? arr[0] : arr).dump(2) << "\n";
  } else {
    for (const auto& one : h->jobs()) std::cout << ledgerq::client::HistoryToText(one);
  }
  return 0;
}

int RunCancel(const Globals& g, uint64_t id, const std::string& reason) {
  auto client = Connect(g);
  if (!client.ok()) return Fail(client.status());
  auto job = client->CancelJob(id, reason);
  if (!job.ok()) return Fail(job.status());
  if (g.output == "json") {
    PrintJob(g, *job);
  } else {
    std::cout << job->id() << " cancelled\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ledgerq: client for the ledgerq job server"};
  app.require_subcommand(1);
  app.fallthrough();
  Globals g;
  app.add_option("--server", g.server, "Server address (default 127.0.0.1:7400)")
      ->envname("LEDGERQ_SERVER");
  app.add_option("--output", g.output, "text or json")->check(CLI::IsMember({"text", "json"}));
  app.add_option("--timeout", g.timeout, "Per-request deadline (default 10s)");
  app.add_option("--token", g.security.token, "API token (env LEDGERQ_TOKEN)");
  app.add_option("--tls-ca", g.security.tls_ca,
                 "Connect over TLS, trusting this PEM CA bundle (env LEDGERQ_TLS_CA)");
  app.add_option("--tls-cert", g.security.tls_cert,
                 "Client certificate for mTLS, PEM (env LEDGERQ_TLS_CERT)");
  app.add_option("--tls-key", g.security.tls_key, "Key of --tls-cert, PEM (env LEDGERQ_TLS_KEY)");

  EnqueueArgs ea;
  auto* enqueue = app.add_subcommand("enqueue", "Submit a job; prints its id");
  enqueue->add_option("--queue", ea.queue, "Queue name")->required();
  enqueue->add_option("--type", ea.type, "Job type")->required();
  enqueue->add_option("--payload", ea.payload, "JSON inline, or @FILE / @- for raw bytes");
  enqueue->add_option("--idempotency-key", ea.key, "Dedup key, scoped to the queue");
  enqueue->add_option("--delay", ea.delay, "Run no earlier than this from now (e.g. 30s)");
  enqueue->add_option("--priority", ea.priority, "Higher runs first (default 0)");
  enqueue->add_option("--max-attempts", ea.max_attempts, "Attempts before dead-lettering");
  enqueue->add_option("--parent", ea.parent, "Parent job id");
  enqueue->add_option("--traceparent", ea.traceparent, "W3C traceparent to continue");
  enqueue->add_option("--label", ea.labels, "key=value (repeatable)");
  enqueue->add_option("--concurrency-key", ea.concurrency_key,
                      "Jobs with one key run at most the queue's max-per-key at a time");

  JobArgs ja;
  auto* job = app.add_subcommand("job", "Show one job, or its history with --history");
  job->add_option("id", ja.id, "Job id");
  job->add_option("--queue", ja.queue, "With --idempotency-key");
  job->add_option("--idempotency-key", ja.key, "Find the job by its key in --queue");
  job->add_option("--trace-id", ja.trace_id, "With --history: every job of this trace");
  job->add_flag("--history", ja.history, "The job's timeline of events");

  uint64_t cancel_id = 0;
  std::string reason;
  auto* cancel = app.add_subcommand("cancel", "Cancel a SCHEDULED or READY job");
  cancel->add_option("id", cancel_id, "Job id")->required();
  cancel->add_option("--reason", reason, "Why (kept in the audit log)");

  auto* queues = app.add_subcommand("queues", "List queues with counts by state");

  std::string jq, jstate, jtype;
  uint32_t jlimit = 100;
  auto* jobs = app.add_subcommand("jobs", "List a queue's jobs");
  jobs->add_option("--queue", jq, "Queue")->required();
  jobs->add_option("--state", jstate, "scheduled|ready|leased|succeeded|dead|cancelled");
  jobs->add_option("--type", jtype, "Only this job type");
  jobs->add_option("--limit", jlimit, "At most this many (default 100)");

  std::string dq;
  uint32_t dlimit = 100;
  uint64_t did = 0;
  auto* dlq = app.add_subcommand("dlq", "Dead letters");
  dlq->require_subcommand(1);
  bool dattention = false;
  std::vector<uint64_t> resolve_ids;
  std::string resolve_note;
  auto* dlq_list = dlq->add_subcommand("list", "List a queue's dead jobs with their last error");
  dlq_list->add_option("--queue", dq, "Queue (optional with --needs-attention: every queue)");
  dlq_list->add_option("--limit", dlimit, "At most this many (default 100)");
  dlq_list->add_flag("--needs-attention", dattention,
                     "Only dead jobs whose type's on-dead-letter asks for a person");
  auto* dlq_resolve = dlq->add_subcommand(
      "resolve", "Mark dead jobs that needed attention as handled (an ATTENTION_CLEARED event)");
  dlq_resolve->add_option("ids", resolve_ids, "Dead job ids")->required();
  dlq_resolve->add_option("--note", resolve_note, "What was done (kept in the audit log)");
  auto* dlq_redrive = dlq->add_subcommand("redrive", "Move dead jobs back to READY");
  dlq_redrive->add_option("--queue", dq, "Every dead job of this queue (paced)");
  dlq_redrive->add_option("--limit", dlimit, "With --queue: at most this many");
  dlq_redrive->add_option("--id", did, "One job");

  std::string pq;
  QueueSetArgs qs;
  std::string circuit_queue, circuit_type, circuit_mode;
  auto* queue_cmd = app.add_subcommand("queue", "Change a queue: flow-control limits, circuits");
  queue_cmd->require_subcommand(1);
  auto* queue_set = queue_cmd->add_subcommand(
      "set", "Set a queue's limits at runtime (durable, recorded with your principal)");
  queue_set->add_option("queue", qs.queue, "Queue")->required();
  queue_set->add_option("--rate", qs.rate, "Leases per second across all workers (0: no limit)");
  queue_set->add_option("--burst", qs.burst, "Leases at once above the rate (0: max(1, rate))");
  queue_set->add_option("--concurrency", qs.concurrency, "Jobs leased at once (0: no limit)");
  queue_set->add_option("--per-key", qs.per_key,
                        "Jobs with one concurrency key leased at once (0: no limit)");
  auto* queue_circuit = queue_cmd->add_subcommand(
      "circuit", "Force a (queue, type) circuit open or closed, or give it back (auto)");
  queue_circuit->add_option("queue", circuit_queue, "Queue")->required();
  queue_circuit->add_option("type", circuit_type, "Job type")->required();
  queue_circuit->add_option("mode", circuit_mode, "open | closed | auto")
      ->required()
      ->check(CLI::IsMember({"open", "closed", "auto"}));

  auto* pause = app.add_subcommand("pause", "Stop leasing from a queue (durable)");
  pause->add_option("queue", pq, "Queue")->required();
  auto* resume = app.add_subcommand("resume", "Resume leasing from a queue");
  resume->add_option("queue", pq, "Queue")->required();

  std::string fsince = "1h", fqueue, ftype;
  auto* failures =
      app.add_subcommand("failures", "Failed attempts grouped by queue, type and code");
  failures->add_option("--since", fsince, "How far back (default 1h, at most 30d)");
  failures->add_option("--queue", fqueue, "Only this queue");
  failures->add_option("--type", ftype, "Only this job type");

  ScheduleAddArgs sa;
  std::string sched_name;
  auto* schedule =
      app.add_subcommand("schedule", "Cron schedules (UTC): each firing enqueues one job");
  schedule->require_subcommand(1);
  auto* sched_add = schedule->add_subcommand(
      "add", "Add a schedule: ledgerq schedule add NAME --cron \"*/5 * * * *\" --queue Q --type T");
  sched_add->add_option("name", sa.name, "Schedule name")->required();
  sched_add->add_option("--cron", sa.cron, "minute hour day-of-month month day-of-week, or @daily")
      ->required();
  sched_add->add_option("--queue", sa.queue, "Queue of the jobs it enqueues")->required();
  sched_add->add_option("--type", sa.type, "Job type")->required();
  sched_add->add_option("--payload", sa.payload, "JSON inline, or @FILE / @- for raw bytes");
  sched_add->add_option("--priority", sa.priority, "Higher runs first (default 0)");
  sched_add->add_option("--max-attempts", sa.max_attempts, "Attempts before dead-lettering");
  sched_add->add_option("--missed", sa.missed,
                        "Firings missed while down: skip (default) or run-once");
  sched_add->add_option("--label", sa.labels, "key=value on every job (repeatable)");
  sched_add->add_flag("--replace", sa.replace, "Replace a schedule of the same name");
  auto* sched_list =
      schedule->add_subcommand("list", "List schedules with their next and last firing");
  auto* sched_rm = schedule->add_subcommand("rm", "Remove a schedule added through the API");
  sched_rm->add_option("name", sched_name, "Schedule name")->required();

  WorkArgs wa;
  auto* work =
      app.add_subcommand("work", "Run a command for every job: ledgerq work --queue Q -- CMD ARGS");
  work->add_option("--queue", wa.queues, "Queue to lease from (repeatable)")->required();
  work->add_option("--concurrency", wa.concurrency, "Commands running at once (default 1)")
      ->check(CLI::Range(1, 1024));
  work->add_option("--lease", wa.lease, "Lease duration, heartbeated at a third (default 30s)");
  work->add_option("--permanent-exit-codes", wa.permanent_exit_codes,
                   "Exit codes that fail the job permanently (default 65)")
      ->delimiter(',');
  work->add_option("--worker-id", wa.worker_id, "Name in the job history (default host:pid)");
  work->add_option("command", wa.command, "The command and its arguments, after --")->required();

  AuditVerifyArgs av;
  uint64_t audit_from = 0, audit_to = 0;
  std::string archive_out;
  auto* audit = app.add_subcommand("audit", "Audit log tools");
  audit->require_subcommand(1);
  auto* verify = audit->add_subcommand(
      "verify",
      "Walk the whole hash chain: of the running daemon, or offline with --data-dir, "
      "or of an export file with --archive");
  verify->add_option("--data-dir", av.data_dir, "Data directory of a stopped ledgerqd");
  verify->add_option("--archive", av.archive, "An export file (ledgerq audit export/archive)");
  verify->add_option("--after", av.after, "With --archive: the earlier export it must chain onto");
  auto* audit_export = audit->add_subcommand(
      "export", "Write events with their hashes and a closing manifest as JSON lines to stdout");
  audit_export->add_option("--from", audit_from, "First event (default: the first retained)");
  audit_export->add_option("--to", audit_to, "Last event (default: the head)");
  auto* audit_archive = audit->add_subcommand(
      "archive", "Export events up to --to into --out (fsynced), then remove them from the daemon");
  audit_archive->add_option("--from", audit_from, "First event (default: the first retained)");
  audit_archive->add_option("--to", audit_to, "Last event to archive")->required();
  audit_archive->add_option("--out", archive_out, "The archive file (must not exist)")->required();
  auto* reconcile = audit->add_subcommand(
      "reconcile", "Recount jobs by state from the log; compare with job records and metrics");

  AuthAddArgs aa;
  auto* auth = app.add_subcommand("auth", "Auth file tools");
  auth->require_subcommand(1);
  auto* auth_add = auth->add_subcommand(
      "add", "Add a principal to an auth file (created with mode 0600); prints a new token");
  auth_add->add_option("--file", aa.file, "The auth file (ledgerqd --auth-file)")->required();
  auth_add->add_option("--principal", aa.principal, "Name, or certificate CN/subject for mTLS")
      ->required();
  auth_add->add_option("--role", aa.role, "producer, worker, operator, auditor, admin or metrics")
      ->required();
  auth_add->add_option("--queues", aa.queues, "Queue globs, comma-separated (default *)")
      ->delimiter(',');
  auth_add->add_option("--token", aa.token, "Use this token instead of generating one");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (*enqueue) return RunEnqueue(g, ea);
  if (*job) return RunJob(g, ja);
  if (*cancel) return RunCancel(g, cancel_id, reason);
  if (*verify) return RunAuditVerify(g, av);
  if (*audit_export) return RunAuditExport(g, audit_from, audit_to);
  if (*audit_archive) return RunAuditArchive(g, audit_from, audit_to, archive_out);
  if (*reconcile) return RunAuditReconcile(g);
  if (*queues) return RunQueues(g);
  if (*jobs) return RunJobs(g, jq, jstate, jtype, jlimit);
  if (*dlq_list) return RunDlqList(g, dq, dlimit, dattention);
  if (*dlq_resolve) return RunDlqResolve(g, resolve_ids, resolve_note);
  if (*dlq_redrive) return RunDlqRedrive(g, dq, dlq_redrive->count("--limit") ? dlimit : 0, did);
  if (*queue_set) return RunQueueSet(g, qs);
  if (*queue_circuit) return RunCircuit(g, circuit_queue, circuit_type, circuit_mode);
  if (*pause) return RunPause(g, pq, true);
  if (*resume) return RunPause(g, pq, false);
  if (*work) return RunWork(g, wa);
  if (*auth_add) return RunAuthAdd(g, aa);
  if (*failures) return RunFailures(g, fsince, fqueue, ftype);
  if (*sched_add) return RunScheduleAdd(g, sa);
  if (*sched_list) return RunScheduleList(g);
  if (*sched_rm) return RunScheduleRemove(g, sched_name);
  return 2;
}
