#include <catch2/catch.hpp>

#include "common/duration.h"
#include "common/sha256.h"
#include "common/status.h"

using namespace ledgerq;
using namespace std::chrono_literals;

TEST_CASE("durations parse with units and sums", "[common]") {
  CHECK(ParseDuration("500ms", "f").value() == 500ms);
  CHECK(ParseDuration("30s", "f").value() == 30s);
  CHECK(ParseDuration("24h", "f").value() == 24h);
  CHECK(ParseDuration("1h30m", "f").value() == 90min);
  CHECK(ParseDuration("7d", "f").value() == 168h);
  CHECK(ParseDuration("250us", "f").value() == 250us);
}

TEST_CASE("bad durations name the field and the value", "[common]") {
  for (const char* bad : {"", "5", "5y", "h", "-5s", "5 s", "99999999999999999999s"}) {
    auto r = ParseDuration(bad, "--dedup-window");
    INFO(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == Code::kInvalidArgument);
    CHECK_THAT(r.status().message(), Catch::Contains("--dedup-window"));
  }
}

TEST_CASE("durations format shortest and exact enough", "[common]") {
  CHECK(FormatDuration(0us) == "0s");
  CHECK(FormatDuration(3ms) == "3ms");
  CHECK(FormatDuration(1500ms) == "1.5s");
  CHECK(FormatDuration(90s) == "1m30s");
  CHECK(FormatDuration(25h) == "1d1h");
}

TEST_CASE("sha256 matches the standard test vector", "[common]") {
  CHECK(ToHex(Sha256("abc")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(Sha256Pair("ab", "c") == Sha256("abc"));
}

TEST_CASE("status renders code and message", "[common]") {
  CHECK(Status::NotFound("job 7 not found").ToString() == "NOT_FOUND: job 7 not found");
  CHECK(Status::Ok().ToString() == "OK");
  Result<int> r = Status::Internal("x");
  CHECK_FALSE(r.ok());
  Result<int> v = 5;
  CHECK(*v == 5);
}
