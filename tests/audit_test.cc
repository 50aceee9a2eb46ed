// The audit export format (storage/audit_export.h): round trips through a real store's log, and
// every form of tampering with a file. Reconciliation (storage/reconcile.h) on clean and
// disagreeing stores.
#include <catch2/catch.hpp>
#include <fstream>
#include <future>
#include <sstream>

#include "storage/audit_export.h"
#include "storage/job_store.h"
#include "storage/reconcile.h"
#include "storage/testing/log_tamper.h"
#include "tests/support/temp_dir.h"
#include "tests/support/text.h"

using namespace ledgerq;
using namespace ledgerq::storage;
using ledgerq::testing::TempDir;

namespace {

using ledgerq::testing::Join;
using ledgerq::testing::Lines;

std::unique_ptr<JobStore> OpenStore(const std::string& dir) {
  StoreOptions o;
  o.data_dir = dir;
  auto s = JobStore::Open(o);
  REQUIRE(s.ok());
  return std::move(s).value();
}

void Enqueue(JobStore& store, int n, const std::string& principal = "alice") {
  std::vector<NewJob> items;
  for (int i = 0; i < n; ++i) {
    NewJob j;
    j.queue = "q";
    j.type = "email";
    j.payload = "{\"n\":" + std::to_string(i) + "}";
    j.max_attempts = 3;
    items.push_back(std::move(j));
  }
  std::promise<void> p;
  store.Enqueue(std::move(items), principal, [&p](std::vector<EnqueueOutcome> o) {
    for (auto& x : o) REQUIRE(x.status.ok());
    p.set_value();
  });
  p.get_future().get();
}

std::vector<RawEvent> Raw(const JobStore& store, uint64_t from = 1, uint64_t to = UINT64_MAX) {
  std::vector<RawEvent> out;
  REQUIRE(store
              .ScanRawEvents(from,
                             [&](const RawEvent& e) {
                               if (e.seq > to) return false;
                               out.push_back(e);
                               return true;
                             })
              .ok());
  return out;
}

std::string Build(const std::vector<RawEvent>& events) {
  ExportBuilder b;
  std::string out;
  for (const auto& e : events) {
    auto line = b.Add(e);
    REQUIRE(line.ok());
    out += *line;
  }
  auto last = b.Finish();
  REQUIRE(last.ok());
  return out + *last;
}

ExportCheck Check(const std::string& text) {
  std::istringstream in(text);
  return VerifyExport(in);
}

}  // namespace

TEST_CASE("raw events are the exact hashed bytes of the log", "[audit]") {
  TempDir dir;
  auto store = OpenStore(dir.path());
  Enqueue(*store, 5);
  auto raw = Raw(*store);
  REQUIRE(raw.size() == 5);
  Digest prev{};
  for (size_t i = 0; i < raw.size(); ++i) {
    CHECK(raw[i].seq == i + 1);
    CHECK(raw[i].event.seq() == raw[i].seq);
    CHECK(raw[i].prev_hash == prev);
    CHECK(Sha256Pair(AsBytes(raw[i].prev_hash), raw[i].body) == raw[i].hash);
    prev = raw[i].hash;
  }
  CHECK(prev == store->Head().hash);
}

TEST_CASE("a read view keeps its snapshot while the store moves on", "[audit]") {
  TempDir dir;
  auto store = OpenStore(dir.path());
  Enqueue(*store, 3);
  auto view = store->View();
  Enqueue(*store, 4);
  CHECK(view->head_seq() == 3);
  size_t jobs = 0, events = 0;
  REQUIRE(view->ScanJobs([&](const JobRecord&) { return ++jobs, true; }).ok());
  REQUIRE(view->ScanRawEvents(0, [&](const RawEvent&) { return ++events, true; }).ok());
  CHECK(jobs == 3);
  CHECK(events == 3);
  CHECK(store->View()->head_seq() == 7);
}

