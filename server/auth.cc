#include "server/auth.h"

#include <fnmatch.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <spdlog/spdlog.h>
#include <toml++/toml.h>

#include <array>
#include <chrono>
#include <fstream>
#include <sstream>

#include "metrics/metrics.h"
#include "server/http_server.h"

namespace ledgerq::server {
namespace {

constexpr std::array<const char*, 6> kRoleNames = {"producer", "worker", "operator",
                                                   "auditor",  "admin",  "metrics"};
constexpr std::array<const char*, kPermissionCount> kPermissionNames = {
    "enqueue", "read-own-jobs", "read-jobs",  "read-payloads",  "work",   "list",     "pause",
    "cancel",  "redrive",       "audit-read", "audit-truncate", "limits", "schedule", "metrics"};

constexpr uint32_t Bit(Permission p) { return 1u << static_cast<uint32_t>(p); }

// The role -> permission table (README, "Security" spells it out as a matrix).
constexpr std::array<uint32_t, 6> kRolePermissions = {
    // producer: enqueue, and read back the jobs it submitted, with their payloads.
    Bit(Permission::kEnqueue) | Bit(Permission::kReadOwnJobs) | Bit(Permission::kReadPayloads),
    // worker: the lease protocol; a leased job comes with its payload.
    Bit(Permission::kWork) | Bit(Permission::kReadPayloads),
    // operator: job metadata and history, queue control and limits, cancel, redrive; no
    // payloads.
    Bit(Permission::kReadJobs) | Bit(Permission::kList) | Bit(Permission::kPause) |
        Bit(Permission::kCancel) | Bit(Permission::kRedrive) | Bit(Permission::kLimits) |
        Bit(Permission::kMetrics),
    // auditor: read-only metadata and history, and the audit log; no payloads, no changes.
    Bit(Permission::kReadJobs) | Bit(Permission::kList) | Bit(Permission::kAuditRead) |
        Bit(Permission::kMetrics),
    // admin: everything.
    (1u << kPermissionCount) - 1,
    // metrics: a Prometheus scraper; /metrics and no gRPC method.
    Bit(Permission::kMetrics),
};

// A denial's log lines: at most this many per second.
constexpr int kLogBurst = 20;

Result<Digest> ParseDigest(std::string_view hex) {
  Digest d{};
  if (hex.size() != 64) return Status::InvalidArgument("must be 64 hex digits");
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < 32; ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return Status::InvalidArgument("must be 64 hex digits");
    d[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return d;
}

// Queue patterns: the characters of queue names plus the glob characters.
bool ValidPattern(std::string_view p) {
  if (p.empty() || p.size() > 256) return false;
  for (char c : p) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-' || c == '*' || c == '?' || c == '[' ||
              c == ']' || c == '!';
    if (!ok) return false;
  }
  return true;
}

Result<std::vector<std::string>> StringArray(const toml::node& node, bool allow_empty) {
  const toml::array* arr = node.as_array();
  if (!arr) return Status::InvalidArgument("must be an array of strings");
  std::vector<std::string> out;
  for (auto&& el : *arr) {
    auto s = el.value<std::string>();
    if (!s || (!allow_empty && s->empty())) {
      return Status::InvalidArgument("must be an array of non-empty strings");
    }
    out.push_back(*s);
  }
  return out;
}

}  // namespace

const char* RoleName(Role role) { return kRoleNames[static_cast<size_t>(role)]; }

const char* PermissionName(Permission p) { return kPermissionNames[static_cast<size_t>(p)]; }

Result<Role> ParseRole(std::string_view text) {
  for (size_t i = 0; i < kRoleNames.size(); ++i) {
    if (text == kRoleNames[i]) return static_cast<Role>(i);
  }
  return Status::InvalidArgument(
      "must be one of producer, worker, operator, auditor, admin, metrics; got \"" +
      std::string(text) + "\"");
}

bool RoleAllows(Role role, Permission p) {
  return (kRolePermissions[static_cast<size_t>(role)] & Bit(p)) != 0;
}

bool QueueMatches(std::string_view pattern, std::string_view queue) {
  const std::string p(pattern), q(queue);
  return fnmatch(p.c_str(), q.c_str(), 0) == 0;
}

// ---------------------------------------------------------------------------------------------

Result<std::shared_ptr<const AuthTable>> AuthTable::Parse(std::string_view text,
                                                          std::string_view source) {
  const std::string src(source);
  toml::table doc;
  try {
    doc = toml::parse(text);
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << src << ": line " << e.source().begin.line << ": " << e.description();
    return Status::InvalidArgument(msg.str());
  }
  auto table = std::make_shared<AuthTable>();
  for (auto&& [key, node] : doc) {
    if (key.str() != "principal") {
      return Status::InvalidArgument(src + ": unknown key \"" + std::string(key.str()) +
                                     "\" (expected [[principal]] entries)");
    }
  }
  const toml::node* entries = doc.get("principal");
  if (entries == nullptr) return std::shared_ptr<const AuthTable>(table);  // nobody may call
  const toml::array* arr = entries->as_array();
  if (arr == nullptr || !arr->is_array_of_tables()) {
    return Status::InvalidArgument(src + ": principal: must be [[principal]] tables");
  }
  std::unordered_map<std::string, std::string> digest_owner;  // hex digest -> principal name
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::table& t = *arr->get(i)->as_table();
    std::string where = src + ": principal[" + std::to_string(i) + "]";
    Principal p;
    bool has_name = false, has_role = false;
    if (auto n = t.get("name")) {
      auto s = n->value<std::string>();
      if (!s || s->empty() || s->size() > 1024) {
        return Status::InvalidArgument(where + ": name: must be a non-empty string");
      }
      p.name = *s;
      has_name = true;
      where += " \"" + p.name + "\"";
    }
    if (!has_name) return Status::InvalidArgument(where + ": name: missing");
    for (auto&& [k, v] : t) {
      const std::string key(k.str());
      if (key == "name") continue;
      if (key == "role") {
        auto s = v.value<std::string>();
        if (!s) return Status::InvalidArgument(where + ": role: must be a string");
        auto r = ParseRole(*s);
        if (!r.ok()) return Status::InvalidArgument(where + ": role: " + r.status().message());
        p.role = *r;
        has_role = true;
      } else if (key == "queues") {
        auto qs = StringArray(v, false);
        if (!qs.ok()) return Status::InvalidArgument(where + ": queues: " + qs.status().message());
        if (qs->empty()) return Status::InvalidArgument(where + ": queues: must not be empty");
        for (const auto& q : *qs) {
          if (!ValidPattern(q)) {
            return Status::InvalidArgument(where + ": queues: \"" + q +
                                           "\" is not a queue name or glob pattern");
          }
        }
        p.queues = std::move(qs).value();
      } else if (key == "token-sha256") {
        auto ds = StringArray(v, false);
        if (!ds.ok()) {
          return Status::InvalidArgument(where + ": token-sha256: " + ds.status().message());
        }
        for (size_t j = 0; j < ds->size(); ++j) {
          auto d = ParseDigest((*ds)[j]);
          const std::string field = where + ": token-sha256[" + std::to_string(j) + "]";
          if (!d.ok()) return Status::InvalidArgument(field + ": " + d.status().message());
          auto [it, fresh] = digest_owner.emplace(ToHex(*d), p.name);
          if (!fresh) {
            return Status::InvalidArgument(
                field + ": the same token digest is already given to \"" + it->second + "\"");
          }
          p.token_sha256.push_back(*d);
        }
      } else {
        return Status::InvalidArgument(where + ": unknown key \"" + key +
                                       "\" (expected name, role, queues, token-sha256)");
      }
    }
    if (!has_role) return Status::InvalidArgument(where + ": role: missing");
    if (table->by_name_.count(p.name)) {
      return Status::InvalidArgument(where + ": name: \"" + p.name + "\" is given twice");
    }
    table->by_name_.emplace(p.name, table->principals_.size());
    table->principals_.push_back(std::move(p));
  }
  return std::shared_ptr<const AuthTable>(std::move(table));
}

Result<std::shared_ptr<const AuthTable>> AuthTable::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::InvalidArgument("--auth-file: cannot read " + path);
  std::stringstream buf;
  buf << in.rdbuf();
  return Parse(buf.str(), path);
}

