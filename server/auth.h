// Authentication and authorization for ledgerqd's gRPC and HTTP endpoints. Owns the auth file
// (principals, roles, queue patterns, token digests), the role -> permission table and the
// decision for one call; the services ask it and pass the principal it names on to storage.
// It never sees a token in clear beyond hashing it, never logs a token or a digest, and never
// changes the table in place: a reload builds a new one and swaps it atomically.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/sha256.h"
#include "common/status.h"
#include "ledgerq/v1/ledgerq.pb.h"
#include "server/config.h"

namespace prometheus {
template <typename T>
class Family;
class Counter;
}  // namespace prometheus

namespace ledgerq::metrics {
class Metrics;
}

namespace ledgerq::server {

// kMetrics: a Prometheus scraper's role, /metrics only.
enum class Role { kProducer, kWorker, kOperator, kAuditor, kAdmin, kMetrics };

// What a role may do. Queue-scoped permissions are further limited to the principal's queues.
enum class Permission : uint32_t {
  kEnqueue,        // Enqueue, EnqueueBatch
  kReadOwnJobs,    // GetJob, GetJobHistory of jobs the principal submitted
  kReadJobs,       // GetJob, GetJobHistory of any job in its queues
  kReadPayloads,   // payloads, results and failure snapshots in answers
  kWork,           // Lease, Heartbeat, Complete, CompleteBatch, Fail, Release
  kList,           // ListQueues, ListJobs, ListDeadLetters, ListFailures, ListSchedules
  kPause,          // PauseQueue, ResumeQueue
  kCancel,         // CancelJob
  kRedrive,        // Redrive, ResolveAttention
  kAuditRead,      // AuditService VerifyAudit, ExportAudit, Reconcile
  kAuditTruncate,  // AuditService TruncateAudit
  kLimits,         // SetQueueLimits, SetCircuit
  kSchedule,       // AddSchedule, RemoveSchedule (a schedule enqueues jobs with its payload)
  kMetrics,        // HTTP /metrics (every queue's counts and rates)
};
inline constexpr size_t kPermissionCount = 14;

const char* RoleName(Role role);
const char* PermissionName(Permission p);
[[nodiscard]] Result<Role> ParseRole(std::string_view text);
// The role -> permission table.
bool RoleAllows(Role role, Permission p);

// Queue patterns are fnmatch(3) globs: "*" (every queue), "billing.*", "jobs-?".
bool QueueMatches(std::string_view pattern, std::string_view queue);

struct Principal {
  std::string name;  // also the certificate CN or whole subject it is known by under mTLS
  Role role = Role::kProducer;
  std::vector<std::string> queues{"*"};
  std::vector<Digest> token_sha256;  // empty: authenticates only by client certificate
};

// One parsed auth file. Immutable once built; shared by in-flight calls across reloads.
class AuthTable {
 public:
  // Parses and validates the TOML text; errors name the entry (index and name) and the key.
  // `source` names the file in messages.
  [[nodiscard]] static Result<std::shared_ptr<const AuthTable>> Parse(std::string_view text,
                                                                      std::string_view source);
  [[nodiscard]] static Result<std::shared_ptr<const AuthTable>> Load(const std::string& path);

  // The principal holding `token` (compared as SHA-256 digests in constant time, against every
  // digest so the time does not depend on which one matches), or null.
  const Principal* ByToken(std::string_view token) const;
  // The principal named `cn` or, failing that, `subject` (certificate identities), or null.
  const Principal* ByName(std::string_view cn, std::string_view subject) const;
  const std::vector<Principal>& principals() const { return principals_; }

 private:
  std::vector<Principal> principals_;
  std::unordered_map<std::string, size_t> by_name_;
};

// The authenticated caller of one request. Without an auth file: "anonymous" with every
// permission on every queue (the behaviour before authentication existed).
struct Caller {
  std::string name;
  Role role = Role::kAdmin;
  std::shared_ptr<const AuthTable> table;  // keeps `principal` alive across a reload
  const Principal* principal = nullptr;    // null when auth is off

  bool Allows(Permission p) const { return RoleAllows(role, p); }
  bool AllowsQueue(std::string_view queue) const;
  // Every queue ("*" among its patterns, or auth off): per-job queue checks can be skipped.
  bool AllQueues() const;
  bool payloads() const { return Allows(Permission::kReadPayloads); }
  // May read this job: kReadJobs in its queue, or kReadOwnJobs and it submitted the job.
  bool MayReadJob(std::string_view queue, std::string_view submitted_by) const;
};

// Leaves out payload, result and failure snapshots and their digests (marking the job
// payload_omitted).
void OmitPayload(v1::Job* job);
void OmitPayload(v1::JobEvent* event);
// Keeps only id, queue, type and state: what a deduplicated Enqueue tells a caller that may not
// read the job its idempotency key names (another producer's).
void KeepOnlyIdentity(v1::Job* job);

// The daemon's authorizer: the current AuthTable behind an atomic pointer, swapped by Reload.
class Authorizer {
 public:
  // `path` empty: auth off, every caller is anonymous with every permission. `metrics` may be
  // null (tests).
  explicit Authorizer(std::string path = {}, metrics::Metrics* metrics = nullptr);
  ~Authorizer();