TEST_CASE("an export verifies, and its lines carry the readable fields", "[audit]") {
  TempDir dir;
  auto store = OpenStore(dir.path());
  Enqueue(*store, 6, "billing-api");
  auto raw = Raw(*store);
  std::string text = Build(raw);
  auto lines = Lines(text);
  REQUIRE(lines.size() == 7);

  auto check = Check(text);
  INFO(check.problem);
  REQUIRE(check.ok);
  CHECK(check.events == 6);
  CHECK(check.manifest.from == 1);
  CHECK(check.manifest.to == 6);
  CHECK(check.manifest.count == 6);
  CHECK(check.manifest.prev_hash == Digest{});
  CHECK(check.manifest.head_hash == store->Head().hash);

  CHECK(lines[0].find("\"event\":\"SUBMITTED\"") != std::string::npos);
  CHECK(lines[0].find("\"principal\":\"billing-api\"") != std::string::npos);
  CHECK(lines[0].find("\"queue\":\"q\"") != std::string::npos);
  CHECK(lines[0].find("\"type\":\"email\"") != std::string::npos);
  CHECK(lines[0].find("\"job_id\":1") != std::string::npos);
  CHECK(lines[6].rfind("{\"manifest\":", 0) == 0);

  // Parsing a line gives back the very event it was made from.
  auto back = ParseExportEventLine(lines[2]);
  REQUIRE(back.ok());
  CHECK(back->seq == raw[2].seq);
  CHECK(back->body == raw[2].body);
  CHECK(back->hash == raw[2].hash);
  // Exporting the same range twice gives the same bytes.
  CHECK(Build(Raw(*store)) == text);
}

TEST_CASE("a tampered export is caught, naming the first bad line and sequence", "[audit]") {
  TempDir dir;
  auto store = OpenStore(dir.path());
  Enqueue(*store, 8);
  auto lines = Lines(Build(Raw(*store)));
  REQUIRE(lines.size() == 9);
  uint64_t bad_line = 0, bad_seq = 0;

  SECTION("a readable field edited") {
    auto pos = lines[3].find("\"principal\":\"alice\"");
    REQUIRE(pos != std::string::npos);
    lines[3].replace(pos, 19, "\"principal\":\"mallo\"");
    bad_line = 4;
    bad_seq = 4;
  }
  SECTION("the body replaced by another event's body") {
    auto body_of = [](const std::string& l) {
      auto a = l.find("\"body\":\"") + 8;
      return std::pair{a, l.find('"', a) - a};
    };
    auto [a5, n5] = body_of(lines[4]);
    auto [a3, n3] = body_of(lines[2]);
    lines[4].replace(a5, n5, lines[2].substr(a3, n3));
    bad_line = 5;
    bad_seq = 5;
  }
  SECTION("a line dropped") {
    lines.erase(lines.begin() + 5);
    bad_line = 6;  // event 7 now stands where 6 should
    bad_seq = 6;
  }
  SECTION("two lines swapped") {
    std::swap(lines[1], lines[6]);
    bad_line = 2;
    bad_seq = 2;
  }
  SECTION("the manifest's count changed") {
    auto pos = lines[8].find("\"count\":8");
    REQUIRE(pos != std::string::npos);
    lines[8].replace(pos, 9, "\"count\":9");
    bad_line = 9;
    bad_seq = 0;
  }
  SECTION("the manifest's head hash changed") {
    auto pos = lines[8].find("\"head_hash\":\"") + 13;
    lines[8][pos] = lines[8][pos] == '0' ? '1' : '0';
    bad_line = 9;
    bad_seq = 8;
  }
  SECTION("the manifest missing") {
    lines.pop_back();
    bad_line = 9;
    bad_seq = 9;
  }
  SECTION("the last event and the manifest dropped, a manifest rewritten to match") {
    // Without the earlier export's head, a cut-short file that is consistent in itself still
    // verifies; CheckChainsOnto and `--after` are what catch a missing tail between files.
    lines.pop_back();
    lines.pop_back();
    auto raw = Raw(*store, 1, 7);
    lines.push_back(Lines(Build(raw)).back());
    auto check = Check(Join(lines));
    CHECK(check.ok);
    return;
  }
  SECTION("a line appended after the manifest") {
    lines.push_back(lines[0]);
    bad_line = 10;
    bad_seq = 0;
  }
  auto check = Check(Join(lines));
  INFO(check.problem);
  CHECK_FALSE(check.ok);
  CHECK(check.line == bad_line);
  CHECK(check.first_bad_seq == bad_seq);
  CHECK_FALSE(check.problem.empty());
}

TEST_CASE("exports chain onto each other", "[audit]") {
  TempDir dir;
  auto store = OpenStore(dir.path());
  Enqueue(*store, 10);
  auto first = Check(Build(Raw(*store, 1, 4)));
  auto second = Check(Build(Raw(*store, 5, 10)));
  REQUIRE(first.ok);
  REQUIRE(second.ok);
  CHECK(CheckChainsOnto(first.manifest, second).ok);

  // A gap between them.
  auto gap = CheckChainsOnto(first.manifest, Check(Build(Raw(*store, 6, 10))));
  CHECK_FALSE(gap.ok);
  CHECK(gap.first_bad_seq == 6);
  // Contiguous numbers but another history: the earlier head differs.
  ExportManifest other = first.manifest;
  other.head_hash[0] ^= 1;
  auto forked = CheckChainsOnto(other, second);
  CHECK_FALSE(forked.ok);
  CHECK(forked.first_bad_seq == 5);
  CHECK(forked.problem.find("prev_hash") != std::string::npos);
}

