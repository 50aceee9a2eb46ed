// SHA-256 and secure random bytes through OpenSSL, and hex rendering. Used for payload digests,
// fingerprints, the audit hash chain, token digests and lease nonces.
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

// `n` bytes from OpenSSL's CSPRNG (RAND_bytes); empty if it fails (it has no entropy source).
std::string RandomBytes(size_t n);

// Compares in time that depends only on the sizes, not on where the bytes differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

std::string ToHex(std::string_view bytes);
inline std::string ToHex(const Digest& d) {
  return ToHex(std::string_view(reinterpret_cast<const char*>(d.data()), d.size()));
}
inline std::string_view AsBytes(const Digest& d) {
  return {reinterpret_cast<const char*>(d.data()), d.size()};
}

}  // namespace ledgerq