const Principal* AuthTable::ByToken(std::string_view token) const {
  if (token.empty()) return nullptr;
  const Digest d = Sha256(token);
  const Principal* found = nullptr;
  // Every digest is compared, so the time depends only on how many there are.
  for (const auto& p : principals_) {
    for (const auto& candidate : p.token_sha256) {
      if (CRYPTO_memcmp(candidate.data(), d.data(), d.size()) == 0) found = &p;
    }
  }
  return found;
}

const Principal* AuthTable::ByName(std::string_view cn, std::string_view subject) const {
  for (std::string_view id : {cn, subject}) {
    if (id.empty()) continue;
    if (auto it = by_name_.find(std::string(id)); it != by_name_.end()) {
      return &principals_[it->second];
    }
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------------

bool Caller::AllowsQueue(std::string_view queue) const {
  if (principal == nullptr) return true;
  for (const auto& pattern : principal->queues) {
    if (QueueMatches(pattern, queue)) return true;
  }
  return false;
}

bool Caller::AllQueues() const {
  if (principal == nullptr) return true;
  for (const auto& pattern : principal->queues) {
    if (pattern == "*") return true;
  }
  return false;
}

bool Caller::MayReadJob(std::string_view queue, std::string_view submitted_by) const {
  if (!AllowsQueue(queue)) return false;
  return Allows(Permission::kReadJobs) ||
         (Allows(Permission::kReadOwnJobs) && submitted_by == name);
}

const Authorizer* NoAuth() {
  static const Authorizer off;
  return &off;
}

// The digests go too: they are unsalted, so a small payload could be found by guessing.
void OmitPayload(v1::Job* job) {
  job->clear_payload();
  job->clear_result();
  job->clear_payload_sha256();
  for (auto& e : *job->mutable_errors()) {
    e.clear_payload_snapshot();
    e.clear_payload_snapshot_sha256();
  }
  job->set_payload_omitted(true);
}

void OmitPayload(v1::JobEvent* event) {
  event->clear_payload_sha256();
  event->clear_result_sha256();
  if (event->has_error()) {
    event->mutable_error()->clear_payload_snapshot();
    event->mutable_error()->clear_payload_snapshot_sha256();
  }
}

void KeepOnlyIdentity(v1::Job* job) {
  v1::Job kept;
  kept.set_id(job->id());
  kept.set_queue(job->queue());
  kept.set_type(job->type());
  kept.set_state(job->state());
  kept.set_payload_omitted(true);
  *job = std::move(kept);
}

std::string_view BearerToken(std::string_view v) {
  constexpr std::string_view kBearer = "Bearer ";
  if (v.size() <= kBearer.size()) return {};
  for (size_t i = 0; i < kBearer.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(v[i])) !=
        std::tolower(static_cast<unsigned char>(kBearer[i]))) {
      return {};
    }
  }
  v.remove_prefix(kBearer.size());
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
  return v;
}

