#include "tests/support/daemon.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

namespace ledgerq::testing {
namespace {

std::vector<char*> Argv(const std::vector<std::string>& args) {
  std::vector<char*> out;
  for (const auto& a : args) out.push_back(const_cast<char*>(a.c_str()));
  out.push_back(nullptr);
  return out;
}

std::string Field(const std::string& line, const std::string& key) {
  auto p = line.find(key + "=");
  if (p == std::string::npos) return "";
  p += key.size() + 1;
  return line.substr(p, line.find(' ', p) - p);
}

ExitInfo Decode(int status) {
  if (WIFEXITED(status)) return {true, WEXITSTATUS(status)};
  if (WIFSIGNALED(status)) return {false, WTERMSIG(status)};
  return {};
}

std::string ReadAll(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, n);
  return out;
}

}  // namespace

const char* LedgerqdPath() { return LEDGERQD_PATH; }
const char* LedgerqCliPath() { return LEDGERQ_CLI_PATH; }

Daemon::~Daemon() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    Wait();
  }
}

bool Daemon::Start(const std::string& data_dir, const std::vector<std::string>& extra_args) {
  std::vector<std::string> args = {LedgerqdPath(), "--data-dir",    data_dir,     "--grpc-listen",
                                   "127.0.0.1:0",  "--http-listen", "127.0.0.1:0"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  stderr_path_ = data_dir + ".stderr";
  int out[2];
  if (::pipe(out) != 0) return false;
  pid_ = ::fork();
  if (pid_ == 0) {
    ::dup2(out[1], 1);
    int errfd = ::open(stderr_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (errfd >= 0) ::dup2(errfd, 2);
    ::close(out[0]);
    ::close(out[1]);
    auto argv = Argv(args);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  std::string buffered;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  bool ok = false;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[512];
    ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n <= 0) break;  // the daemon exited before saying it listens
    buffered.append(buf, n);
    auto nl = buffered.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffered.substr(0, nl);
      grpc_ = Field(line, "grpc");
      http_ = Field(line, "http");
      ok = !grpc_.empty() && !http_.empty();
      break;
    }
  }
  ::close(out[0]);  // the daemon prints nothing else on stdout
  if (!ok) {
    ::kill(pid_, SIGKILL);
    Wait();
  }
  return ok;
}

void Daemon::Signal(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

ExitInfo Daemon::Wait() {
  if (pid_ <= 0) return {};
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return Decode(status);
}

int Daemon::http_port() const { return std::stoi(http_.substr(http_.rfind(':') + 1)); }

std::string Daemon::stderr_text() const {
  std::ifstream in(stderr_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

ExitInfo RunCommand(const std::vector<std::string>& args, std::string* out, std::string* err) {
  int o[2], e[2];
  if (::pipe(o) != 0 || ::pipe(e) != 0) return {};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(o[1], 1);
    ::dup2(e[1], 2);
    ::close(o[0]);
    ::close(e[0]);
    ::close(o[1]);
    ::close(e[1]);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    auto argv = Argv(args);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(o[1]);
  ::close(e[1]);
  // Outputs here are small; read stderr after stdout without risk of a full pipe deadlock
  // for anything our CLIs print.
  std::string so = ReadAll(o[0]);
  std::string se = ReadAll(e[0]);
  ::close(o[0]);
  ::close(e[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (out) *out = so;
  if (err) *err = se;
  return Decode(status);
}

}  // namespace ledgerq::testing
