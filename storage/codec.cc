#include "storage/codec.h"

#include <cstring>

namespace ledgerq::storage {

std::string EncodeU64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return out;
}

Result<uint64_t> DecodeU64(std::string_view key) {
  if (key.size() != 8) {
    return Status::Corruption("expected an 8-byte key, got " + std::to_string(key.size()));
  }
  uint64_t v = 0;
  for (char c : key) v = (v << 8) | static_cast<uint8_t>(c);
  return v;
}

std::string IdempotencyKey(std::string_view queue, std::string_view key) {
  std::string out;
  out.reserve(queue.size() + 1 + key.size());
  out.append(queue);
  out.push_back('\0');  // queue names cannot contain NUL, so the split is unambiguous
  out.append(key);
  return out;
}

std::string EncodeRecord(uint8_t version, const google::protobuf::MessageLite& msg) {
  std::string out;
  out.reserve(1 + msg.ByteSizeLong());
  out.push_back(static_cast<char>(version));
  msg.AppendToString(&out);
  return out;
}

Status DecodeRecord(std::string_view value, uint8_t version, google::protobuf::MessageLite* msg,
                    std::string_view what) {
  if (value.empty()) return Status::Corruption(std::string(what) + " record is empty");
  if (static_cast<uint8_t>(value[0]) != version) {
    return Status::Corruption(std::string(what) + " record has unknown format version " +
                              std::to_string(static_cast<uint8_t>(value[0])));
  }
  if (!msg->ParseFromArray(value.data() + 1, static_cast<int>(value.size() - 1))) {
    return Status::Corruption(std::string(what) + " record cannot be parsed");
  }
  return Status::Ok();
}

std::string EncodePayload(std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 1);
  out.push_back(static_cast<char>(kPayloadFormatVersion));
  out.append(payload);
  return out;
}

Result<std::string> DecodePayload(std::string_view value) {
  if (value.empty() || static_cast<uint8_t>(value[0]) != kPayloadFormatVersion) {
    return Status::Corruption("payload record has an unknown format version");
  }
  return std::string(value.substr(1));
}

std::string EncodeEvent(const Digest& prev_hash, const Digest& hash, std::string_view body) {
  std::string out;
  out.reserve(1 + 64 + body.size());
  out.push_back(static_cast<char>(kEventFormatVersion));
  out.append(AsBytes(prev_hash));
  out.append(AsBytes(hash));
  out.append(body);
  return out;
}

Result<StoredEvent> DecodeEvent(std::string_view value) {
  if (value.size() < 65) return Status::Corruption("event record is truncated");
  if (static_cast<uint8_t>(value[0]) != kEventFormatVersion) {
    return Status::Corruption("event record has unknown format version " +
                              std::to_string(static_cast<uint8_t>(value[0])));
  }
  StoredEvent ev;
  std::memcpy(ev.prev_hash.data(), value.data() + 1, 32);
  std::memcpy(ev.hash.data(), value.data() + 33, 32);
  ev.body_bytes = value.substr(65);
  return ev;
}

Digest ChainHash(const Digest& prev_hash, std::string_view body_bytes) {
  return Sha256Pair(AsBytes(prev_hash), body_bytes);
}

}  // namespace ledgerq::storage
