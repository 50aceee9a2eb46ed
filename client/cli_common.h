// Shared pieces of the ledgerq CLI's commands: global flags, connecting, error exits, tables.
#pragma once

#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "client/client.h"
#include "common/duration.h"
#include "common/status.h"

namespace ledgerq::cli {

struct Globals {
  std::string server = "127.0.0.1:7400";
  std::string output = "text";
  std::string timeout = "10s";
  client::SecurityArgs security;  // --token, --tls-ca, --tls-cert, --tls-key (or LEDGERQ_*)
};

inline int Fail(const Status& st) {
  std::cerr << "ledgerq: " << st.ToString() << "\n";
  return st.code() == ledgerq::Code::kInvalidArgument ? 2 : 1;
}

inline Result<ledgerq::client::Client> Connect(const Globals& g) {
  auto t = ledgerq::ParseDuration(g.timeout, "--timeout");
  if (!t.ok()) return t.status();
  ledgerq::client::ClientOptions o;
  o.server = g.server;
  o.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(*t);
  LEDGERQ_RETURN_IF_ERROR(ledgerq::client::LoadSecurity(g.security, &o));
  return ledgerq::client::Client(o);
}

// Prints rows as aligned columns; the first row is the header.
void PrintTable(const std::vector<std::vector<std::string>>& rows);

int RunQueues(const Globals& g);
int RunJobs(const Globals& g, const std::string& queue, const std::string& state,
            const std::string& type, uint32_t limit);
// `needs_attention`: only dead jobs needing a person, of every queue when `queue` is empty.
int RunDlqList(const Globals& g, const std::string& queue, uint32_t limit,
               bool needs_attention = false);
int RunDlqResolve(const Globals& g, const std::vector<uint64_t>& ids, const std::string& note);
int RunDlqRedrive(const Globals& g, const std::string& queue, uint32_t limit, uint64_t id);
int RunPause(const Globals& g, const std::string& queue, bool pause);
int RunFailures(const Globals& g, const std::string& since, const std::string& queue,
                const std::string& type);

// --payload: JSON inline, or @FILE / @- for raw bytes.
[[nodiscard]] Result<std::string> ReadPayload(const std::string& arg);

// Cron schedules (cli_schedule.cc): `ledgerq schedule add | list | rm`.
struct ScheduleAddArgs {
  std::string name, cron, queue, type, payload = "{}", missed;
  int32_t priority = 0;
  uint32_t max_attempts = 0;
  std::vector<std::string> labels;
  bool replace = false;
};
int RunScheduleAdd(const Globals& g, const ScheduleAddArgs& a);
int RunScheduleList(const Globals& g);
int RunScheduleRemove(const Globals& g, const std::string& name);

// Flow control (cli_flow.cc): `ledgerq queue set`, `ledgerq queue circuit`, and what
// `ledgerq queues` shows of limits and circuit breakers.
struct QueueSetArgs {
  std::string queue;
  std::optional<double> rate;
  std::optional<uint32_t> burst, concurrency, per_key;
};
int RunQueueSet(const Globals& g, const QueueSetArgs& a);
int RunCircuit(const Globals& g, const std::string& queue, const std::string& type,
               const std::string& mode);
// Lines under the `ledgerq queues` table: limits in force, held-back jobs, each circuit.
std::vector<std::string> FlowLines(const v1::QueueInfo& q);
nlohmann::json LimitsJson(const v1::QueueLimits& l);
nlohmann::json CircuitJson(const v1::CircuitInfo& c);

struct WorkArgs {
  std::vector<std::string> queues;
  int concurrency = 1;
  std::string lease = "30s";
  std::vector<int> permanent_exit_codes{65};
  std::string worker_id;
  std::vector<std::string> command;
};
int RunWork(const Globals& g, const WorkArgs& a);

struct AuditVerifyArgs {
  std::string data_dir;  // offline, a stopped daemon's directory
  std::string archive;   // offline, an export file
  std::string after;     // with archive: the export it must chain onto
};
int RunAuditVerify(const Globals& g, const AuditVerifyArgs& a);
int RunAuditExport(const Globals& g, uint64_t from, uint64_t to);
int RunAuditArchive(const Globals& g, uint64_t from, uint64_t to, const std::string& out);
int RunAuditReconcile(const Globals& g);

struct AuthAddArgs {
  std::string file, principal, role, token;
  std::vector<std::string> queues;
};
int RunAuthAdd(const Globals& g, const AuthAddArgs& a);

}  // namespace ledgerq::cli
