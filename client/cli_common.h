// Shared pieces of the ledgerq CLI's commands: global flags, connecting, error exits, tables.
#pragma once

#include <iostream>
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
int RunDlqList(const Globals& g, const std::string& queue, uint32_t limit);
int RunDlqRedrive(const Globals& g, const std::string& queue, uint32_t limit, uint64_t id);
int RunPause(const Globals& g, const std::string& queue, bool pause);
int RunFailures(const Globals& g, const std::string& since, const std::string& queue,
                const std::string& type);

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
