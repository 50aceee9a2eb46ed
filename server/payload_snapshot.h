// What a failed attempt keeps of its payload: enough to reproduce, never a secret. JSON payloads
// keep their shape with every field whose name contains one of the mask words replaced by
// "***"; anything else is reduced to its size and SHA-256.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ledgerq::server {

// Parsing, masking and dumping JSON recurse once per nesting level, so a payload of many
// thousands of '[' (well within the payload limit) would overflow the stack of the thread that
// reads it and take the daemon down. Deeper JSON is treated as not JSON.
inline constexpr size_t kMaxJsonDepth = 128;
// A scan without recursion: true when `text` opens more than `max_depth` nested arrays/objects.
bool JsonNestedDeeperThan(std::string_view text, size_t max_depth);

// The default mask words (case-insensitive substrings of field names).
const std::vector<std::string>& DefaultMaskFields();

// At most `max_bytes` of output; a longer snapshot ends with "...(truncated)".
std::string PayloadSnapshot(std::string_view payload, const std::vector<std::string>& mask_fields,
                            size_t max_bytes = 4096);

}  // namespace ledgerq::server
