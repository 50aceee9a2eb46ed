// What a failed attempt keeps of its payload: enough to reproduce, never a secret. JSON payloads
// keep their shape with every field whose name contains one of the mask words replaced by
// "***"; anything else is reduced to its size and SHA-256.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ledgerq::server {

// The default mask words (case-insensitive substrings of field names).
const std::vector<std::string>& DefaultMaskFields();

// At most `max_bytes` of output; a longer snapshot ends with "...(truncated)".
std::string PayloadSnapshot(std::string_view payload, const std::vector<std::string>& mask_fields,
                            size_t max_bytes = 4096);

}  // namespace ledgerq::server
