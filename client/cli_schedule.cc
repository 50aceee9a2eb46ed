// Cron schedule commands: schedule add, schedule list, schedule rm.
#include <google/protobuf/util/time_util.h>

#include <nlohmann/json.hpp>

#include "client/cli_common.h"

namespace ledgerq::cli {
namespace {

using google::protobuf::util::TimeUtil;

std::string When(bool set, const google::protobuf::Timestamp& t) {
  return set ? TimeUtil::ToString(t) : "-";
}

nlohmann::json ScheduleJson(const v1::Schedule& s) {
  nlohmann::json labels = nlohmann::json::object();
  for (const auto& [k, v] : s.labels()) labels[k] = v;
  nlohmann::json j = {
      {"name", s.name()},
      {"cron", s.cron()},
      {"queue", s.queue()},
      {"type", s.type()},
      {"priority", s.priority()},
      {"max_attempts", s.max_attempts()},
      {"missed", s.missed()},
      {"source", s.source()},
      {"created_by", s.created_by()},
      {"created_at", s.has_created_at() ? nlohmann::json(TimeUtil::ToString(s.created_at()))
                                        : nlohmann::json(nullptr)},
      {"next_fire", s.has_next_fire() ? nlohmann::json(TimeUtil::ToString(s.next_fire()))
                                      : nlohmann::json(nullptr)},
      {"last_fire", s.has_last_fire() ? nlohmann::json(TimeUtil::ToString(s.last_fire()))
                                      : nlohmann::json(nullptr)},
      {"last_job_id", s.last_job_id()},
      {"labels", labels},
  };
  if (s.payload_omitted()) {
    j["payload_omitted"] = true;
  } else if (!s.payload().empty()) {
    // JSON as JSON; other bytes only by size (JSON text cannot hold them as they are).
    auto parsed = nlohmann::json::parse(s.payload(), nullptr, /*allow_exceptions=*/false);
    if (!parsed.is_discarded()) {
      j["payload"] = std::move(parsed);
    } else {
      j["payload_bytes"] = s.payload().size();
    }
  }
  return j;
}

}  // namespace

int RunScheduleAdd(const Globals& g, const ScheduleAddArgs& a) {
  v1::AddScheduleRequest req;
  v1::Schedule* s = req.mutable_schedule();
  s->set_name(a.name);
  s->set_cron(a.cron);
  s->set_queue(a.queue);
  s->set_type(a.type);
  auto payload = ReadPayload(a.payload);
  if (!payload.ok()) return Fail(payload.status());
  s->set_payload(*payload);
  s->set_priority(a.priority);
  s->set_max_attempts(a.max_attempts);
  s->set_missed(a.missed);
  for (const auto& l : a.labels) {
    auto eq = l.find('=');
    if (eq == std::string::npos || eq == 0) {
      return Fail(Status::InvalidArgument("--label: \"" + l + "\" is not key=value"));
    }
    (*s->mutable_labels())[l.substr(0, eq)] = l.substr(eq + 1);
  }
  req.set_replace(a.replace);
  auto client = Connect(g);
  if (!client.ok()) return Fail(client.status());
  auto r = client->AddSchedule(req);
  if (!r.ok()) return Fail(r.status());
  if (g.output == "json") {
    std::cout << ScheduleJson(*r).dump(2) << "\n";
  } else {
    std::cout << "schedule " << r->name() << " saved; next firing "
              << When(r->has_next_fire(), r->next_fire()) << "\n";
  }
  return 0;
}

int RunScheduleList(const Globals& g) {
  auto client = Connect(g);
  if (!client.ok()) return Fail(client.status());
  auto r = client->ListSchedules();
  if (!r.ok()) return Fail(r.status());
  if (g.output == "json") {
    auto arr = nlohmann::json::array();
    for (const auto& s : r->schedules()) arr.push_back(ScheduleJson(s));
    std::cout << arr.dump(2) << "\n";
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "CRON", "QUEUE", "TYPE", "NEXT_FIRE", "LAST_FIRE", "LAST_JOB", "SOURCE"}};
  for (const auto& s : r->schedules()) {
    rows.push_back({s.name(), s.cron(), s.queue(), s.type(), When(s.has_next_fire(), s.next_fire()),
                    When(s.has_last_fire(), s.last_fire()),
                    s.last_job_id() ? std::to_string(s.last_job_id()) : "-", s.source()});
  }
  PrintTable(rows);
  return 0;
}

int RunScheduleRemove(const Globals& g, const std::string& name) {
  auto client = Connect(g);
  if (!client.ok()) return Fail(client.status());
  auto r = client->RemoveSchedule(name);
  if (!r.ok()) return Fail(r.status());
  if (g.output == "json") {
    std::cout << ScheduleJson(*r).dump(2) << "\n";
  } else {
    std::cout << "schedule " << r->name() << " removed\n";
  }
  return 0;
}

}  // namespace ledgerq::cli
