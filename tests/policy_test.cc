// Queue and job-type policies: config parsing, resolution, admission checks, versioning.
#include "server/policy.h"

#include <catch2/catch.hpp>
#include <future>

#include "common/sha256.h"
#include "server/config.h"
#include "server/job_mapping.h"
#include "server/payload_snapshot.h"
#include "storage/job_store.h"
#include "support/temp_dir.h"

using namespace ledgerq;
using namespace ledgerq::server;
using namespace std::chrono_literals;

namespace {

constexpr char kPolicies[] = R"(
default-max-attempts = 4
strict-types = true

[queues.billing]
max-attempts = 7
backoff-base = "2s"
max-payload-bytes = 4096
mask-fields = ["iban"]
submitters = ["billing-api", "ops"]
purge-payloads-after = "7d"
remove-after = "30d"
dead-letters-keep = "90d"

[types."charge.v1"]
queues = ["billing", "billing-*"]
max-attempts = 3
min-lease = "5s"
max-lease = "2m"
required = { customer = "string", amount = "integer", "card.last4" = "string" }
remove-after = "60d"

[types."mail.v1"]
max-payload-bytes = 100
mask-fields = ["to"]
)";

Policies Load() {
  auto c = ParseConfigToml(kPolicies, Config{});
  REQUIRE(c.ok());
  return c->MakePolicies();
}

storage::NewJob Job(std::string queue, std::string type, std::string payload) {
  storage::NewJob j;
  j.queue = std::move(queue);
  j.type = std::move(type);
  j.payload = std::move(payload);
  return j;
}

constexpr char kCharge[] = R"({"customer":"c-1","amount":1250,"card":{"last4":"4242"}})";

}  // namespace

TEST_CASE("policies resolve defaults, then the queue, then the type", "[policy]") {
  const Policies p = Load();
  const ResolvedPolicy charge = p.Resolve("billing", "charge.v1");
  CHECK(charge.type_declared);
  CHECK(charge.retry.max_attempts == 3);    // the type's
  CHECK(charge.retry.backoff_base == 2s);   // the queue's
  CHECK(charge.retry.backoff_cap == 1h);    // the default
  CHECK(charge.max_payload_bytes == 4096);  // the queue's
  CHECK(charge.min_lease == 5s);
  CHECK(charge.max_lease == 2min);
  CHECK(charge.mask_fields == std::vector<std::string>{"iban"});
  REQUIRE(charge.submitters);
  CHECK(*charge.submitters == std::vector<std::string>{"billing-api", "ops"});
  CHECK(charge.required.size() == 3);
  CHECK(charge.retention.payloads == std::chrono::hours(24 * 7));
  CHECK(charge.retention.records == std::chrono::hours(24 * 60));  // the type overrides
  CHECK(charge.retention.dead == std::chrono::hours(24 * 90));

  const ResolvedPolicy other = p.Resolve("elsewhere", "unknown");
  CHECK_FALSE(other.type_declared);
  CHECK(other.retry.max_attempts == 4);
  CHECK(other.max_payload_bytes == Config{}.max_payload_bytes);
  CHECK(other.mask_fields == DefaultMaskFields());
  CHECK_FALSE(other.submitters);
  CHECK(other.retention == storage::RetentionPolicy{});
}

TEST_CASE("admission checks name the field and the rule", "[policy]") {
  const Policies p = Load();
  CHECK(p.Admit(Job("billing", "charge.v1", kCharge), "billing-api").ok());
  CHECK(p.Admit(Job("billing-eu", "charge.v1", kCharge), "anyone").ok());  // no submitters there

  struct Bad {
    storage::NewJob job;
    std::string principal;
    Code code;
    std::string mention;
  };
  const std::vector<Bad> bad = {
      {Job("billing", "refund.v1", "{}"), "ops", Code::kFailedPrecondition, "type: \"refund.v1\""},
      {Job("mail", "charge.v1", kCharge), "ops", Code::kFailedPrecondition, "queue: type"},
      {Job("billing", "charge.v1", kCharge), "intruder", Code::kPermissionDenied,
       "principal \"intruder\""},
      {Job("billing", "charge.v1", R"({"amount":1,"card":{"last4":"1"}})"), "ops",
       Code::kInvalidArgument, "payload.customer: required"},
      {Job("billing", "charge.v1", R"({"customer":"c","amount":"12","card":{"last4":"1"}})"), "ops",
       Code::kInvalidArgument, "payload.amount: must be integer, got string"},
      {Job("billing", "charge.v1", R"({"customer":"c","amount":1.5,"card":{"last4":"1"}})"), "ops",
       Code::kInvalidArgument, "payload.amount: must be integer, got number"},
      {Job("billing", "charge.v1", R"({"customer":"c","amount":1,"card":"4242"})"), "ops",
       Code::kInvalidArgument, "payload.card.last4: required"},
      {Job("billing", "charge.v1", "not json"), "ops", Code::kInvalidArgument,
       "payload: must be a JSON object"},
      {Job("billing", "charge.v1", "[1,2]"), "ops", Code::kInvalidArgument,
       "payload: must be a JSON object"},
      {Job("billing", "charge.v1", std::string(4000, '[')), "ops", Code::kInvalidArgument,
       "payload: must be a JSON object"},
      {Job("billing", "charge.v1", std::string(5000, ' ')), "ops", Code::kInvalidArgument,
       "payload: 5000 bytes exceeds the limit of 4096"},
      {Job("mail", "mail.v1", std::string(101, 'x')), "ops", Code::kInvalidArgument,
       "limit of 100 bytes for type \"mail.v1\""},
  };
  for (const Bad& b : bad) {
    INFO(b.mention);
    Status st = p.Admit(b.job, b.principal);
    CHECK(st.code() == b.code);
    CHECK_THAT(st.message(), Catch::Contains(b.mention));
  }

  Policies lax = p;
  lax.strict_types = false;
  CHECK(lax.Admit(Job("billing", "refund.v1", "{}"), "ops").ok());
}

