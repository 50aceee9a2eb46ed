#include "server/payload_snapshot.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "common/sha256.h"

namespace ledgerq::server {
namespace {

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool Masked(const std::string& key, const std::vector<std::string>& words) {
  const std::string k = Lower(key);
  for (const auto& w : words) {
    if (!w.empty() && k.find(Lower(w)) != std::string::npos) return true;
  }
  return false;
}

void Mask(nlohmann::json& j, const std::vector<std::string>& words) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (Masked(it.key(), words)) {
        it.value() = "***";
      } else {
        Mask(it.value(), words);
      }
    }
  } else if (j.is_array()) {
    for (auto& v : j) Mask(v, words);
  }
}

}  // namespace

bool JsonNestedDeeperThan(std::string_view text, size_t max_depth) {
  size_t depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return true;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

const std::vector<std::string>& DefaultMaskFields() {
  static const std::vector<std::string> kDefault{"password", "secret", "token", "card"};
  return kDefault;
}

std::string PayloadSnapshot(std::string_view payload, const std::vector<std::string>& mask_fields,
                            size_t max_bytes) {
  nlohmann::json j(nlohmann::json::value_t::discarded);
  if (!JsonNestedDeeperThan(payload, kMaxJsonDepth)) {
    j = nlohmann::json::parse(payload, nullptr, /*allow_exceptions=*/false);
  }
  std::string out;
  if (!payload.empty() && !j.is_discarded()) {
    Mask(j, mask_fields);
    out = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    out = "<" + std::to_string(payload.size()) + " bytes, sha256 " + ToHex(Sha256(payload)) + ">";
  }
  if (out.size() > max_bytes) out = out.substr(0, max_bytes) + "...(truncated)";
  return out;
}

}  // namespace ledgerq::server
