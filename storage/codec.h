// On-disk encodings. Every stored value starts with a one-byte format version.
//
// To change a record's format: bump its k*FormatVersion, keep decoding every older version, and
// add a test that decodes a value written by the old version. Never reinterpret a version.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/sha256.h"
#include "common/status.h"
#include "ledgerq/storage/v1/records.pb.h"

namespace ledgerq::storage {

inline constexpr uint8_t kJobFormatVersion = 1;
inline constexpr uint8_t kEventFormatVersion = 1;
inline constexpr uint8_t kIdempotencyFormatVersion = 1;
inline constexpr uint8_t kMetaFormatVersion = 1;
inline constexpr uint8_t kPayloadFormatVersion = 1;

// Big-endian, so RocksDB's bytewise order is numeric order.
std::string EncodeU64(uint64_t v);
[[nodiscard]] Result<uint64_t> DecodeU64(std::string_view key);

std::string IdempotencyKey(std::string_view queue, std::string_view key);

// Versioned protobuf value: [version][message bytes].
std::string EncodeRecord(uint8_t version, const google::protobuf::MessageLite& msg);
[[nodiscard]] Status DecodeRecord(std::string_view value, uint8_t version,
                                  google::protobuf::MessageLite* msg, std::string_view what);

std::string EncodePayload(std::string_view payload);
[[nodiscard]] Result<std::string> DecodePayload(std::string_view value);

// A stored event: [version][prev_hash 32][hash 32][EventBody bytes].
struct StoredEvent {
  Digest prev_hash{};
  Digest hash{};
  std::string_view body_bytes;  // points into the decoded value
};
std::string EncodeEvent(const Digest& prev_hash, const Digest& hash, std::string_view body);
[[nodiscard]] Result<StoredEvent> DecodeEvent(std::string_view value);
// hash = SHA-256(prev_hash || body bytes)
Digest ChainHash(const Digest& prev_hash, std::string_view body_bytes);

}  // namespace ledgerq::storage
