// Runs one command for `ledgerq work`: payload on stdin, stdout captured (bounded), the tail of
// stderr kept for the error message, environment extended. No shell is involved.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace ledgerq::client {

struct ProcessResult {
  bool started = false;
  std::string start_error;
  bool exited = false;  // false: killed by a signal
  int code = 0;         // exit code, or the signal
  std::string out;      // at most max_out bytes
  bool out_truncated = false;
  std::string err_tail;  // the last max_err bytes of stderr
};

ProcessResult RunProcess(const std::vector<std::string>& argv,
                         const std::map<std::string, std::string>& extra_env,
                         const std::string& stdin_data, size_t max_out, size_t max_err);

}  // namespace ledgerq::client
