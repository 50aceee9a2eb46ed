#include "storage/testing/log_tamper.h"

#include <rocksdb/db.h>

#include <functional>
#include <memory>
#include <vector>

#include "storage/codec.h"

namespace ledgerq::storage::testing {
namespace {

// Opens the store's RocksDB directly and hands `fn` the log family.
Status WithLog(
    const std::string& data_dir,
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
  rocksdb::ColumnFamilyHandle* log = nullptr;
  for (auto* h : handles) {
    if (h->GetName() == "log") log = h;
  }
  s = fn(raw, log);
  for (auto* h : handles) (void)raw->DestroyColumnFamilyHandle(h);
  (void)raw->Close();
  delete raw;
  return s.ok() ? Status::Ok() : Status::Internal(s.ToString());
}

Status Edit(const std::string& data_dir, uint64_t seq, bool rehash) {
  return WithLog(data_dir, [&](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* log) {
    std::string value;
    auto s = db->Get(rocksdb::ReadOptions(), log, EncodeU64(seq), &value);
    if (!s.ok()) return s;
    auto ev = DecodeEvent(value);
    if (!ev.ok()) return rocksdb::Status::Corruption("decode");
    v1::EventBody body;
    body.ParseFromArray(ev->body_bytes.data(), static_cast<int>(ev->body_bytes.size()));
    body.set_principal("mallory");
    std::string bytes = body.SerializeAsString();
    Digest hash = rehash ? ChainHash(ev->prev_hash, bytes) : ev->hash;
    return db->Put(rocksdb::WriteOptions(), log, EncodeU64(seq),
                   EncodeEvent(ev->prev_hash, hash, bytes));
  });
}

}  // namespace

Status EditEvent(const std::string& data_dir, uint64_t seq) { return Edit(data_dir, seq, false); }
Status EditEventRehash(const std::string& data_dir, uint64_t seq) {
  return Edit(data_dir, seq, true);
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
