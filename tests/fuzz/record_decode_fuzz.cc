// libFuzzer target: the persisted-record decoders (storage/codec.h) over arbitrary bytes, as if a
// stored value were corrupt, and what the server does with a decoded record: a job becomes an API
// Job, an event an API JobEvent and a lifecycle log line (text and JSON) with its metrics, a
// payload a masked failure snapshot. Whatever decodes must re-encode to something that decodes to
// the same message.
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "ledgerq/storage/v1/records.pb.h"
#include "metrics/metrics.h"
#include "server/job_mapping.h"
#include "server/lifecycle.h"
#include "server/payload_snapshot.h"
#include "storage/codec.h"
#include "storage/job_store.h"
#include "tests/fuzz/quiet_protobuf.h"

namespace {

namespace st = ledgerq::storage;
namespace sv1 = ledgerq::storage::v1;

constexpr int64_t kNowUs = 1'700'000'000'000'000;
constexpr uint8_t kVersion = 1;  // every record format is at version 1

// Map entries serialize in no fixed order unless asked to (NaN doubles, which a message compare
// would call different from themselves, are compared by their bits this way).
std::string Deterministic(const google::protobuf::Message& m) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream raw(&out);
    google::protobuf::io::CodedOutputStream coded(&raw);
    coded.SetSerializationDeterministic(true);
    if (!m.SerializeToCodedStream(&coded)) std::abort();
  }
  return out;
}

// Decodes `value` as a versioned record; if it decodes, its re-encoding must decode to the same.
template <typename Msg>
bool DecodeAndRoundTrip(std::string_view value, Msg* msg) {
  if (!st::DecodeRecord(value, kVersion, msg, "fuzz").ok()) return false;
  const std::string again = st::EncodeRecord(kVersion, *msg);
  Msg copy;
  if (!st::DecodeRecord(again, kVersion, &copy, "fuzz").ok()) std::abort();
  if (Deterministic(copy) != Deterministic(*msg)) std::abort();
  return true;
}

// Decoded events carry arbitrary queue and type names, and each new name is a new series; start
// over now and then so a long run measures the code, not the registry's growth.
ledgerq::metrics::Metrics& Metrics() {
  static std::unique_ptr<ledgerq::metrics::Metrics> m;
  static unsigned uses = 0;
  if (!m || ++uses % 4096 == 0) m = std::make_unique<ledgerq::metrics::Metrics>("fuzz");
  return *m;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  ledgerq::fuzz::QuietProtobufLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view value(reinterpret_cast<const char*>(data), size);

  (void)st::DecodeU64(value);  // keys: job ids, sequences, times

  sv1::JobRecord job;
  const bool have_job = DecodeAndRoundTrip(value, &job);
  if (have_job) (void)ledgerq::server::ToApiJob(job, kNowUs);

  sv1::IdempotencyRecord idem;
  (void)DecodeAndRoundTrip(value, &idem);
  sv1::QueueRecord queue;
  (void)DecodeAndRoundTrip(value, &queue);
  sv1::ChainHead head;
  (void)DecodeAndRoundTrip(value, &head);
  sv1::FailureRecord failure;
  (void)DecodeAndRoundTrip(value, &failure);

  if (auto payload = st::DecodePayload(value); payload.ok()) {
    if (st::EncodePayload(*payload) != value) std::abort();
    (void)ledgerq::server::PayloadSnapshot(*payload, ledgerq::server::DefaultMaskFields());
  }

  if (auto ev = st::DecodeEvent(value); ev.ok()) {
    if (st::EncodeEvent(ev->prev_hash, ev->hash, ev->body_bytes) != value) std::abort();
    (void)st::ChainHash(ev->prev_hash, ev->body_bytes);
    st::ObservedEvent observed;
    if (observed.event.ParseFromArray(ev->body_bytes.data(),
                                      static_cast<int>(ev->body_bytes.size()))) {
      (void)ledgerq::server::ToApiEvent(observed.event);
      // The lifecycle line of the event alone, and with the job as it stood after it.
      for (bool with_job : {false, true}) {
        if (with_job && !have_job) break;
        if (with_job) observed.job = job;
        for (auto format : {ledgerq::server::LogFormat::kText, ledgerq::server::LogFormat::kJson}) {
          ledgerq::server::Lifecycle lifecycle(&Metrics(), nullptr, format);
          (void)lifecycle.Line(observed);
          lifecycle.OnDurable({observed});
        }
      }
    }
  }
  return 0;
}
