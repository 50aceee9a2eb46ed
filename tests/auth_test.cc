// The auth file parser (each error), token and certificate lookup, queue globs, the role ->
// permission table, reload, the transport rules and payload omission. No sockets.
#include "server/auth.h"

#include <catch2/catch.hpp>
#include <fstream>

#include "common/sha256.h"
#include "server/audit_service.h"
#include "server/http_server.h"
#include "tests/support/temp_dir.h"

using namespace ledgerq;
using namespace ledgerq::server;

namespace {

std::string DigestHex(const std::string& token) { return ToHex(Sha256(token)); }

std::string Entry(const std::string& name, const std::string& role, const std::string& extra) {
  return "[[principal]]\nname = \"" + name + "\"\nrole = \"" + role + "\"\n" + extra + "\n";
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

}  // namespace

TEST_CASE("an auth file with every role parses, with queues defaulting to every queue", "[auth]") {
  const std::string text =
      "# comment\n" +
      Entry("billing-api", "producer",
            "queues = [\"billing.*\"]\ntoken-sha256 = [\"" + DigestHex("tok-producer-0001") +
                "\", \"" + DigestHex("tok-producer-0002") + "\"]") +
      Entry("workers", "worker", "token-sha256 = [\"" + DigestHex("tok-worker-000001") + "\"]") +
      Entry("ops", "operator", "") + Entry("audit", "auditor", "") +
      Entry("CN=root,O=ledgerq", "admin", "");
  auto t = AuthTable::Parse(text, "auth.toml");
  REQUIRE(t.ok());
  const auto& ps = (*t)->principals();
  REQUIRE(ps.size() == 5);
  CHECK(ps[0].role == Role::kProducer);
  CHECK(ps[0].queues == std::vector<std::string>{"billing.*"});
  CHECK(ps[0].token_sha256.size() == 2);
  CHECK(ps[1].queues == std::vector<std::string>{"*"});
  CHECK(ps[2].token_sha256.empty());  // certificate only

  // Both digests of a rotation work; anything else does not.
  CHECK((*t)->ByToken("tok-producer-0001") == &ps[0]);
  CHECK((*t)->ByToken("tok-producer-0002") == &ps[0]);
  CHECK((*t)->ByToken("tok-worker-000001") == &ps[1]);
  CHECK((*t)->ByToken("tok-producer-0003") == nullptr);
  CHECK((*t)->ByToken("") == nullptr);
  // Certificates: by CN, else by the whole subject.
  CHECK((*t)->ByName("ops", "CN=ops,O=x") == &ps[2]);
  CHECK((*t)->ByName("root", "CN=root,O=ledgerq") == &ps[4]);
  CHECK((*t)->ByName("nobody", "CN=nobody") == nullptr);
}

TEST_CASE("an empty auth file is valid and lets nobody in", "[auth]") {
  auto t = AuthTable::Parse("", "auth.toml");
  REQUIRE(t.ok());
  CHECK((*t)->principals().empty());
  CHECK((*t)->ByToken("anything-at-all") == nullptr);
}

TEST_CASE("every auth file error names the entry and the key", "[auth]") {
  const std::string d1 = DigestHex("one-token-123456");
  struct Case {
    const char* name;
    std::string text;
    std::vector<std::string> expect;  // substrings of the message
  };
  const std::vector<Case> cases = {
      {"not TOML", "[[principal]\nname=", {"auth.toml: line 1"}},
      {"unknown top-level key", "users = 1\n", {"unknown key \"users\""}},
      {"principal not tables", "principal = 3\n", {"principal: must be [[principal]] tables"}},
      {"missing name", "[[principal]]\nrole = \"admin\"\n", {"principal[0]", "name: missing"}},
      {"empty name", "[[principal]]\nname = \"\"\nrole = \"admin\"\n", {"principal[0]", "name:"}},
      {"name not a string", "[[principal]]\nname = 5\nrole = \"admin\"\n", {"name:"}},
      {"missing role", "[[principal]]\nname = \"a\"\n", {"principal[0] \"a\"", "role: missing"}},
      {"bad role", Entry("a", "root", ""), {"principal[0] \"a\"", "role: must be one of", "root"}},
      {"role not a string", "[[principal]]\nname = \"a\"\nrole = 1\n", {"role: must be a string"}},
      {"queues not an array", Entry("a", "worker", "queues = \"x\""), {"\"a\"", "queues:"}},
      {"queues empty", Entry("a", "worker", "queues = []"), {"queues: must not be empty"}},
      {"queue pattern with a space",
       Entry("a", "worker", "queues = [\"bad queue\"]"),
       {"queues: \"bad queue\" is not a queue name or glob"}},
      {"digest not hex",
       Entry("a", "worker", "token-sha256 = [\"xyz\"]"),
       {"principal[0] \"a\"", "token-sha256[0]", "64 hex digits"}},
      {"digest not an array", Entry("a", "worker", "token-sha256 = 1"), {"token-sha256:"}},
      {"same digest twice",
       Entry("a", "worker", "token-sha256 = [\"" + d1 + "\"]") +
           Entry("b", "producer", "token-sha256 = [\"" + d1 + "\"]"),
       {"principal[1] \"b\"", "token-sha256[0]", "already given to \"a\""}},
      {"same name twice",
       Entry("a", "worker", "") + Entry("a", "admin", ""),
       {"principal[1] \"a\"", "given twice"}},
      {"unknown key", Entry("a", "worker", "password = \"x\""), {"unknown key \"password\""}},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    auto t = AuthTable::Parse(c.text, "auth.toml");
    REQUIRE_FALSE(t.ok());
    CHECK(t.status().code() == Code::kInvalidArgument);
    for (const auto& e : c.expect) CHECK_THAT(t.status().message(), Catch::Contains(e));
  }
}

TEST_CASE("queue patterns are globs", "[auth]") {
  CHECK(QueueMatches("*", "anything.at:all"));
  CHECK(QueueMatches("billing.*", "billing.invoices"));
  CHECK_FALSE(QueueMatches("billing.*", "billing"));
  CHECK_FALSE(QueueMatches("billing.*", "xbilling.a"));
  CHECK(QueueMatches("jobs-?", "jobs-1"));
  CHECK_FALSE(QueueMatches("jobs-?", "jobs-12"));
  CHECK(QueueMatches("[ab]-q", "b-q"));
  CHECK(QueueMatches("emails", "emails"));
  CHECK_FALSE(QueueMatches("emails", "emails2"));
}

TEST_CASE("the role table grants each role exactly its permissions", "[auth]") {
  using P = Permission;
  const std::map<Role, std::set<P>> expected = {
      {Role::kProducer, {P::kEnqueue, P::kReadOwnJobs, P::kReadPayloads}},
      {Role::kWorker, {P::kWork, P::kReadPayloads}},
      {Role::kOperator,
       {P::kReadJobs, P::kList, P::kPause, P::kCancel, P::kRedrive, P::kLimits, P::kMetrics}},
      {Role::kAuditor, {P::kReadJobs, P::kList, P::kAuditRead, P::kMetrics}},
      {Role::kMetrics, {P::kMetrics}},
  };
  for (const auto& [role, allowed] : expected) {
    for (size_t i = 0; i < kPermissionCount; ++i) {
      const auto p = static_cast<P>(i);
      INFO(RoleName(role) << " " << PermissionName(p));
      CHECK(RoleAllows(role, p) == (allowed.count(p) == 1));
    }
  }
  for (size_t i = 0; i < kPermissionCount; ++i) {
    CHECK(RoleAllows(Role::kAdmin, static_cast<P>(i)));
  }
  CHECK(ParseRole("auditor").ok());
  CHECK_FALSE(ParseRole("Admin").ok());
}

TEST_CASE("bearer tokens are taken from the authorization value", "[auth]") {
  CHECK(BearerToken("Bearer abc") == "abc");
  CHECK(BearerToken("bearer  abc ") == "abc");
  CHECK(BearerToken("Basic abc").empty());
  CHECK(BearerToken("Bearer ").empty());
  CHECK(BearerToken("").empty());
}

TEST_CASE("generated tokens are lq_ and 64 hex digits, never the same", "[auth]") {
  auto a = NewToken(), b = NewToken();
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->size() == 67);
  CHECK(a->rfind("lq_", 0) == 0);
  CHECK(a->find_first_not_of("0123456789abcdef", 3) == std::string::npos);
  CHECK(*a != *b);
}

