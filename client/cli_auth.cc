// `ledgerq auth add`: adds a principal to an auth file (creating it, mode 0600), so nobody edits
// token digests by hand. The file is validated by the daemon's own parser before and after the
// change, written to a temporary file and renamed over the old one: a failed add changes
// nothing. Only the token's SHA-256 digest is written.
#include <fcntl.h>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "client/cli_common.h"
#include "common/sha256.h"
#include "server/auth.h"

namespace ledgerq::cli {
namespace {

Status WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Status::Unavailable("--file: cannot create " + tmp + ": " + std::strerror(errno));
  }
  ::fchmod(fd, 0600);  // an old temporary file may have had another mode
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return Status::Unavailable("--file: cannot write " + tmp + ": " + why);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return Status::Unavailable("--file: cannot sync " + tmp + ": " + std::strerror(errno));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    return Status::Unavailable("--file: cannot replace " + path + ": " + why);
  }
  return Status::Ok();
}

}  // namespace

int RunAuthAdd(const Globals& g, const AuthAddArgs& a) {
  if (a.principal.empty()) return Fail(Status::InvalidArgument("--principal: must not be empty"));
  auto role = server::ParseRole(a.role);
  if (!role.ok()) return Fail(Status::InvalidArgument("--role: " + role.status().message()));
  std::vector<std::string> queues = a.queues.empty() ? std::vector<std::string>{"*"} : a.queues;

  std::string old_text;
  if (std::ifstream in(a.file, std::ios::binary); in) {
    std::stringstream buf;
    buf << in.rdbuf();
    old_text = buf.str();
  } else if (::access(a.file.c_str(), F_OK) == 0) {
    return Fail(Status::Unavailable("--file: cannot read " + a.file));
  }
  auto old_table = server::AuthTable::Parse(old_text, a.file);
  if (!old_table.ok()) {
    return Fail(Status::FailedPrecondition(old_table.status().message() +
                                           " (fix the file first; nothing was changed)"));
  }
  if ((*old_table)->ByName(a.principal, {}) != nullptr) {
    return Fail(Status::AlreadyExists("--principal: \"" + a.principal + "\" is already in " +
                                      a.file + "; nothing was changed"));
  }

  std::string token = a.token;
  const bool generated = token.empty();
  if (generated) {
    auto t = server::NewToken();
    if (!t.ok()) return Fail(t.status());
    token = *t;
  } else if (token.find_first_of(" \t\r\n") != std::string::npos || token.size() < 16) {
    return Fail(Status::InvalidArgument(
        "--token: must be at least 16 characters without spaces (or leave it out and one is "
        "generated)"));
  }

  toml::array queue_array;
  for (const auto& q : queues) queue_array.push_back(q);
  toml::table entry{{"name", a.principal},
                    {"role", std::string(server::RoleName(*role))},
                    {"queues", std::move(queue_array)},
                    {"token-sha256", toml::array{ToHex(Sha256(token))}}};
  std::ostringstream block;
  block << "\n[[principal]]\n" << entry << "\n";
  std::string new_text = old_text;
  if (!new_text.empty() && new_text.back() != '\n') new_text += '\n';
  new_text += block.str();
  // The result must load in the daemon exactly as it would on SIGHUP.
  auto new_table = server::AuthTable::Parse(new_text, a.file);
  if (!new_table.ok()) {
    return Fail(Status::InvalidArgument(new_table.status().message() + "; nothing was changed"));
  }
  if (Status st = WriteFileAtomically(a.file, new_text); !st.ok()) return Fail(st);

  if (g.output == "json") {
    nlohmann::json j{{"file", a.file},
                     {"principal", a.principal},
                     {"role", server::RoleName(*role)},
                     {"queues", queues}};
    if (generated) j["token"] = token;
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << "added " << a.principal << " (" << server::RoleName(*role) << ") to " << a.file
              << "\n";
    if (generated) {
      std::cout << "token (shown only now; the file keeps its SHA-256): " << token << "\n";
    }
  }
  return 0;
}

}  // namespace ledgerq::cli