TEST_CASE("the builder refuses events that do not follow, and empty exports", "[audit]") {
  TempDir dir;
  auto store = OpenStore(dir.path());
  Enqueue(*store, 4);
  auto raw = Raw(*store);
  ExportBuilder b;
  CHECK(b.Finish().status().code() == Code::kFailedPrecondition);
  REQUIRE(b.Add(raw[0]).ok());
  CHECK(b.Add(raw[2]).status().code() == Code::kInvalidArgument);  // a gap
  RawEvent forged = raw[1];
  forged.prev_hash[3] ^= 0x10;
  CHECK(b.Add(forged).status().code() == Code::kInvalidArgument);  // does not chain
  REQUIRE(b.Add(raw[1]).ok());                                     // nothing changed meanwhile
  CHECK(b.manifest().count == 2);
  CHECK(b.manifest().to == 2);
}

TEST_CASE("an export file is durable, atomic and never replaced", "[audit]") {
  TempDir dir;
  auto store = OpenStore(dir.Sub("data"));
  Enqueue(*store, 5);
  const std::string path = dir.Sub("audit-1-5.jsonl");
  {
    auto f = ExportFile::Create(path);
    REQUIRE(f.ok());
    for (const auto& e : Raw(*store)) REQUIRE((*f)->Add(e).ok());
    CHECK_FALSE(std::filesystem::exists(path));  // not before Commit
    auto m = (*f)->Commit();
    REQUIRE(m.ok());
    CHECK(m->count == 5);
    CHECK(m->head_hash == store->Head().hash);
  }
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
  auto check = VerifyExportFile(path);
  REQUIRE(check.ok());
  CHECK(check->ok);
  CHECK(check->manifest.count == 5);
  CHECK(ExportFile::Create(path).status().code() == Code::kAlreadyExists);

  // An abandoned export leaves nothing behind.
  const std::string other = dir.Sub("abandoned.jsonl");
  {
    auto f = ExportFile::Create(other);
    REQUIRE(f.ok());
    REQUIRE((*f)->Add(Raw(*store)[0]).ok());
  }
  CHECK_FALSE(std::filesystem::exists(other));
  CHECK_FALSE(std::filesystem::exists(other + ".tmp"));
  CHECK(VerifyExportFile(other).status().code() == Code::kNotFound);
}

TEST_CASE("base64 and hex helpers accept only canonical text", "[audit]") {
  for (const std::string& s :
       std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)}) {
    auto back = Base64Decode(Base64Encode(s));
    REQUIRE(back.ok());
    CHECK(*back == s);
  }
  CHECK_FALSE(Base64Decode("YQ").ok());    // unpadded
  CHECK_FALSE(Base64Decode("YR==").ok());  // non-zero spare bits: not canonical
  CHECK_FALSE(Base64Decode("Y$==").ok());  // not base64
  CHECK_FALSE(DigestFromHex("ab").ok());
  CHECK_FALSE(DigestFromHex(std::string(64, 'G')).ok());
  CHECK(DigestFromHex(std::string(64, 'f')).ok());
}