TEST_CASE("ToNewJob applies the policy: defaults, checks and the version", "[policy]") {
  LivePolicies live(Load(), 3);
  EnqueueLimits limits{1 << 20, 4, &live};
  v1::EnqueueRequest r;
  r.set_queue("billing");
  r.set_type("charge.v1");
  r.set_payload(kCharge);
  storage::NewJob out;
  REQUIRE(ToNewJob(r, limits, 1, {}, &out, {}, "ops").ok());
  CHECK(out.max_attempts == 3);  // the type's default
  CHECK(out.policy_version == 3);
  r.set_max_attempts(9);
  REQUIRE(ToNewJob(r, limits, 1, {}, &out, {}, "ops").ok());
  CHECK(out.max_attempts == 9);  // the request's own

  storage::NewJob untouched;
  untouched.queue = "sentinel";
  r.set_payload("{}");
  Status st = ToNewJob(r, limits, 1, {}, &untouched, {}, "ops");
  CHECK(st.code() == Code::kInvalidArgument);
  CHECK(untouched.queue == "sentinel");  // nothing written on error

  live.Set(Policies{}, 4);  // a reload: everything goes, under the new version
  REQUIRE(ToNewJob(r, limits, 1, {}, &out, {}, "ops").ok());
  CHECK(out.policy_version == 4);
}

TEST_CASE("the canonical text ignores formatting and changes with any rule", "[policy]") {
  const std::string a = Load().Canonical();
  std::string reordered = kPolicies;
  reordered = "# comment\n" + reordered;
  auto c = ParseConfigToml(reordered, Config{});
  REQUIRE(c.ok());
  CHECK(c->MakePolicies().Canonical() == a);

  Policies changed = Load();
  changed.types["charge.v1"].required.pop_back();
  CHECK(changed.Canonical() != a);
  Policies looser = Load();
  looser.strict_types = false;
  CHECK(looser.Canonical() != a);
}

TEST_CASE("config errors are all listed, each naming its key", "[policy][config]") {
  auto r = ParseConfigToml(R"(
nope = 1
[queues.q]
max-attempts = 0
colour = "red"
min-lease = "10m"
max-lease = "1m"
[types.t]
required = { a = "str", "b..c" = "string", d = 5 }
queues = "q"
submitters = [""]
max-lease = "13h"
[types."bad name!"]
)",
                           Config{});
  REQUIRE_FALSE(r.ok());
  const std::string& m = r.status().message();
  for (const char* mention :
       {"unknown key \"nope\"", "queues.q.max-attempts", "unknown key \"queues.q.colour\"",
        "types.t.required.a: must be string, number", "types.t.required.b..c: not a field path",
        "types.t.required.d: must be a string", "types.t.queues: must be an array",
        "types.t.submitters: must be an array", "types.t.max-lease: must be between 1s and 12h",
        "config: types.bad name!"}) {
    INFO(mention);
    CHECK_THAT(m, Catch::Contains(mention));
  }
  // Errors of the resolved policy come once the keys themselves are sound.
  auto lease = ParseConfigToml("[queues.q]\nmin-lease = \"10m\"\nmax-lease = \"1m\"\n", Config{});
  REQUIRE_FALSE(lease.ok());
  CHECK_THAT(lease.status().message(),
             Catch::Contains("queues.q.min-lease: 10m is above max-lease"));
}

TEST_CASE("the store versions a policy by its digest", "[policy][storage]") {
  ledgerq::testing::TempDir dir;
  auto record = [](storage::JobStore& s, const std::string& text) {
    std::promise<Result<storage::PolicyVersion>> p;
    s.RecordPolicy(text, "test", "ledgerqd",
                   [&p](Result<storage::PolicyVersion> v) { p.set_value(std::move(v)); });
    auto v = p.get_future().get();
    REQUIRE(v.ok());
    return *v;
  };
  {
    storage::StoreOptions o;
    o.data_dir = dir.path();
    auto s = storage::JobStore::Open(o);
    REQUIRE(s.ok());
    auto v1 = record(**s, "a");
    CHECK(v1.version == 1);
    CHECK(v1.changed);
    auto again = record(**s, "a");
    CHECK(again.version == 1);
    CHECK_FALSE(again.changed);
    auto v2 = record(**s, "b");
    CHECK(v2.version == 2);
    CHECK(v2.changed);
    std::vector<storage::EventBody> changes;
    REQUIRE((*s)->ScanEvents(1,
                             [&](const storage::EventBody& ev) {
                               if (ev.type() == storage::v1::EVENT_POLICY_CHANGED)
                                 changes.push_back(ev);
                               return true;
                             })
                .ok());
    REQUIRE(changes.size() == 2);
    CHECK(changes[1].policy_version() == 2);
    CHECK(changes[1].policy_digest() == std::string(AsBytes(Sha256("b"))));
    CHECK(changes[1].policy_text() == "b");
    CHECK(changes[1].principal() == "ledgerqd");
    CHECK(changes[1].reason() == "test");
  }
  storage::StoreOptions o;
  o.data_dir = dir.path();
  auto s = storage::JobStore::Open(o);
  REQUIRE(s.ok());
  auto after = record(**s, "b");  // a restart with the same policy: same version
  CHECK(after.version == 2);
  CHECK_FALSE(after.changed);
}