Result<std::string> NewToken() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    return Status::Internal("cannot generate a token: OpenSSL RAND_bytes failed");
  }
  return "lq_" + ToHex(std::string_view(reinterpret_cast<const char*>(bytes), sizeof bytes));
}

// ---------------------------------------------------------------------------------------------

Authorizer::Authorizer(std::string path, metrics::Metrics* metrics)
    : path_(std::move(path)), metrics_(metrics) {
  if (metrics_) {
    denied_ = &prometheus::BuildCounter()
                   .Name("ledgerq_auth_denied_total")
                   .Help(
                       "gRPC and HTTP requests refused by authentication (reason "
                       "unauthenticated) or authorization (permission_denied), by method")
                   .Register(metrics_->registry());
  }
}

Authorizer::~Authorizer() = default;

Status Authorizer::Load() {
  if (!enabled()) return Status::Ok();
  auto t = AuthTable::Load(path_);
  if (!t.ok()) return t.status();
  std::lock_guard lock(mu_);
  table_ = *t;
  return Status::Ok();
}

Status Authorizer::Reload() {
  if (!enabled()) return Status::Ok();
  auto t = AuthTable::Load(path_);
  if (!t.ok()) {
    spdlog::error("auth file not reloaded, the previous one stays in force: {}",
                  t.status().message());
    return t.status();
  }
  const size_t n = (*t)->principals().size();
  {
    std::lock_guard lock(mu_);
    table_ = *t;
  }
  spdlog::info("auth file {} reloaded ({} principals)", path_, n);
  return Status::Ok();
}