TEST_CASE("reload swaps in a valid file and keeps the old table on an invalid one", "[auth]") {
  testing::TempDir dir;
  const std::string path = dir.Sub("auth.toml");
  WriteFile(path,
            Entry("a", "admin", "token-sha256 = [\"" + DigestHex("token-a-12345678") + "\"]"));
  Authorizer auth(path);
  REQUIRE(auth.Load().ok());
  CHECK(auth.table()->ByToken("token-a-12345678") != nullptr);

  WriteFile(path,
            Entry("b", "admin", "token-sha256 = [\"" + DigestHex("token-b-12345678") + "\"]"));
  REQUIRE(auth.Reload().ok());
  CHECK(auth.table()->ByToken("token-a-12345678") == nullptr);
  CHECK(auth.table()->ByToken("token-b-12345678") != nullptr);

  auto before = auth.table();
  WriteFile(path, Entry("c", "superuser", ""));
  Status st = auth.Reload();
  CHECK_THAT(st.message(), Catch::Contains("role: must be one of"));
  CHECK(auth.table() == before);
  CHECK(auth.table()->ByToken("token-b-12345678") != nullptr);

  std::filesystem::remove(path);
  CHECK_FALSE(auth.Reload().ok());
  CHECK(auth.table() == before);

  Authorizer missing(dir.Sub("nope.toml"));
  CHECK_THAT(missing.Load().message(), Catch::Contains("--auth-file: cannot read"));
}