namespace {

Result<JobRecord> CancelSync(JobStore& store, uint64_t id) {
  std::promise<Result<JobRecord>> p;
  store.Cancel(id, "op", "test", [&p](Result<JobRecord> r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

}  // namespace

TEST_CASE("an edited payload digest breaks the chain at its event", "[audit]") {
  TempDir dir;
  {
    auto store = OpenStore(dir.path());
    Enqueue(*store, 6);
  }
  REQUIRE(ledgerq::storage::testing::EditPayloadDigest(dir.path(), 3).ok());
  auto report = VerifyChain(dir.path());
  REQUIRE(report.ok());
  CHECK_FALSE(report->ok);
  CHECK(report->first_bad_seq == 3);
}

TEST_CASE("reconcile agrees on a clean store, also while it is written", "[audit][reconcile]") {
  TempDir dir;
  auto store = OpenStore(dir.path());
  Enqueue(*store, 5);
  REQUIRE(CancelSync(*store, 2).ok());
  auto view = store->View();
  Enqueue(*store, 3);  // after the view: must not count, nor differ
  REQUIRE(CancelSync(*store, 4).ok());
  auto r = Recount(*view, 0);
  REQUIRE(r.ok());
  INFO((r->differences.empty() ? "" : r->differences[0]));
  CHECK(r->ok());
  CHECK(r->jobs_checked == 5);
  CHECK(r->events_checked == 6);
  CHECK(r->head_seq == 6);
  auto ready = r->counts[{"q", v1::STATE_READY}];
  CHECK(ready.from_log == 4);
  CHECK(ready.live == 4);
  auto cancelled = r->counts[{"q", v1::STATE_CANCELLED}];
  CHECK(cancelled.from_log == 1);
  CHECK(cancelled.live == 1);

  // The dispatcher's counts: equal is fine, any other number is a difference.
  std::map<std::pair<std::string, State>, uint64_t> gauge = {
      {{"q", v1::STATE_READY}, 4}, {{"q", v1::STATE_CANCELLED}, 1}, {{"q", v1::STATE_DEAD}, 0}};
  auto same = *r;
  CompareWithGauge(gauge, &same);
  CHECK(same.ok());
  gauge[{"q", v1::STATE_DEAD}] = 2;
  CompareWithGauge(gauge, &*r);
  REQUIRE(r->differences.size() == 1);
  CHECK(r->differences[0] == "queue q DEAD: 0 job records, the ledgerq_jobs gauge says 2");
}

TEST_CASE("reconcile reports a live record that disagrees with the log", "[audit][reconcile]") {
  TempDir dir;
  {
    auto store = OpenStore(dir.path());
    Enqueue(*store, 4);
  }
  REQUIRE(ledgerq::storage::testing::SetJobState(dir.path(), 3, v1::STATE_SUCCEEDED).ok());
  auto store = OpenStore(dir.path());
  auto r = Recount(*store->View(), 0);
  REQUIRE(r.ok());
  CHECK_FALSE(r->ok());
  REQUIRE(r->differences.size() == 1);
  CHECK(r->differences[0] ==
        "job 3 (queue q): the log says READY (event 3), its record says SUCCEEDED");
  CHECK(r->counts[{"q", v1::STATE_READY}].from_log == 4);
  CHECK(r->counts[{"q", v1::STATE_READY}].live == 3);
  CHECK(r->counts[{"q", v1::STATE_SUCCEEDED}].live == 1);
}

TEST_CASE("security: finding 2: an export with withheld events keeps its links and says so",
          "[audit][security]") {
  TempDir dir;
  auto store = OpenStore(dir.path());
  Enqueue(*store, 5);
  auto raw = Raw(*store);
  const std::string full = Build(raw);
  CHECK(Lines(full).back().find("\"format\":1") != std::string::npos);  // as before

  // Events 2 and 4 withheld (another queue's, say): only seq and the hashes are written.
  auto partial = raw;
  for (size_t i : {1u, 3u}) {
    partial[i].withheld = "scope";
    partial[i].body.clear();
    partial[i].event.Clear();
  }
  const std::string text = Build(partial);
  auto lines = Lines(text);
  REQUIRE(lines.size() == 6);
  CHECK(lines[1] == "{\"seq\":2,\"prev_hash\":\"" + ToHex(raw[1].prev_hash) + "\",\"hash\":\"" +
                        ToHex(raw[1].hash) + "\",\"withheld\":\"scope\"}");
  CHECK(lines[5].find("\"format\":2") != std::string::npos);
  CHECK(lines[5].find("\"withheld\":2") != std::string::npos);
  auto check = Check(text);
  INFO(check.problem);
  REQUIRE(check.ok);
  CHECK(check.events == 5);
  CHECK(check.manifest.withheld == 2);
  CHECK(check.manifest.head_hash == store->Head().hash);

  // A withheld line's links are still checked, and it can hide nothing.
  auto broken = lines;
  broken[1].replace(broken[1].find(ToHex(raw[1].hash)), 64, std::string(64, '0'));
  CHECK_FALSE(Check(Join(broken)).ok);
  auto smuggled = lines;
  smuggled[1].insert(smuggled[1].size() - 1, ",\"queue\":\"b\"");
  auto c2 = Check(Join(smuggled));
  CHECK_FALSE(c2.ok);
  CHECK_THAT(c2.problem, Catch::Contains("holds fields it should not"));
  auto relabelled = lines;
  relabelled[1].replace(relabelled[1].find("scope"), 5, "other");
  CHECK_FALSE(Check(Join(relabelled)).ok);
  // The manifest's count of withheld lines must match the file.
  auto miscounted = lines;
  miscounted[5].replace(miscounted[5].find("\"withheld\":2"), 12, "\"withheld\":1");
  CHECK_FALSE(Check(Join(miscounted)).ok);
}
