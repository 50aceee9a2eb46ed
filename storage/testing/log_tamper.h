// TEST-ONLY: rewrites a stopped store's log behind ledgerq's back, so tests can prove that
// `VerifyChain` catches every form of tampering (and reconcile every disagreement). Linked only
// into tests; never into ledgerqd.
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
// Flips a bit of the payload digest recorded in event `seq` (a SUBMITTED event carries one),
// leaving its hash as it was: what someone hiding a different payload would do.
[[nodiscard]] Status EditPayloadDigest(const std::string& data_dir, uint64_t seq);
// Rewrites job `id`'s live record to `state` without an event, so the record disagrees with
// the log (what `ledgerq audit reconcile` must report).
[[nodiscard]] Status SetJobState(const std::string& data_dir, uint64_t id, int state);

}  // namespace ledgerq::storage::testing