std::shared_ptr<const AuthTable> Authorizer::table() const {
  std::lock_guard lock(mu_);
  return table_;
}

void Authorizer::Count(const char* reason, const char* method) const {
  if (denied_) denied_->Add({{"reason", reason}, {"method", method}}).Increment();
}

grpc::Status Authorizer::Deny(grpc::StatusCode code, const char* method, const std::string& who,
                              const std::string& why) const {
  const bool unauth = code == grpc::StatusCode::UNAUTHENTICATED;
  Count(unauth ? "unauthenticated" : "permission_denied", method);
  const int64_t second = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::steady_clock::now().time_since_epoch())
                             .count();
  int64_t window = log_window_.load(std::memory_order_relaxed);
  if (window != second && log_window_.compare_exchange_strong(window, second)) {
    const int dropped = log_count_.exchange(0) - kLogBurst;
    if (dropped > 0) spdlog::warn("auth: {} more denials not logged in the last second", dropped);
  }
  if (log_count_.fetch_add(1, std::memory_order_relaxed) < kLogBurst) {
    spdlog::warn("auth: {} {} principal={}: {}", method,
                 unauth ? "unauthenticated" : "permission denied", who, why);
  }
  return grpc::Status(code, why);
}

grpc::Status Authorizer::Check(const grpc::ServerContextBase* ctx, Permission perm,
                               const char* method, Caller* caller, std::string_view queue) const {
  grpc::Status st = Authenticate(ctx, method, caller);
  if (!st.ok()) return st;
  return CheckQueue(*caller, perm, method, queue);
}

grpc::Status Authorizer::Authenticate(const grpc::ServerContextBase* ctx, const char* method,
                                      Caller* caller) const {
  if (!enabled()) {
    caller->name = "anonymous";
    caller->role = Role::kAdmin;
    caller->principal = nullptr;
    caller->table = nullptr;
    return grpc::Status::OK;
  }
  auto table = this->table();
  const Principal* p = nullptr;
  const auto& md = ctx->client_metadata();
  if (auto it = md.find("authorization"); it != md.end()) {
    const std::string_view value(it->second.data(), it->second.size());
    const std::string_view token = BearerToken(value);
    if (token.empty()) {
      return Deny(grpc::StatusCode::UNAUTHENTICATED, method, "-",
                  "authorization: expected \"Bearer <token>\"");
    }
    p = table->ByToken(token);
    if (p == nullptr) {
      return Deny(grpc::StatusCode::UNAUTHENTICATED, method, "-",
                  "authorization: the token is not known (revoked or mistyped?)");
    }
  } else if (auto auth = ctx->auth_context(); auth && auth->IsPeerAuthenticated()) {
    auto first = [&](const char* prop) -> std::string {
      auto vals = auth->FindPropertyValues(prop);
      return vals.empty() ? std::string() : std::string(vals[0].data(), vals[0].size());
    };
    const std::string cn = first("x509_common_name"), subject = first("x509_subject");
    p = table->ByName(cn, subject);
    if (p == nullptr) {
      return Deny(grpc::StatusCode::UNAUTHENTICATED, method, cn.empty() ? subject : cn,
                  "client certificate \"" + (subject.empty() ? cn : subject) +
                      "\" names no principal of the auth file");
    }
  } else {
    return Deny(grpc::StatusCode::UNAUTHENTICATED, method, "-",
                "no credentials: send \"authorization: Bearer <token>\" metadata or a client "
                "certificate");
  }
  caller->name = p->name;
  caller->role = p->role;
  caller->principal = p;
  caller->table = std::move(table);
  return grpc::Status::OK;
}

