// TEST-ONLY: rewrites a stopped store's log behind ledgerq's back, so tests can prove that
// `VerifyChain` catches every form of tampering. Linked only into tests; never into ledgerqd.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace ledgerq::storage::testing {

// Changes the principal recorded in event `seq` without fixing its hash.
[[nodiscard]] Status EditEvent(const std::string& data_dir, uint64_t seq);
// Changes the principal of event `seq` and recomputes that event's own hash, so only the chain
// link to the next event betrays it.
[[nodiscard]] Status EditEventRehash(const std::string& data_dir, uint64_t seq);
[[nodiscard]] Status DeleteEvent(const std::string& data_dir, uint64_t seq);
// Exchanges the stored values of events a and b.
[[nodiscard]] Status SwapEvents(const std::string& data_dir, uint64_t a, uint64_t b);

}  // namespace ledgerq::storage::testing