  // Loads the file at startup; an error fails startup.
  [[nodiscard]] Status Load();
  // Re-reads the file; on any error keeps the current table and returns (and logs) why.
  [[nodiscard]] Status Reload();
  bool enabled() const { return !path_.empty(); }
  const std::string& path() const { return path_; }

  // Authenticates the call (bearer token, else client certificate): OK fills *caller, else
  // UNAUTHENTICATED (counted and logged).
  [[nodiscard]] grpc::Status Authenticate(const grpc::ServerContextBase* ctx, const char* method,
                                          Caller* caller) const;
  // Authenticates the call (bearer token, else client certificate) and checks `perm`, and the
  // queue when one is given. OK fills *caller; otherwise UNAUTHENTICATED or PERMISSION_DENIED,
  // counted in ledgerq_auth_denied_total{reason,method} and logged (rate-limited).
  //   if (auto st = auth_->Check(ctx, Permission::kAuditRead, "VerifyAudit", &caller); !st.ok())
  [[nodiscard]] grpc::Status Check(const grpc::ServerContextBase* ctx, Permission perm,
                                   const char* method, Caller* caller,
                                   std::string_view queue = {}) const;
  // A further check for an authenticated caller, once the queue is known (from the job).
  [[nodiscard]] grpc::Status CheckQueue(const Caller& caller, Permission perm, const char* method,
                                        std::string_view queue) const;
  // A job read: kReadJobs, or kReadOwnJobs when the caller submitted it; and its queue.
  [[nodiscard]] grpc::Status CheckJobRead(const Caller& caller, const char* method,
                                          std::string_view queue,
                                          std::string_view submitted_by) const;

  // Operations on the whole log (verify, truncate) need "*" among the caller's queues.
  [[nodiscard]] grpc::Status CheckAllQueues(const Caller& caller, const char* method) const;

  // A job outside the caller's scope is answered as one that does not exist: a PERMISSION_DENIED
  // from CheckJobRead / CheckQueue (already counted and logged) becomes NOT_FOUND with
  // `not_found`, the store's own message for a missing job, so no answer tells a job's queue or
  // existence to a caller that may not see it. Any other status passes through.
  [[nodiscard]] static grpc::Status HideJob(const grpc::Status& st, const std::string& not_found);
  [[nodiscard]] static std::string JobNotFound(uint64_t id);

  // HTTP: a valid "Bearer <token>" Authorization header, or a certificate identity naming a
  // principal. Any role passes. Always true when auth is off.
  bool AuthenticateHttp(std::string_view authorization, std::string_view cert_cn,
                        std::string_view cert_subject) const;
  // HTTP /metrics: authenticated as above and the role has kMetrics (operator, auditor, admin,
  // metrics). Always kAllowed when auth is off.
  enum class Access { kAllowed, kUnauthenticated, kForbidden };
  [[nodiscard]] Access AuthorizeMetrics(std::string_view authorization, std::string_view cert_cn,
                                        std::string_view cert_subject) const;

  std::shared_ptr<const AuthTable> table() const;

 private:
  grpc::Status Deny(grpc::StatusCode code, const char* method, const std::string& who,
                    const std::string& why) const;
  void Count(const char* reason, const char* method) const;

  std::string path_;
  metrics::Metrics* metrics_;
  prometheus::Family<prometheus::Counter>* denied_ = nullptr;
  mutable std::mutex mu_;  // guards table_ (std::atomic<shared_ptr> is not in libstdc++ 12)
  std::shared_ptr<const AuthTable> table_;
  // Denial log lines: at most kLogBurst per second, the rest counted and summarised.
  mutable std::atomic<int64_t> log_window_{0};
  mutable std::atomic<int> log_count_{0};
};

// The authorizer of services built without one (tests, fuzzing): auth off.
const Authorizer* NoAuth();

// "Bearer <token>" -> token; empty when the value is not a bearer credential.
std::string_view BearerToken(std::string_view authorization);

// A fresh API token: "lq_" + 64 hex digits of 32 random bytes (OpenSSL RAND_bytes).
[[nodiscard]] Result<std::string> NewToken();

// Startup rules for transport security, each error naming its flag: --tls-cert and --tls-key
// go together; --tls-client-ca needs them and --auth-file (the file gives certificate subjects
// their roles); without --auth-file, --grpc-listen and --http-listen must be loopback unless
// --insecure-allow-remote (then *remote_unauthenticated is set, for the daemon's warning); with
// --auth-file, a non-loopback listener needs TLS unless --insecure-allow-plaintext (then
// *remote_plaintext is set, for the daemon's warning).
[[nodiscard]] Status CheckTransport(const Config& config, bool* remote_unauthenticated,
                                    bool* remote_plaintext = nullptr);

// gRPC server credentials for the config: insecure, TLS, or TLS requiring and verifying a
// client certificate. Reads the PEM files; errors name the flag.
[[nodiscard]] Result<std::shared_ptr<grpc::ServerCredentials>> GrpcServerCredentials(
    const Config& config);

}  // namespace ledgerq::server