grpc::Status Authorizer::CheckQueue(const Caller& caller, Permission perm, const char* method,
                                    std::string_view queue) const {
  const bool role_ok = caller.Allows(perm);
  if (role_ok && (queue.empty() || caller.AllowsQueue(queue))) return grpc::Status::OK;
  std::string why = "principal \"" + caller.name + "\" (role " + RoleName(caller.role) +
                    ") lacks permission \"" + PermissionName(perm) + "\"";
  if (!queue.empty()) why += " on queue \"" + std::string(queue) + "\"";
  if (role_ok)
    why += " (its queues: " + [&] {
      std::string list;
      for (const auto& q : caller.principal->queues) list += (list.empty() ? "" : ", ") + q;
      return list;
    }() + ")";
  return Deny(grpc::StatusCode::PERMISSION_DENIED, method, caller.name, why);
}

grpc::Status Authorizer::CheckJobRead(const Caller& caller, const char* method,
                                      std::string_view queue, std::string_view submitted_by) const {
  if (caller.Allows(Permission::kReadJobs) || !caller.Allows(Permission::kReadOwnJobs)) {
    return CheckQueue(caller, Permission::kReadJobs, method, queue);
  }
  if (submitted_by != caller.name) {
    return Deny(grpc::StatusCode::PERMISSION_DENIED, method, caller.name,
                "principal \"" + caller.name + "\" (role " + RoleName(caller.role) +
                    ") lacks permission \"read-jobs\" on queue \"" + std::string(queue) +
                    "\": it may read only the jobs it submitted");
  }
  return CheckQueue(caller, Permission::kReadOwnJobs, method, queue);
}

grpc::Status Authorizer::CheckAllQueues(const Caller& caller, const char* method) const {
  if (caller.AllQueues()) return grpc::Status::OK;
  return Deny(grpc::StatusCode::PERMISSION_DENIED, method, caller.name,
              "principal \"" + caller.name + "\" is limited to some queues; " + method +
                  " covers the whole log and needs queues \"*\"");
}

grpc::Status Authorizer::HideJob(const grpc::Status& st, const std::string& not_found) {
  if (st.error_code() != grpc::StatusCode::PERMISSION_DENIED) return st;
  return grpc::Status(grpc::StatusCode::NOT_FOUND, not_found);
}

std::string Authorizer::JobNotFound(uint64_t id) {
  return "job " + std::to_string(id) + " not found";  // as storage says it
}

bool Authorizer::AuthenticateHttp(std::string_view authorization, std::string_view cert_cn,
                                  std::string_view cert_subject) const {
  if (!enabled()) return true;
  auto table = this->table();
  const Principal* p = nullptr;
  if (!authorization.empty()) {
    p = table->ByToken(BearerToken(authorization));
  } else {
    p = table->ByName(cert_cn, cert_subject);
  }
  if (p == nullptr) Count("unauthenticated", "http:/metrics");
  return p != nullptr;
}