TEST_CASE("HTTP authentication takes a bearer token or a certificate identity", "[auth]") {
  testing::TempDir dir;
  const std::string path = dir.Sub("auth.toml");
  WriteFile(path, Entry("scraper", "auditor",
                        "token-sha256 = [\"" + DigestHex("token-scrape-123") + "\"]") +
                      Entry("prom", "operator", ""));
  Authorizer auth(path);
  REQUIRE(auth.Load().ok());
  CHECK(auth.AuthenticateHttp("Bearer token-scrape-123", "", ""));
  CHECK_FALSE(auth.AuthenticateHttp("Bearer token-scrape-124", "", ""));
  CHECK_FALSE(auth.AuthenticateHttp("", "", ""));
  CHECK(auth.AuthenticateHttp("", "prom", "CN=prom"));
  CHECK_FALSE(auth.AuthenticateHttp("", "mallory", "CN=mallory"));
  CHECK(Authorizer().AuthenticateHttp("", "", ""));  // auth off
}

TEST_CASE("/metrics answers 401 without credentials when authorization is configured", "[auth]") {
  HttpRoutes routes;
  routes.metrics = [] { return std::string("ledgerq_up 1\n"); };
  routes.authorize_metrics = [](std::string_view a, std::string_view cn, std::string_view) {
    return a == "Bearer good" || cn == "prom" ? HttpAccess::kAllowed : HttpAccess::kUnauthenticated;
  };
  HttpRequest req{http::verb::get, "/metrics", 11};
  auto res = Route(req, routes);
  CHECK(res.result() == http::status::unauthorized);
  CHECK(res[http::field::www_authenticate] == "Bearer realm=\"ledgerq\"");
  CHECK(res.body().find("ledgerq_up") == std::string::npos);
  req.set(http::field::authorization, "Bearer good");
  CHECK(Route(req, routes).result() == http::status::ok);
  req.set(http::field::authorization, "Bearer bad");
  CHECK(Route(req, routes).result() == http::status::unauthorized);
  HttpRequest plain{http::verb::get, "/metrics", 11};
  CHECK(Route(plain, routes, HttpPeer{"prom", "CN=prom"}).result() == http::status::ok);
  // Probes stay open.
  HttpRequest health{http::verb::get, "/healthz", 11};
  CHECK(Route(health, routes).result() == http::status::ok);
}

TEST_CASE("transport rules: loopback without auth, TLS pairs, mTLS needs an auth file", "[auth]") {
  bool remote = false;
  Config c;
  CHECK(CheckTransport(c, &remote).ok());
  CHECK_FALSE(remote);

  c.grpc_listen = "0.0.0.0:7400";
  Status st = CheckTransport(c, &remote);
  CHECK_THAT(st.message(), Catch::StartsWith("--grpc-listen: 0.0.0.0:7400 is not a loopback"));
  c.grpc_listen = "127.0.0.1:7400";
  c.http_listen = "[::]:7401";
  CHECK_THAT(CheckTransport(c, &remote).message(), Catch::StartsWith("--http-listen:"));
  c.http_listen = "[::1]:7401";
  CHECK(CheckTransport(c, &remote).ok());

  c.grpc_listen = "10.1.2.3:7400";
  c.insecure_allow_remote = true;
  CHECK(CheckTransport(c, &remote).ok());
  CHECK(remote);
  c.insecure_allow_remote = false;
  c.auth_file = "/etc/ledgerq/auth.toml";
  // Authenticated but in clear: refused (issue 14, finding 4), unless said so.
  bool plaintext = false;
  CHECK_THAT(CheckTransport(c, &remote, &plaintext).message(),
             Catch::StartsWith("--grpc-listen: 10.1.2.3:7400 is not a loopback address and there "
                               "is no --tls-cert") &&
                 Catch::Contains("--insecure-allow-plaintext"));
  c.insecure_allow_plaintext = true;
  CHECK(CheckTransport(c, &remote, &plaintext).ok());
  CHECK(plaintext);
  CHECK_FALSE(remote);
  c.insecure_allow_plaintext = false;

  c.tls_cert = "cert.pem";
  CHECK_THAT(CheckTransport(c, &remote).message(), Catch::StartsWith("--tls-key:"));
  c.tls_key = "key.pem";
  CHECK(CheckTransport(c, &remote, &plaintext).ok());
  CHECK_FALSE(plaintext);
  c.tls_client_ca = "ca.pem";
  CHECK(CheckTransport(c, &remote).ok());
  c.auth_file.clear();
  c.grpc_listen = "127.0.0.1:7400";
  CHECK_THAT(CheckTransport(c, &remote).message(),
             Catch::StartsWith("--tls-client-ca: needs --auth-file"));
}

