// Flow-control commands: `ledgerq queue set` (limits), `ledgerq queue circuit` (force a
// circuit), and the limit and circuit lines of `ledgerq queues`.
#include <google/protobuf/util/time_util.h>

#include <cstdio>

#include "client/cli_common.h"

namespace ledgerq::cli {
namespace {

using google::protobuf::util::TimeUtil;

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string Percent(double v) {
  return Num(static_cast<double>(static_cast<int>(v * 1000)) / 10) + "%";
}

std::string Dur(const google::protobuf::Duration& d) {
  return FormatDuration(std::chrono::microseconds(TimeUtil::DurationToMicroseconds(d)));
}

std::string Limits(const v1::QueueLimits& l) {
  std::string out;
  auto add = [&](const std::string& s) { out += (out.empty() ? "" : ", ") + s; };
  if (l.rate_per_second() > 0) {
    add("rate " + Num(l.rate_per_second()) + "/s burst " +
        std::to_string(l.burst()
                           ? l.burst()
                           : std::max<uint32_t>(1, static_cast<uint32_t>(l.rate_per_second()))));
  }
  if (l.max_concurrency() > 0) add("concurrency " + std::to_string(l.max_concurrency()));
  if (l.max_per_key() > 0) add("per key " + std::to_string(l.max_per_key()));
  return out;
}

}  // namespace

nlohmann::json LimitsJson(const v1::QueueLimits& l) {
  return {{"rate_per_second", l.rate_per_second()},
          {"burst", l.burst()},
          {"max_concurrency", l.max_concurrency()},
          {"max_per_key", l.max_per_key()}};
}

nlohmann::json CircuitJson(const v1::CircuitInfo& c) {
  nlohmann::json j{{"type", c.type()},
                   {"state", c.state()},
                   {"window_attempts", c.window_attempts()},
                   {"window_failures", c.window_failures()},
                   {"failure_rate", c.failure_rate()},
                   {"threshold", c.threshold()},
                   {"min_attempts", c.min_attempts()},
                   {"window_seconds", TimeUtil::DurationToMicroseconds(c.window()) / 1e6},
                   {"opens", c.opens()},
                   {"cooldown_seconds", TimeUtil::DurationToMicroseconds(c.cooldown()) / 1e6},
                   {"trials", c.trials()},
                   {"held_back", c.held_back()}};
  if (!c.forced().empty()) j["forced"] = c.forced();
  if (c.has_half_open_at()) j["half_open_at"] = TimeUtil::ToString(c.half_open_at());
  return j;
}

std::vector<std::string> FlowLines(const v1::QueueInfo& q) {
  std::vector<std::string> lines;
  const std::string limits = Limits(q.limits());
  if (!limits.empty() || q.held_back() > 0) {
    std::string line = q.name() + ": limits " + (limits.empty() ? "none" : limits);
    if (q.held_back() > 0) line += "; holding back " + std::to_string(q.held_back()) + " ready";
    lines.push_back(line);
  }
  for (const auto& c : q.circuits()) {
    std::string state = c.state();
    for (auto& ch : state) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    std::string line = q.name() + "/" + c.type() + ": circuit " + state;
    if (!c.forced().empty()) line += " (forced " + c.forced() + ")";
    line += ": " + std::to_string(c.window_failures()) + " of " +
            std::to_string(c.window_attempts()) + " attempts failed in the last " +
            Dur(c.window()) + " (" + Percent(c.failure_rate()) + "; opens at " +
            Percent(c.threshold()) + " after " + std::to_string(c.min_attempts()) + ")";
    if (c.has_half_open_at()) {
      line += "; half-open at " + TimeUtil::ToString(c.half_open_at()) + " (cooldown " +
              Dur(c.cooldown()) + ", opened " + std::to_string(c.opens()) + "x)";
    }
    if (c.state() == "half_open") line += "; " + std::to_string(c.trials()) + " trial leases";
    if (c.held_back() > 0) line += "; holding back " + std::to_string(c.held_back());
    lines.push_back(line);
  }
  return lines;
}

int RunQueueSet(const Globals& g, const QueueSetArgs& a) {
  if (!a.rate && !a.burst && !a.concurrency && !a.per_key) {
    return Fail(Status::InvalidArgument(
        "queue set: give at least one of --rate, --burst, --concurrency, --per-key"));
  }
  if (a.rate && !(*a.rate >= 0)) {
    return Fail(Status::InvalidArgument("--rate: must be 0 (no limit) or more"));
  }
  auto client = Connect(g);
  if (!client.ok()) return Fail(client.status());
  v1::SetQueueLimitsRequest req;
  req.set_queue(a.queue);
  if (a.rate) req.set_rate_per_second(*a.rate);
  if (a.burst) req.set_burst(*a.burst);
  if (a.concurrency) req.set_max_concurrency(*a.concurrency);
  if (a.per_key) req.set_max_per_key(*a.per_key);
  auto r = client->SetQueueLimits(req);
  if (!r.ok()) return Fail(r.status());
  if (g.output == "json") {
    std::cout << nlohmann::json{{"queue", r->name()}, {"limits", LimitsJson(r->limits())}}.dump(2)
              << "\n";
  } else {
    const std::string limits = Limits(r->limits());
    std::cout << r->name() << ": limits " << (limits.empty() ? "none" : limits) << "\n";
  }
  return 0;
}

int RunCircuit(const Globals& g, const std::string& queue, const std::string& type,
               const std::string& mode) {
  auto client = Connect(g);
  if (!client.ok()) return Fail(client.status());
  auto r = client->SetCircuit(queue, type, mode);
  if (!r.ok()) return Fail(r.status());
  if (g.output == "json") {
    for (const auto& c : r->circuits()) {
      if (c.type() == type) std::cout << CircuitJson(c).dump(2) << "\n";
    }
    return 0;
  }
  bool shown = false;
  for (const auto& line : FlowLines(*r)) {
    if (line.rfind(queue + "/" + type + ":", 0) == 0) {
      std::cout << line << "\n";
      shown = true;
    }
  }
  if (!shown) std::cout << queue << "/" << type << ": circuit given back (no breaker configured)\n";
  return 0;
}

}  // namespace ledgerq::cli
