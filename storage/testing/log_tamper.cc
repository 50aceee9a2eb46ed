#include "storage/testing/log_tamper.h"

#include <rocksdb/db.h>

#include <functional>
#include <memory>
#include <vector>

#include "storage/codec.h"

namespace ledgerq::storage::testing {
namespace {

// Opens the store's RocksDB directly and hands `fn` the named family.
Status WithFamily(
    const std::string& data_dir, const std::string& family,
    const std::function<rocksdb::Status(rocksdb::DB*, rocksdb::ColumnFamilyHandle*)>& fn) {
  std::vector<std::string> names;
  const std::string path = data_dir + "/db";
  auto s = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path, &names);
  if (!s.ok()) return Status::Internal(s.ToString());
  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  for (auto& n : names) descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  s = rocksdb::DB::Open(rocksdb::DBOptions(), path, descs, &handles, &raw);
  if (!s.ok()) return Status::Internal(s.ToString());
  rocksdb::ColumnFamilyHandle* cf = nullptr;
  for (auto* h : handles) {
    if (h->GetName() == family) cf = h;
  }
  s = cf ? fn(raw, cf) : rocksdb::Status::NotFound("no column family " + family);
  for (auto* h : handles) (void)raw->DestroyColumnFamilyHandle(h);
  (void)raw->Close();
  delete raw;
  return s.ok() ? Status::Ok() : Status::Internal(s.ToString());
}

Status WithLog(
    const std::string& data_dir,
    const std::function<rocksdb::Status(rocksdb::DB*, rocksdb::ColumnFamilyHandle*)>& fn) {
  return WithFamily(data_dir, "log", fn);
}

Status Edit(const std::string& data_dir, uint64_t seq, bool rehash,
            const std::function<bool(v1::EventBody&)>& change) {
  return WithLog(data_dir, [&](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* log) {
    std::string value;
    auto s = db->Get(rocksdb::ReadOptions(), log, EncodeU64(seq), &value);
    if (!s.ok()) return s;
    auto ev = DecodeEvent(value);
    if (!ev.ok()) return rocksdb::Status::Corruption("decode");
    v1::EventBody body;
    body.ParseFromArray(ev->body_bytes.data(), static_cast<int>(ev->body_bytes.size()));
    if (!change(body)) return rocksdb::Status::InvalidArgument("nothing to change in that event");
    std::string bytes = body.SerializeAsString();
    Digest hash = rehash ? ChainHash(ev->prev_hash, bytes) : ev->hash;
    return db->Put(rocksdb::WriteOptions(), log, EncodeU64(seq),
                   EncodeEvent(ev->prev_hash, hash, bytes));
  });
}

bool SetMallory(v1::EventBody& body) {
  body.set_principal("mallory");
  return true;
}

}  // namespace

Status EditEvent(const std::string& data_dir, uint64_t seq) {
  return Edit(data_dir, seq, false, SetMallory);
}
Status EditEventRehash(const std::string& data_dir, uint64_t seq) {
  return Edit(data_dir, seq, true, SetMallory);
}

Status EditPayloadDigest(const std::string& data_dir, uint64_t seq) {
  return Edit(data_dir, seq, false, [](v1::EventBody& body) {
    if (body.payload_sha256().empty()) return false;
    body.mutable_payload_sha256()->at(0) ^= 0x01;
    return true;
  });
}

Status SetJobState(const std::string& data_dir, uint64_t id, int state) {
  return WithFamily(data_dir, "jobs", [&](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* jobs) {
    std::string value;
    auto s = db->Get(rocksdb::ReadOptions(), jobs, EncodeU64(id), &value);
    if (!s.ok()) return s;
    v1::JobRecord rec;
    if (!DecodeRecord(value, kJobFormatVersion, &rec, "job").ok()) {
      return rocksdb::Status::Corruption("decode job");
    }
    rec.set_state(static_cast<v1::State>(state));
    return db->Put(rocksdb::WriteOptions(), jobs, EncodeU64(id),
                   EncodeRecord(kJobFormatVersion, rec));
  });
}

Status DeleteEvent(const std::string& data_dir, uint64_t seq) {
  return WithLog(data_dir, [&](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* log) {
    return db->Delete(rocksdb::WriteOptions(), log, EncodeU64(seq));
  });
}

Status SwapEvents(const std::string& data_dir, uint64_t a, uint64_t b) {
  return WithLog(data_dir, [&](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* log) {
    std::string va, vb;
    auto s = db->Get(rocksdb::ReadOptions(), log, EncodeU64(a), &va);
    if (s.ok()) s = db->Get(rocksdb::ReadOptions(), log, EncodeU64(b), &vb);
    if (s.ok()) s = db->Put(rocksdb::WriteOptions(), log, EncodeU64(a), vb);
    if (s.ok()) s = db->Put(rocksdb::WriteOptions(), log, EncodeU64(b), va);
    return s;
  });
}

}  // namespace ledgerq::storage::testing