Authorizer::Access Authorizer::AuthorizeMetrics(std::string_view authorization,
                                                std::string_view cert_cn,
                                                std::string_view cert_subject) const {
  if (!enabled()) return Access::kAllowed;
  auto table = this->table();
  const Principal* p = !authorization.empty() ? table->ByToken(BearerToken(authorization))
                                              : table->ByName(cert_cn, cert_subject);
  if (p == nullptr) {
    Count("unauthenticated", "http:/metrics");
    return Access::kUnauthenticated;
  }
  if (!RoleAllows(p->role, Permission::kMetrics)) {
    Count("permission_denied", "http:/metrics");
    return Access::kForbidden;
  }
  return Access::kAllowed;
}

// ---------------------------------------------------------------------------------------------

Status CheckTransport(const Config& c, bool* remote_unauthenticated, bool* remote_plaintext) {
  *remote_unauthenticated = false;
  if (remote_plaintext) *remote_plaintext = false;
  if (c.tls_cert.empty() != c.tls_key.empty()) {
    return Status::InvalidArgument(c.tls_cert.empty() ? "--tls-cert: required with --tls-key"
                                                      : "--tls-key: required with --tls-cert");
  }
  if (!c.tls_client_ca.empty() && c.tls_cert.empty()) {
    return Status::InvalidArgument("--tls-client-ca: needs --tls-cert and --tls-key");
  }
  if (!c.tls_client_ca.empty() && c.auth_file.empty()) {
    return Status::InvalidArgument(
        "--tls-client-ca: needs --auth-file, which gives certificate subjects their roles");
  }
  const std::pair<const std::string*, const char*> listens[] = {{&c.grpc_listen, "--grpc-listen"},
                                                                {&c.http_listen, "--http-listen"}};
  for (const auto& [listen, flag] : listens) {
    auto ep = ParseEndpoint(*listen, flag);
    if (!ep.ok()) return ep.status();
    if (ep->address().is_loopback()) continue;
    if (!c.auth_file.empty()) {
      // Authenticated, but bearer tokens must not cross the network in clear.
      if (!c.tls_cert.empty()) continue;
      if (!c.insecure_allow_plaintext) {
        return Status::InvalidArgument(
            std::string(flag) + ": " + *listen +
            " is not a loopback address and there is no --tls-cert, so bearer tokens would cross "
            "the network in clear; give --tls-cert and --tls-key, or --insecure-allow-plaintext "
            "to accept that (for example behind a TLS-terminating proxy on the same host)");
      }
      if (remote_plaintext) *remote_plaintext = true;
      continue;
    }
    if (!c.insecure_allow_remote) {
      return Status::InvalidArgument(
          std::string(flag) + ": " + *listen +
          " is not a loopback address and there is no --auth-file, so anyone who can reach it "
          "could act as admin; give --auth-file, or --insecure-allow-remote to accept that");
    }
    *remote_unauthenticated = true;
  }
  return Status::Ok();
}

namespace {

Result<std::string> ReadPem(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::InvalidArgument(std::string(flag) + ": cannot read " + path);
  std::stringstream buf;
  buf << in.rdbuf();
  std::string text = buf.str();
  if (text.find("-----BEGIN ") == std::string::npos) {
    return Status::InvalidArgument(std::string(flag) + ": " + path + " holds no PEM block");
  }
  return text;
}

}  // namespace

Result<std::shared_ptr<grpc::ServerCredentials>> GrpcServerCredentials(const Config& c) {
  if (c.tls_cert.empty()) return grpc::InsecureServerCredentials();
  auto cert = ReadPem(c.tls_cert, "--tls-cert");
  if (!cert.ok()) return cert.status();
  auto key = ReadPem(c.tls_key, "--tls-key");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions opts(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (!c.tls_client_ca.empty()) {
    auto ca = ReadPem(c.tls_client_ca, "--tls-client-ca");
    if (!ca.ok()) return ca.status();
    opts = grpc::SslServerCredentialsOptions(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    opts.pem_root_certs = *ca;
  }
  opts.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(opts);
}

}  // namespace ledgerq::server
