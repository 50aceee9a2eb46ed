// End-to-end reproductions of the security review's findings (issue 14): a real ledgerqd with an
// auth file made by `ledgerq auth add`, exactly as e2e_auth_test.cc starts it. Each TEST_CASE
// is one finding, failed on the code the review read and passes once that finding is fixed:
// audit scope of queue-scoped auditors and admins, plaintext tokens on non-loopback listeners,
// schedule replacement across queues, forged and borrowed lease tokens, digests shown to roles
// without payload access, what a deduplicated enqueue tells another producer, the NOT_FOUND vs
// PERMISSION_DENIED existence oracle, the metrics role, and gRPC reflection with auth on.
// Every TEST_CASE owns its TempDir and Daemon(s), so `ctest -j` is safe; servers listen only on
// the 127.0.0.1 ports the Daemon helper picks, and every wait is bounded.
#include <fcntl.h>
#include <fnmatch.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "tests/support/daemon.h"
#include "tests/support/e2e_helpers.h"
#include "tests/support/temp_dir.h"

namespace {

using ledgerq::client::Client;
using ledgerq::client::ClientOptions;
using ledgerq::testing::Cli;
using ledgerq::testing::CompleteReq;
using ledgerq::testing::Daemon;
using ledgerq::testing::ExitInfo;
using ledgerq::testing::FailReq;
using ledgerq::testing::LeaseReq;
using ledgerq::testing::Req;
using ledgerq::testing::TempDir;
namespace v1 = ledgerq::v1;
using grpc::StatusCode;
using ledgerq::Code;

// Adds a principal with `ledgerq auth add`; returns the generated token ("" for none).
std::string AuthAdd(const std::string& file, const std::string& name, const std::string& role,
                    const std::string& queues, bool want_token = true) {
  std::vector<std::string> args = {"auth",        "add", "--file", file,
                                   "--principal", name,  "--role", role};
  if (!queues.empty()) args.insert(args.end(), {"--queues", queues});
  std::string out, err;
  ExitInfo e = Cli("127.0.0.1:1", args, &out, &err);
  INFO("ledgerq auth add --role " << role << ": " << err);
  REQUIRE(e.exited);
  REQUIRE(e.code == 0);
  const std::string marker = "token (shown only now; the file keeps its SHA-256): ";
  auto pos = out.find(marker);
  if (!want_token) return "";
  REQUIRE(pos != std::string::npos);
  std::string token = out.substr(pos + marker.size());
  return token.substr(0, token.find('\n'));
}

Client As(const Daemon& d, const std::string& token) {
  ClientOptions o;
  o.server = d.grpc_address();
  o.timeout = std::chrono::milliseconds(10'000);
  o.token = token;
  return Client(o);
}

// One raw call's gRPC status code, with the client's credentials.
template <typename Stub, typename Req, typename Resp>
StatusCode Call(Client& c, Stub* stub,
                grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                const Req& req, Resp* resp = nullptr, std::string* message = nullptr) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  c.Authorize(&ctx);
  Resp local;
  grpc::Status st = (stub->*method)(&ctx, req, resp ? resp : &local);
  if (message) *message = st.error_message();
  return st.error_code();
}

// An HTTP GET with an optional Authorization header; returns the status code.
int HttpStatus(int port, const std::string& path, const std::string& authorization) {
  int fd = ledgerq::testing::ConnectLoopback(port);
  if (fd < 0) return 0;
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  if (!authorization.empty()) req += "Authorization: " + authorization + "\r\n";
  req += "\r\n";
  if (::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return 0;
  }
  std::string reply;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) reply.append(buf, static_cast<size_t>(n));
  ::close(fd);
  if (reply.rfind("HTTP/1.1 ", 0) != 0) return 0;
  return std::stoi(reply.substr(9, 3));
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// `text` with every whole-number occurrence of `n` replaced by "<id>", so two messages about
// different ids compare equal when they say the same thing.
std::string MaskNumber(const std::string& text, uint64_t n) {
  const std::string digits = std::to_string(n);
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    const bool at = text.compare(i, digits.size(), digits) == 0;
    const bool left_ok = i == 0 || !std::isdigit(static_cast<unsigned char>(text[i - 1]));
    const size_t end = i + digits.size();
    const bool right_ok =
        end >= text.size() || !std::isdigit(static_cast<unsigned char>(text[end]));
    if (at && left_ok && right_ok) {
      out += "<id>";
      i = end;
    } else {
      out += text[i++];
    }
  }
  return out;
}

// Every retained audit event up to `to_seq` (0: the head), page by page (at most 100 pages).
// Returns the first non-OK code, or OK.
StatusCode ExportAll(Client& c, uint64_t to_seq, std::vector<v1::AuditEvent>* out) {
  auto stub = v1::AuditService::NewStub(c.channel());
  uint64_t from = 0;
  for (int page = 0; page < 100; ++page) {
    v1::ExportAuditRequest r;
    r.set_from_seq(from);
    r.set_to_seq(to_seq);
    r.set_page_size(1000);
    v1::ExportAuditResponse resp;
    StatusCode code = Call(c, stub.get(), &v1::AuditService::Stub::ExportAudit, r, &resp);
    if (code != StatusCode::OK) return code;
    for (const auto& ev : resp.events()) out->push_back(ev);
    if (resp.next_seq() == 0) return StatusCode::OK;
    from = resp.next_seq();
  }
  return StatusCode::DEADLINE_EXCEEDED;  // more than 100 pages: not expected here
}