TEST_CASE("payload omission clears payload, result, failure snapshots and their digests",
          "[auth]") {
  v1::Job job;
  job.set_id(7);
  job.set_payload("{\"card\":\"4111\"}");
  job.set_result("{\"ok\":true}");
  job.set_payload_sha256("digest");
  auto* error = job.add_errors();
  error->set_code("DB_TIMEOUT");
  error->set_payload_snapshot("{\"card\":\"***\"}");
  error->set_payload_snapshot_sha256("snapshot digest");
  OmitPayload(&job);
  CHECK(job.payload().empty());
  CHECK(job.result().empty());
  CHECK(job.errors(0).payload_snapshot().empty());
  CHECK(job.payload_omitted());
  // The digests go too: unsalted, they would confirm a guessed payload (issue 14, finding 7).
  CHECK(job.payload_sha256().empty());
  CHECK(job.errors(0).payload_snapshot_sha256().empty());
  CHECK(job.id() == 7);  // the rest stays
  CHECK(job.errors(0).code() == "DB_TIMEOUT");

  v1::JobEvent ev;
  ev.set_type("COMPLETED");
  ev.set_payload_sha256("payload digest");
  ev.set_result_sha256("result digest");
  ev.mutable_error()->set_payload_snapshot("x");
  ev.mutable_error()->set_payload_snapshot_sha256("snapshot digest");
  OmitPayload(&ev);
  CHECK(ev.error().payload_snapshot().empty());
  CHECK(ev.payload_sha256().empty());
  CHECK(ev.result_sha256().empty());
  CHECK(ev.error().payload_snapshot_sha256().empty());
  CHECK(ev.type() == "COMPLETED");
}

TEST_CASE(
    "security: finding 1: events written before 2026-12 with a snapshot in their body are "
    "withheld from roles without payload access",
    "[auth][security]") {
  // Such an event's hashed body holds a failed attempt's masked payload snapshot: its bytes
  // cannot change (the chain covers them), so an export gives those roles its hashes only.
  storage::EventBody legacy;
  legacy.set_type(storage::v1::EVENT_FAILED);
  legacy.set_queue("a1");
  legacy.mutable_error()->set_code("X");
  legacy.mutable_error()->set_payload_snapshot(R"({"password":"***","ssn":"987-65-4321"})");
  storage::EventBody current = legacy;  // what transitions write now: the digest only
  current.mutable_error()->clear_payload_snapshot();
  current.mutable_error()->set_payload_snapshot_sha256(std::string(32, 'd'));

  Principal auditor{"aud", Role::kAuditor, {"*"}, {}};
  Caller aud{"aud", Role::kAuditor, nullptr, &auditor};
  Principal admin{"root", Role::kAdmin, {"*"}, {}};
  Caller root{"root", Role::kAdmin, nullptr, &admin};
  CHECK(AuditWithheld(legacy, aud) == "payload");
  CHECK(AuditWithheld(current, aud).empty());
  CHECK(AuditWithheld(legacy, root).empty());

  // Finding 2: a queue-scoped caller gets its queues' events, not another's or the daemon's.
  Principal scoped{"aud-a", Role::kAuditor, {"a*"}, {}};
  Caller aud_a{"aud-a", Role::kAuditor, nullptr, &scoped};
  CHECK(AuditWithheld(current, aud_a).empty());
  storage::EventBody other = current;
  other.set_queue("b1");
  CHECK(AuditWithheld(other, aud_a) == "scope");
  storage::EventBody daemon_wide;
  daemon_wide.set_type(storage::v1::EVENT_POLICY_CHANGED);
  CHECK(AuditWithheld(daemon_wide, aud_a) == "scope");
  CHECK(AuditWithheld(daemon_wide, aud).empty());
}
