// SHA-256 through OpenSSL, and hex rendering. Used for payload digests, fingerprints, the
// audit hash chain and (later) token digests.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace ledgerq {

using Digest = std::array<uint8_t, 32>;

Digest Sha256(std::string_view data);
// SHA-256 of a || b without concatenating them.
Digest Sha256Pair(std::string_view a, std::string_view b);

std::string ToHex(std::string_view bytes);
inline std::string ToHex(const Digest& d) {
  return ToHex(std::string_view(reinterpret_cast<const char*>(d.data()), d.size()));
}
inline std::string_view AsBytes(const Digest& d) {
  return {reinterpret_cast<const char*>(d.data()), d.size()};
}

}  // namespace ledgerq