// Runs ledgerqd with `flags` (after --data-dir) expecting it to refuse to start. Waits up to
// 20 s for either its "listening" line (then it is killed at once: listened = true) or its
// exit; stderr is captured.
struct StartAttempt {
  bool listened = false;
  ExitInfo exit;
  std::string err;
};

StartAttempt StartExpectingRefusal(const std::string& data_dir,
                                   const std::vector<std::string>& flags) {
  StartAttempt a;
  std::vector<std::string> args = {ledgerq::testing::LedgerqdPath(), "--data-dir", data_dir};
  args.insert(args.end(), flags.begin(), flags.end());
  const std::string err_path = data_dir + ".stderr";
  int out[2];
  if (::pipe(out) != 0) return a;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    int errfd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (errfd >= 0) ::dup2(errfd, 2);
    ::close(out[0]);
    ::close(out[1]);
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  std::string buffered;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[512];
    ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n <= 0) break;  // stdout closed: it is exiting
    buffered.append(buf, static_cast<size_t>(n));
    if (buffered.find('\n') != std::string::npos) {
      a.listened = true;  // it started: the finding holds; stop it at once
      break;
    }
  }
  ::close(out[0]);
  int status = 0;
  bool reaped = false;
  if (!a.listened) {
    for (int i = 0; i < 100 && !reaped; ++i) {  // up to 10 s for the exit after EOF
      reaped = ::waitpid(pid, &status, WNOHANG) == pid;
      if (!reaped) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  if (!reaped) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  if (WIFEXITED(status)) a.exit = {true, WEXITSTATUS(status)};
  if (WIFSIGNALED(status)) a.exit = {false, WTERMSIG(status)};
  a.err = ReadAll(err_path);
  return a;
}

// Generic (untyped) gRPC calls on a fresh plaintext channel without credentials, driven through
// a CompletionQueue one operation at a time, each bounded.
void* Tag(intptr_t n) { return reinterpret_cast<void*>(n); }

// Waits for the one operation in flight on `cq`; true when it succeeded. Past `limit` the call
// is cancelled (its operations then complete promptly) and waited for 5 s more.
bool Await(grpc::CompletionQueue& cq, grpc::ClientContext& ctx, void* tag,
           std::chrono::system_clock::time_point limit) {
  bool cancelled = false;
  for (int i = 0; i < 100; ++i) {
    void* got = nullptr;
    bool ok = false;
    auto r = cq.AsyncNext(&got, &ok, limit);
    if (r == grpc::CompletionQueue::SHUTDOWN) return false;
    if (r == grpc::CompletionQueue::TIMEOUT) {
      if (cancelled) return false;
      ctx.TryCancel();
      cancelled = true;
      limit = std::chrono::system_clock::now() + std::chrono::seconds(5);
      continue;
    }
    if (got == tag) return ok;
  }
  return false;
}

void Drain(grpc::CompletionQueue& cq) {
  cq.Shutdown();
  const auto limit = std::chrono::system_clock::now() + std::chrono::seconds(5);
  for (int i = 0; i < 100; ++i) {
    void* got = nullptr;
    bool ok = false;
    if (cq.AsyncNext(&got, &ok, limit) != grpc::CompletionQueue::GOT_EVENT) return;
  }
}

struct StreamOutcome {
  StatusCode code = StatusCode::UNKNOWN;
  std::string message;
  int responses = 0;
};

// Opens bidi stream `method`, writes one message of `request` bytes, half-closes, reads every
// response (at most 10) and finishes. The call has a 5 s deadline.
StreamOutcome BidiOnce(const std::string& address, const std::string& method,
                       const std::string& request) {
  StreamOutcome out;
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  const auto limit = std::chrono::system_clock::now() + std::chrono::seconds(15);
  auto call = stub.PrepareCall(&ctx, method, &cq);
  if (!call) return out;
  call->StartCall(Tag(1));
  if (Await(cq, ctx, Tag(1), limit)) {
    grpc::Slice slice(request);
    grpc::ByteBuffer req(&slice, 1);
    call->Write(req, Tag(2));
    if (Await(cq, ctx, Tag(2), limit)) {
      call->WritesDone(Tag(3));
      Await(cq, ctx, Tag(3), limit);
      for (int i = 0; i < 10; ++i) {
        grpc::ByteBuffer resp;
        call->Read(&resp, Tag(4));
        if (!Await(cq, ctx, Tag(4), limit)) break;
        ++out.responses;
      }
    }
  }
  grpc::Status st;
  call->Finish(&st, Tag(5));
  if (Await(cq, ctx, Tag(5), limit)) {
    out.code = st.error_code();
    out.message = st.error_message();
  }
  Drain(cq);
  return out;
}

struct UnaryOutcome {
  StatusCode code = StatusCode::UNKNOWN;
  std::string response;  // the serialized response message
};

// One unary call of `method` with `request` bytes; 5 s deadline.
UnaryOutcome UnaryOnce(const std::string& address, const std::string& method,
                       const std::string& request) {
  UnaryOutcome out;
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  const auto limit = std::chrono::system_clock::now() + std::chrono::seconds(15);
  grpc::Slice slice(request);
  grpc::ByteBuffer req(&slice, 1);
  auto call = stub.PrepareUnaryCall(&ctx, method, req, &cq);
  if (!call) return out;
  call->StartCall();
  grpc::ByteBuffer resp;
  grpc::Status st;
  call->Finish(&resp, &st, Tag(1));
  if (Await(cq, ctx, Tag(1), limit)) {
    out.code = st.error_code();
    std::vector<grpc::Slice> slices;
    if (st.ok() && resp.Dump(&slices).ok()) {
      for (const auto& s : slices) {
        out.response.append(reinterpret_cast<const char*>(s.begin()), s.size());
      }
    }
  }
  Drain(cq);
  return out;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("security: finding 2: queue-scoped auditors and admins see and change only their scope",
          "[e2e][security]") {
  // The review reproduced: an auditor limited to queues "a*" exported every event of every
  // queue (bodies included), could verify the whole log and reconcile every queue's counts, and
  // an admin limited to "a*" could truncate the shared audit log.
  TempDir dir;
  const std::string file = dir.Sub("auth.toml");
  const std::string root = AuthAdd(file, "root", "admin", "");  // every queue
  const std::string auditor_a = AuthAdd(file, "auditor-a", "auditor", "a*");
  const std::string admin_a = AuthAdd(file, "admin-a", "admin", "a*");
  Daemon d;
  REQUIRE(d.Start(dir.Sub("data"), {"--auth-file", file, "--sync", "none"}));
  Client admin = As(d, root);
  for (const char* q : {"a1", "b1"}) {
    for (int i = 0; i < 2; ++i) REQUIRE(admin.Enqueue(Req(q, "t", R"({"n":1})")).ok());
  }

  // The full admin's export: every event with its body; the start records a POLICY_CHANGED
  // event, which belongs to no queue.
  std::vector<v1::AuditEvent> all;
  REQUIRE(ExportAll(admin, 0, &all) == StatusCode::OK);
  REQUIRE_FALSE(all.empty());
  std::map<uint64_t, v1::AuditEvent> by_seq;
  int a1 = 0, b1 = 0, none = 0;
  for (const auto& ev : all) {
    INFO("seq " << ev.seq());
    CHECK(ev.withheld().empty());
    CHECK_FALSE(ev.body().empty());
    by_seq[ev.seq()] = ev;
    a1 += ev.queue() == "a1";
    b1 += ev.queue() == "b1";
    none += ev.queue().empty();
  }
  REQUIRE(a1 > 0);
  REQUIRE(b1 > 0);
  REQUIRE(none > 0);
  const uint64_t head = all.back().seq();

  // The scoped auditor's export of the same range: b1's and queue-less events are withheld
  // (only their chain links), a1's come whole.
  Client auditor = As(d, auditor_a);
  std::vector<v1::AuditEvent> scoped;
  REQUIRE(ExportAll(auditor, head, &scoped) == StatusCode::OK);
  CHECK(scoped.size() == all.size());
  for (const auto& ev : scoped) {
    auto it = by_seq.find(ev.seq());
    REQUIRE(it != by_seq.end());
    const v1::AuditEvent& full = it->second;
    INFO("seq " << ev.seq() << " of queue \"" << full.queue() << "\"");
    CHECK(ev.prev_hash() == full.prev_hash());
    CHECK(ev.hash() == full.hash());
    CHECK(ev.hash().size() == 32);
    if (full.queue() == "a1") {
      CHECK(ev.withheld().empty());
      CHECK(ev.body() == full.body());
      CHECK(ev.has_event());
      CHECK(ev.queue() == "a1");
    } else {
      CHECK(ev.withheld() == "scope");
      CHECK(ev.body().empty());
      CHECK_FALSE(ev.has_event());
      CHECK(ev.queue().empty());
      CHECK(ev.job_id() == 0);
      CHECK(ev.job_type().empty());
    }
  }

  // Verifying walks the whole chain: not for a scoped auditor.
  auto audit_stub = v1::AuditService::NewStub(auditor.channel());
  CHECK(Call(auditor, audit_stub.get(), &v1::AuditService::Stub::VerifyAudit,
             v1::VerifyAuditRequest()) == StatusCode::PERMISSION_DENIED);

  // Reconcile answers only for the auditor's queues.
  v1::ReconcileResponse rec;
  REQUIRE(Call(auditor, audit_stub.get(), &v1::AuditService::Stub::Reconcile,
               v1::ReconcileRequest(), &rec) == StatusCode::OK);
  bool saw_a1 = false;
  for (const auto& c : rec.counts()) {
    INFO("counts entry of queue \"" << c.queue() << "\"");
    CHECK(::fnmatch("a*", c.queue().c_str(), 0) == 0);
    saw_a1 |= c.queue() == "a1";
  }
  CHECK(saw_a1);

  // A scoped admin may not truncate the log every queue shares, even with the right hash.
  Client scoped_admin = As(d, admin_a);
  auto admin_a_stub = v1::AuditService::NewStub(scoped_admin.channel());
  v1::TruncateAuditRequest tr;
  tr.set_to_seq(all.front().seq());
  tr.set_to_hash(all.front().hash());
  CHECK(Call(scoped_admin, admin_a_stub.get(), &v1::AuditService::Stub::TruncateAudit, tr) ==
        StatusCode::PERMISSION_DENIED);
  auto root_stub = v1::AuditService::NewStub(admin.channel());
  v1::VerifyAuditResponse vr;
  REQUIRE(Call(admin, root_stub.get(), &v1::AuditService::Stub::VerifyAudit,
               v1::VerifyAuditRequest(), &vr) == StatusCode::OK);
  CHECK(vr.ok());
  CHECK(vr.checkpoint().seq() == 0);  // nothing was truncated
}

TEST_CASE("security: finding 4: with an auth file ledgerqd refuses plaintext off loopback",
          "[e2e][security]") {
  // The review reproduced: with --auth-file, ledgerqd listened on 0.0.0.0 over plaintext, so
  // bearer tokens crossed the network in clear. It must refuse unless
  // --insecure-allow-plaintext is given (not tried here: no daemon is left on 0.0.0.0).
  TempDir dir;
  const std::string file = dir.Sub("auth.toml");
  AuthAdd(file, "root", "admin", "");
  {
    StartAttempt a = StartExpectingRefusal(
        dir.Sub("grpc"),
        {"--auth-file", file, "--grpc-listen", "0.0.0.0:0", "--http-listen", "127.0.0.1:0"});
    INFO(a.err);
    CHECK_FALSE(a.listened);
    CHECK(a.exit.exited);
    CHECK(a.exit.code != 0);
    CHECK_THAT(a.err, Catch::Contains("--grpc-listen"));
    CHECK_THAT(a.err, Catch::Contains("--insecure-allow-plaintext"));
  }
  {
    StartAttempt a = StartExpectingRefusal(
        dir.Sub("http"),
        {"--auth-file", file, "--grpc-listen", "127.0.0.1:0", "--http-listen", "0.0.0.0:0"});
    INFO(a.err);
    CHECK_FALSE(a.listened);
    CHECK(a.exit.exited);
    CHECK(a.exit.code != 0);
    CHECK_THAT(a.err, Catch::Contains("--http-listen"));
    CHECK_THAT(a.err, Catch::Contains("--insecure-allow-plaintext"));
  }
}

TEST_CASE("security: finding 5: a queue-scoped admin cannot replace a schedule of another queue",
          "[e2e][security]") {
  // The review reproduced: AddSchedule with replace=true checked only the new schedule's queue,
  // so an admin limited to "a*" took over schedule "nightly" of queue "b1" by re-adding it on
  // "a1" (and with it the payload the schedule enqueues).
  TempDir dir;
  const std::string file = dir.Sub("auth.toml");
  const std::string root = AuthAdd(file, "root", "admin", "");
  const std::string admin_a = AuthAdd(file, "admin-a", "admin", "a*");
  Daemon d;
  REQUIRE(d.Start(dir.Sub("data"), {"--auth-file", file, "--sync", "none"}));
  Client admin = As(d, root);

  v1::AddScheduleRequest add;
  auto* s = add.mutable_schedule();
  s->set_name("nightly");
  s->set_cron("0 3 1 1 *");  // once a year: it does not fire during the test
  s->set_queue("b1");
  s->set_type("report.nightly");
  s->set_payload(R"({"kind":"nightly"})");
  REQUIRE(admin.AddSchedule(add).ok());

  add.mutable_schedule()->set_queue("a1");
  add.set_replace(true);
  auto taken = As(d, admin_a).AddSchedule(add);
  CHECK(taken.status().code() == Code::kPermissionDenied);

  auto list = admin.ListSchedules();
  REQUIRE(list.ok());
  bool found = false;
  for (const auto& sch : list->schedules()) {
    if (sch.name() != "nightly") continue;
    found = true;
    CHECK(sch.queue() == "b1");
    CHECK(sch.created_by() == "root");
  }
  CHECK(found);
}

TEST_CASE("security: finding 6: lease tokens are bound to a nonce and to the leasing principal",
          "[e2e][security]") {
  // The review reproduced: a lease token was just (job id, attempt), both guessable, so another
  // worker of the same queue could complete, fail, release or heartbeat a lease it never held,
  // with a forged or a copied token.
  TempDir dir;
  const std::string file = dir.Sub("auth.toml");
  const std::string root = AuthAdd(file, "root", "admin", "");
  const std::string w1_token = AuthAdd(file, "w1", "worker", "jobs");
  const std::string w2_token = AuthAdd(file, "w2", "worker", "jobs");
  Daemon d;
  REQUIRE(d.Start(dir.Sub("data"), {"--auth-file", file, "--sync", "none"}));
  Client admin = As(d, root);
  Client w1 = As(d, w1_token);
  Client w2 = As(d, w2_token);

  auto e = admin.Enqueue(Req("jobs", "t", R"({"n":1})"));
  REQUIRE(e.ok());
  const uint64_t id = e->job().id();
  auto l = w1.Lease(LeaseReq("jobs", 1, 60, 0, "w1-host"));
  REQUIRE(l.ok());
  REQUIRE(l->jobs_size() == 1);
  REQUIRE(l->jobs(0).job().id() == id);
  const v1::LeaseToken token = l->jobs(0).token();
  CHECK(token.nonce().size() == 16);

  // w2 with a token made from the guessable parts only.
  v1::LeaseToken bare;
  bare.set_job_id(token.job_id());
  bare.set_attempt(token.attempt());
  CHECK(w2.Complete(CompleteReq(bare, R"({"by":"w2"})")).status().code() ==
        Code::kFailedPrecondition);
  // w2 with w1's exact token, nonce included.
  CHECK(w2.Complete(CompleteReq(token, R"({"by":"w2"})")).status().code() ==
        Code::kFailedPrecondition);
  v1::HeartbeatRequest hb;
  *hb.add_tokens() = token;
  auto beat = w2.Heartbeat(hb);
  REQUIRE(beat.ok());
  REQUIRE(beat->results_size() == 1);
  CHECK(beat->results(0).lease_lost());
  // w1 itself with a wrong nonce.
  v1::LeaseToken forged = token;
  std::string nonce = forged.nonce();
  if (nonce.empty()) {
    nonce = "x";
  } else {
    nonce[0] = static_cast<char>(nonce[0] ^ 0x01);
  }
  forged.set_nonce(nonce);
  CHECK(w1.Complete(CompleteReq(forged, R"({"by":"w1"})")).status().code() ==
        Code::kFailedPrecondition);

  // The holder completes; a repeat gets the same answer, but only for the holder.
  auto first = w1.Complete(CompleteReq(token, R"({"by":"w1"})"));
  REQUIRE(first.ok());
  auto again = w1.Complete(CompleteReq(token, R"({"by":"w1"})"));
  REQUIRE(again.ok());
  CHECK(again->job().id() == id);
  CHECK(again->job().state() == v1::JOB_STATE_SUCCEEDED);
  CHECK(again->job().updated_at().seconds() == first->job().updated_at().seconds());
  CHECK(again->job().updated_at().nanos() == first->job().updated_at().nanos());
  CHECK(w2.Complete(CompleteReq(token, R"({"by":"w1"})")).status().code() ==
        Code::kFailedPrecondition);

  auto job = admin.GetJob(id);
  REQUIRE(job.ok());
  CHECK(job->state() == v1::JOB_STATE_SUCCEEDED);
  CHECK(job->attempts() == 1);
  CHECK(job->result() == R"({"by":"w1"})");
  // The nonce is the lease's secret: no answer but the lease carries it.
  if (!token.nonce().empty()) {
    CHECK_FALSE(Contains(job->SerializeAsString(), token.nonce()));
    v1::GetJobHistoryRequest hr;
    hr.set_id(id);
    auto h = admin.GetJobHistory(hr);
    REQUIRE(h.ok());
    CHECK_FALSE(Contains(h->SerializeAsString(), token.nonce()));
  }

  // A second lease: w2 can neither fail nor release it with w1's token.
  auto e2 = admin.Enqueue(Req("jobs", "t", R"({"n":2})"));
  REQUIRE(e2.ok());
  const uint64_t id2 = e2->job().id();
  auto l2 = w1.Lease(LeaseReq("jobs", 1, 60, 0, "w1-host"));
  REQUIRE(l2.ok());
  REQUIRE(l2->jobs_size() == 1);
  REQUIRE(l2->jobs(0).job().id() == id2);
  const v1::LeaseToken token2 = l2->jobs(0).token();
  CHECK(w2.Fail(FailReq(token2, v1::ERROR_KIND_PERMANENT, "STOLEN")).status().code() ==
        Code::kFailedPrecondition);
  v1::ReleaseRequest rr;
  *rr.mutable_token() = token2;
  CHECK(w2.Release(rr).status().code() == Code::kFailedPrecondition);
  auto job2 = admin.GetJob(id2);
  REQUIRE(job2.ok());
  CHECK(job2->state() == v1::JOB_STATE_LEASED);
  CHECK(job2->attempts() == 1);
}

TEST_CASE("security: finding 7: roles without payload access get no payload or result digests",
          "[e2e][security]") {
  // The review reproduced: an operator (no payload access) got payload_sha256 in GetJob and
  // payload_sha256 / result_sha256 in every event of GetJobHistory, so it could confirm a
  // guessed payload or result (a card number, a yes/no answer) offline.
  TempDir dir;
  const std::string file = dir.Sub("auth.toml");
  const std::string root = AuthAdd(file, "root", "admin", "");
  const std::string ops_token = AuthAdd(file, "ops", "operator", "pay");
  const std::string worker_token = AuthAdd(file, "w", "worker", "pay");
  Daemon d;
  REQUIRE(d.Start(dir.Sub("data"), {"--auth-file", file, "--sync", "none"}));
  Client admin = As(d, root);
  auto e = admin.Enqueue(Req("pay", "charge", R"({"card":"4111-1111"})"));
  REQUIRE(e.ok());
  const uint64_t id = e->job().id();
  Client worker = As(d, worker_token);
  auto l = worker.Lease(LeaseReq("pay", 1, 60, 0, "w-1"));
  REQUIRE(l.ok());
  REQUIRE(l->jobs_size() == 1);
  REQUIRE(worker.Complete(CompleteReq(l->jobs(0).token(), R"({"approved":true})")).ok());

  v1::GetJobHistoryRequest hr;
  hr.set_id(id);
  // The admin sees the digests.
  auto full = admin.GetJob(id);
  REQUIRE(full.ok());
  REQUIRE(full->state() == v1::JOB_STATE_SUCCEEDED);
  CHECK_FALSE(full->payload_sha256().empty());
  auto full_h = admin.GetJobHistory(hr);
  REQUIRE(full_h.ok());
  REQUIRE(full_h->jobs_size() == 1);
  CHECK_FALSE(full_h->jobs(0).job().payload_sha256().empty());
  bool submitted = false, completed = false;
  for (const auto& ev : full_h->jobs(0).events()) {
    if (ev.type() == "SUBMITTED") {
      submitted = true;
      CHECK_FALSE(ev.payload_sha256().empty());
    }
    if (ev.type() == "COMPLETED") {
      completed = true;
      CHECK_FALSE(ev.result_sha256().empty());
    }
  }
  REQUIRE(submitted);
  REQUIRE(completed);

  // The operator sees neither.
  Client ops = As(d, ops_token);
  auto job = ops.GetJob(id);
  REQUIRE(job.ok());
  REQUIRE(job->payload_omitted());
  CHECK(job->payload_sha256().empty());
  auto h = ops.GetJobHistory(hr);
  REQUIRE(h.ok());
  REQUIRE(h->jobs_size() == 1);
  CHECK(h->jobs(0).job().payload_sha256().empty());
  REQUIRE(h->jobs(0).events_size() > 0);
  for (const auto& ev : h->jobs(0).events()) {
    INFO(ev.type() << " (seq " << ev.seq() << ")");
    CHECK(ev.payload_sha256().empty());
    CHECK(ev.result_sha256().empty());
  }
}

TEST_CASE("security: finding 8: a deduplicated enqueue hides the original from others",
          "[e2e][security]") {
  // The review reproduced: producer p2 enqueueing with p1's idempotency key got p1's job back
  // (deduplicated) with p1's labels, submitted_by and payload digest: a way to read another
  // producer's jobs by guessing keys.
  TempDir dir;
  const std::string file = dir.Sub("auth.toml");
  const std::string p1_token = AuthAdd(file, "p1", "producer", "q");
  const std::string p2_token = AuthAdd(file, "p2", "producer", "q");
  Daemon d;
  REQUIRE(d.Start(dir.Sub("data"), {"--auth-file", file, "--sync", "none"}));
  Client p1 = As(d, p1_token);
  Client p2 = As(d, p2_token);

  auto req = Req("q", "t", R"({"order":17})", "k1");
  (*req.mutable_labels())["owner"] = "p1";
  auto original = p1.Enqueue(req);
  REQUIRE(original.ok());
  REQUIRE_FALSE(original->deduplicated());
  REQUIRE(original->job().labels().at("owner") == "p1");
  REQUIRE(original->job().submitted_by() == "p1");

  auto theirs = p2.Enqueue(Req("q", "t", R"({"order":17})", "k1"));
  REQUIRE(theirs.ok());
  CHECK(theirs->deduplicated());
  CHECK(theirs->job().id() == original->job().id());
  CHECK(theirs->job().labels().empty());
  CHECK(theirs->job().submitted_by().empty());
  CHECK(theirs->job().payload_sha256().empty());
  CHECK(theirs->job().payload_omitted());
  CHECK(theirs->job().payload().empty());
}

TEST_CASE("security: finding 9: jobs outside the scope of the caller are NOT_FOUND",
          "[e2e][security]") {
  // The review reproduced: reading a job one may not read answered PERMISSION_DENIED naming the
  // job's queue, while a missing id answered NOT_FOUND, so any producer or scoped operator could
  // tell which ids, idempotency keys and trace ids exist, and in which queue.
  TempDir dir;
  const std::string file = dir.Sub("auth.toml");
  const std::string root = AuthAdd(file, "root", "admin", "");
  const std::string p1_token = AuthAdd(file, "p1", "producer", "q");
  const std::string p2_token = AuthAdd(file, "p2", "producer", "q");
  const std::string ops_a_token = AuthAdd(file, "ops-a", "operator", "a*");
  Daemon d;
  REQUIRE(d.Start(dir.Sub("data"), {"--auth-file", file, "--sync", "none"}));
  Client admin = As(d, root);

  SECTION("a producer reading another producer's job") {
    Client p1 = As(d, p1_token);
    Client p2 = As(d, p2_token);
    auto e = p1.Enqueue(Req("q", "t", R"({"n":1})"));
    REQUIRE(e.ok());
    const uint64_t j = e->job().id();
    const uint64_t missing = j + 1'000'000;
    REQUIRE(admin.GetJob(missing).status().code() == Code::kNotFound);

    auto theirs = p2.GetJob(j);
    CHECK(theirs.status().code() == Code::kNotFound);
    auto none = p2.GetJob(missing);
    REQUIRE(none.status().code() == Code::kNotFound);
    INFO("not readable: " << theirs.status().message());
    INFO("missing: " << none.status().message());
    CHECK(MaskNumber(theirs.status().message(), j) == MaskNumber(none.status().message(), missing));
    CHECK_FALSE(Contains(theirs.status().message(), "\"q\""));
  }

  SECTION("an operator scoped to a* looking up a job of queue b1") {
    auto e = admin.Enqueue(Req("b1", "t", R"({"n":1})", "kb"));
    REQUIRE(e.ok());
    const uint64_t k = e->job().id();
    const std::string traceparent = e->job().traceparent();
    REQUIRE(traceparent.size() >= 35);
    const std::string trace_id = traceparent.substr(3, 32);
    Client ops = As(d, ops_a_token);

    auto by_id = ops.GetJob(k);
    CHECK(by_id.status().code() == Code::kNotFound);
    CHECK_FALSE(Contains(by_id.status().message(), "b1"));

    // The caller names the queue itself here: the answer must be the one for a key that names
    // no job (which repeats the queue asked about, and nothing more).
    auto by_key = ops.GetJobByIdempotencyKey("b1", "kb");
    CHECK(by_key.status().code() == Code::kNotFound);
    auto no_key = ops.GetJobByIdempotencyKey("b1", "kb-never-used");
    CHECK(no_key.status().code() == Code::kNotFound);
    std::string expected = no_key.status().message();
    const std::string unused = "kb-never-used";
    if (auto at = expected.find(unused); at != std::string::npos)
      expected.replace(at, unused.size(), "kb");
    CHECK(by_key.status().message() == expected);

    v1::GetJobHistoryRequest hr;
    hr.set_trace_id(trace_id);
    auto by_trace = ops.GetJobHistory(hr);
    CHECK(by_trace.status().code() == Code::kNotFound);
    // (The trace id is random hex, so "b1" may well be in it: compare the whole message.)
    CHECK(by_trace.status().message() == "no job was submitted in trace " + trace_id);

    auto cancel = ops.CancelJob(k, "probing");
    CHECK(cancel.status().code() == Code::kNotFound);
    CHECK_FALSE(Contains(cancel.status().message(), "b1"));

    auto still = admin.GetJob(k);
    REQUIRE(still.ok());
    CHECK(still->state() == v1::JOB_STATE_READY);  // the refused cancel changed nothing

    // Batch-shaped calls: a dead job of b1 and an id no job has get the same item answer.
    auto dreq = Req("b1", "t", R"({"n":2})");
    dreq.set_max_attempts(1);
    auto dead = admin.Enqueue(dreq);
    REQUIRE(dead.ok());
    auto dl = admin.Lease(LeaseReq("b1", 8, 60, 0, "fixture"));
    REQUIRE(dl.ok());
    for (const auto& j : dl->jobs()) {
      if (j.job().id() != dead->job().id()) continue;
      REQUIRE(admin.Fail(FailReq(j.token(), v1::ERROR_KIND_PERMANENT, "NO")).ok());
    }
    const uint64_t dead_id = dead->job().id(), missing_id = dead_id + 1'000'000;
    auto admin_stub = v1::AdminService::NewStub(ops.channel());
    for (bool resolve : {false, true}) {
      INFO((resolve ? "ResolveAttention" : "Redrive"));
      v1::RedriveResponse rr;
      StatusCode code;
      if (resolve) {
        v1::ResolveAttentionRequest r;
        r.add_ids(dead_id);
        r.add_ids(missing_id);
        code = Call(ops, admin_stub.get(), &v1::AdminService::Stub::ResolveAttention, r, &rr);
      } else {
        v1::RedriveRequest r;
        r.add_ids(dead_id);
        r.add_ids(missing_id);
        code = Call(ops, admin_stub.get(), &v1::AdminService::Stub::Redrive, r, &rr);
      }
      REQUIRE(code == StatusCode::OK);
      REQUIRE(rr.results_size() == 2);
      CHECK(rr.results(0).error().code() == rr.results(1).error().code());
      CHECK(MaskNumber(rr.results(0).error().message(), dead_id) ==
            MaskNumber(rr.results(1).error().message(), missing_id));
      CHECK(rr.redriven() == 0);
    }
    auto after = admin.GetJob(dead_id);
    REQUIRE(after.ok());
    CHECK(after->state() == v1::JOB_STATE_DEAD);  // the refused redrive changed nothing
  }
}

TEST_CASE("security: finding 10: a metrics role scrapes /metrics and producers and workers do not",
          "[e2e][security]") {
  // The review reproduced: any principal's token, a producer's or a worker's included, read
  // /metrics (every queue's names and counts), and a scraper needed a token of a real role. A
  // `metrics` role now reads /metrics and nothing else; producers and workers get 403.
  TempDir dir;
  const std::string file = dir.Sub("auth.toml");
  std::map<std::string, std::string> token;
  for (const char* role : {"producer", "worker", "operator", "auditor", "admin", "metrics"}) {
    token[role] = AuthAdd(file, std::string(role) + "-1", role, "");
  }
  Daemon d;
  REQUIRE(d.Start(dir.Sub("data"), {"--auth-file", file, "--sync", "none"}));
  const int port = d.http_port();
  CHECK(HttpStatus(port, "/metrics", "") == 401);
  CHECK(HttpStatus(port, "/metrics", "Bearer " + token["producer"]) == 403);
  CHECK(HttpStatus(port, "/metrics", "Bearer " + token["worker"]) == 403);
  for (const char* role : {"metrics", "operator", "auditor", "admin"}) {
    INFO(role);
    CHECK(HttpStatus(port, "/metrics", "Bearer " + token[role]) == 200);
  }
  CHECK(HttpStatus(port, "/healthz", "") == 200);

  Client scraper = As(d, token["metrics"]);
  CHECK(Call(scraper, scraper.admin(), &v1::AdminService::Stub::ListQueues,
             v1::ListQueuesRequest()) == StatusCode::PERMISSION_DENIED);
}

TEST_CASE("security: finding 11: with auth on gRPC reflection is not served but health is",
          "[e2e][security]") {
  // The review reproduced: with an auth file, the gRPC reflection service answered anyone
  // without credentials, listing every service and method. With auth on it is not registered
  // (UNIMPLEMENTED); without an auth file it still answers, and the health service answers
  // without credentials either way.
  const std::string kReflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
  const std::string kListServices("\x3a\x00", 2);  // ServerReflectionRequest{list_services: ""}
  TempDir dir;
  const std::string file = dir.Sub("auth.toml");
  AuthAdd(file, "root", "admin", "");
  {
    Daemon d;
    REQUIRE(d.Start(dir.Sub("auth"), {"--auth-file", file, "--sync", "none"}));
    StreamOutcome r = BidiOnce(d.grpc_address(), kReflection, kListServices);
    INFO("reflection with auth on: " << static_cast<int>(r.code) << " " << r.message);
    CHECK(r.code == StatusCode::UNIMPLEMENTED);
    CHECK(r.responses == 0);

    UnaryOutcome health = UnaryOnce(d.grpc_address(), "/grpc.health.v1.Health/Check", "");
    CHECK(health.code == StatusCode::OK);
    CHECK(health.response == std::string("\x08\x01", 2));  // status: SERVING
  }
  {
    Daemon d;
    REQUIRE(d.Start(dir.Sub("open"), {"--sync", "none"}));
    StreamOutcome r = BidiOnce(d.grpc_address(), kReflection, kListServices);
    INFO("reflection with auth off: " << static_cast<int>(r.code) << " " << r.message);
    CHECK(r.code == StatusCode::OK);
    CHECK(r.responses >= 1);
  }
}

TEST_CASE("security: finding 1: no hashed audit event holds a failure payload snapshot",
          "[e2e][security]") {
  // The review reproduced: a worker failed a job with this payload on a queue masking
  // `password`; an auditor's ExportAudit body then decoded to
  // {"password":"***","ssn":"987-65-4321","user":"bob"}, and `ledgerq audit export` printed it.
  TempDir dir;
  const std::string file = dir.Sub("auth.toml");
  const std::string root = AuthAdd(file, "root", "admin", "");
  const std::string worker_token = AuthAdd(file, "w1", "worker", "pay");
  const std::string auditor_token = AuthAdd(file, "aud", "auditor", "");
  Daemon d;
  REQUIRE(d.Start(dir.Sub("data"), {"--auth-file", file, "--sync", "none"}));
  Client admin = As(d, root);
  Client worker = As(d, worker_token);
  Client auditor = As(d, auditor_token);

  auto e = admin.Enqueue(
      Req("pay", "charge", R"({"user":"bob","password":"pw-b","ssn":"987-65-4321"})"));
  REQUIRE(e.ok());
  const uint64_t id = e->job().id();
  auto l = worker.Lease(LeaseReq("pay", 1, 60, 0, "w1-host"));
  REQUIRE(l.ok());
  REQUIRE(l->jobs_size() == 1);
  REQUIRE(worker.Fail(FailReq(l->jobs(0).token(), v1::ERROR_KIND_TRANSIENT, "GATEWAY")).ok());

  // Neither the auditor's nor even the admin's export carries the snapshot in a hashed body.
  for (Client* c : {&auditor, &admin}) {
    std::vector<v1::AuditEvent> events;
    REQUIRE(ExportAll(*c, 0, &events) == StatusCode::OK);
    bool saw_failed = false;
    for (const auto& ev : events) {
      INFO("event " << ev.seq());
      CHECK_FALSE(Contains(ev.body(), "987-65-4321"));
      CHECK_FALSE(Contains(ev.body(), "bob"));
      CHECK(ev.event().error().payload_snapshot().empty());
      if (ev.event().type() == "FAILED") {
        saw_failed = true;
        // The digest is in the body for everyone; readable only to roles with payload access.
        CHECK(ev.event().error().payload_snapshot_sha256().size() == (c == &admin ? 32u : 0u));
      }
    }
    CHECK(saw_failed);
  }
  std::string out, err;
  ExitInfo x = Cli(d.grpc_address(), {"--token", auditor_token, "audit", "export"}, &out, &err);
  REQUIRE(x.exited);
  CHECK(x.code == 0);
  CHECK_FALSE(Contains(out, "987-65-4321"));

  // The job record keeps the masked snapshot, for roles with payload access.
  auto job = admin.GetJob(id);
  REQUIRE(job.ok());
  REQUIRE(job->errors_size() == 1);
  CHECK(Contains(job->errors(0).payload_snapshot(), "987-65-4321"));
  CHECK(Contains(job->errors(0).payload_snapshot(), "\"password\":\"***\""));
  v1::GetJobHistoryRequest hreq;
  hreq.set_id(id);
  auto history = admin.GetJobHistory(hreq);
  REQUIRE(history.ok());
  bool shown = false;
  for (const auto& ev : history->jobs(0).events()) {
    if (ev.type() == "FAILED") shown = Contains(ev.error().payload_snapshot(), "987-65-4321");
  }
  CHECK(shown);  // `ledgerq job ID --history` still says what the payload was
  auto hidden = auditor.GetJob(id);
  REQUIRE(hidden.ok());
  CHECK(hidden->errors(0).payload_snapshot().empty());
}
