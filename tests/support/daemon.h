// Starts the real ledgerqd binary on free loopback ports (it binds port 0 and prints the ports
// it got), so end-to-end tests speak to exactly what users run.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace ledgerq::testing {

struct ExitInfo {
  bool exited = false;  // normal exit (vs. killed by a signal)
  int code = -1;        // exit code, or the signal number
};

class Daemon {
 public:
  Daemon() = default;
  ~Daemon();  // SIGKILLs a daemon still running
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Starts ledgerqd on `data_dir` with extra flags, and waits (up to 20 s) for its
  // "listening" line. Returns false if it exited first; its stderr is then in stderr_text().
  bool Start(const std::string& data_dir, const std::vector<std::string>& extra_args = {});
  void Signal(int sig);
  ExitInfo Wait();  // reaps the process
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }  // -1 when not running

  const std::string& grpc_address() const { return grpc_; }
  const std::string& http_address() const { return http_; }
  int http_port() const;
  std::string stderr_text() const;

 private:
  pid_t pid_ = -1;
  std::string grpc_, http_, stderr_path_;
};

// Runs a binary to completion, capturing stdout and stderr. Returns the exit info.
ExitInfo RunCommand(const std::vector<std::string>& argv, std::string* out, std::string* err);

const char* LedgerqdPath();
const char* LedgerqCliPath();

}  // namespace ledgerq::testing
