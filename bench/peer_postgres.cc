// PostgreSQL with libpq, the usual queue table: INSERT; UPDATE ... WHERE id = (SELECT ... FOR
// UPDATE SKIP LOCKED LIMIT 1) to lease; DELETE on completion. Every statement is its own
// transaction, committed with synchronous_commit = on (the WAL is flushed before COMMIT
// returns; concurrent commits share flushes).
#include <libpq-fe.h>

#include <cstdlib>

#include "bench/peer.h"

namespace ledgerq::bench {
namespace {

constexpr const char* kSchema = R"sql(
SET client_min_messages = warning;
DROP TABLE IF EXISTS jobs;
CREATE TABLE jobs (
  id           bigserial PRIMARY KEY,
  queue        text        NOT NULL,
  state        text        NOT NULL DEFAULT 'ready',
  payload      bytea       NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  leased_until timestamptz
);
CREATE INDEX jobs_ready ON jobs (queue, id) WHERE state = 'ready';
)sql";

constexpr const char* kEnqueue = "INSERT INTO jobs (queue, payload) VALUES ($1, $2) RETURNING id";
constexpr const char* kLease = R"sql(
UPDATE jobs SET state = 'leased', leased_until = now() + interval '30 seconds'
 WHERE id = (SELECT id FROM jobs WHERE queue = $1 AND state = 'ready'
              ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
 RETURNING id, payload)sql";
constexpr const char* kComplete = "DELETE FROM jobs WHERE id = $1";

struct ConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using Conn = std::unique_ptr<PGconn, ConnDeleter>;
struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

// "host:port" becomes a conninfo for the postgres user; anything with '=' is taken as is.
[[nodiscard]] std::string Conninfo(const std::string& address) {
  if (address.find('=') != std::string::npos) return address;
  const size_t colon = address.rfind(':');
  return "host=" + address.substr(0, colon) + " port=" + address.substr(colon + 1) +
         " user=postgres dbname=postgres";
}

[[nodiscard]] Conn Open(const std::string& address, std::string* error) {
  Conn c(PQconnectdb(Conninfo(address).c_str()));
  if (!c || PQstatus(c.get()) != CONNECTION_OK) {
    *error = std::string("connect: ") + (c ? PQerrorMessage(c.get()) : "out of memory");
    return nullptr;
  }
  return c;
}

[[nodiscard]] bool Ok(const Result& r, ExecStatusType want, PGconn* c, const char* what,
                      std::string* error) {
  if (r && PQresultStatus(r.get()) == want) return true;
  *error = std::string(what) + ": " + PQerrorMessage(c);
  return false;
}

class PostgresSession final : public PeerSession {
 public:
  PostgresSession(Conn c, std::string queue) : c_(std::move(c)), queue_(std::move(queue)) {}

  [[nodiscard]] bool PrepareStatements(std::string* error) {
    for (auto [name, sql] : {std::pair{"enqueue", kEnqueue}, std::pair{"lease", kLease},
                             std::pair{"complete", kComplete}}) {
      Result r(PQprepare(c_.get(), name, sql, 0, nullptr));
      if (!Ok(r, PGRES_COMMAND_OK, c_.get(), name, error)) return false;
    }
    return true;
  }

  bool Enqueue(std::string_view payload, std::string* error) override {
    const char* values[2] = {queue_.c_str(), payload.data()};
    const int lengths[2] = {0, static_cast<int>(payload.size())};
    const int formats[2] = {0, 1};  // text queue, binary bytea
    Result r(PQexecPrepared(c_.get(), "enqueue", 2, values, lengths, formats, 0));
    return Ok(r, PGRES_TUPLES_OK, c_.get(), "INSERT", error);
  }

  bool Cycle(std::string_view payload, std::string* error) override {
    if (!Enqueue(payload, error)) return false;
    std::string id;
    for (int tries = 0; id.empty(); ++tries) {
      if (tries == 1000) {
        *error = "lease: no ready job after 1000 tries";
        return false;
      }
      const char* values[1] = {queue_.c_str()};
      Result r(PQexecPrepared(c_.get(), "lease", 1, values, nullptr, nullptr, 0));
      if (!Ok(r, PGRES_TUPLES_OK, c_.get(), "lease", error)) return false;
      if (PQntuples(r.get()) == 1) id = PQgetvalue(r.get(), 0, 0);
    }
    const char* values[1] = {id.c_str()};
    Result r(PQexecPrepared(c_.get(), "complete", 1, values, nullptr, nullptr, 0));
    if (!Ok(r, PGRES_COMMAND_OK, c_.get(), "DELETE", error)) return false;
    if (std::string_view(PQcmdTuples(r.get())) != "1") {
      *error = "DELETE removed " + std::string(PQcmdTuples(r.get())) + " rows";
      return false;
    }
    return true;
  }

 private:
  Conn c_;
  std::string queue_;
};

class PostgresDriver final : public PeerDriver {
 public:
  explicit PostgresDriver(const PeerConfig& config) : config_(config) {}

  bool Prepare(std::string* error) override {
    Conn c = Open(config_.address, error);
    if (!c) return false;
    Result settings(PQexec(c.get(), "SHOW synchronous_commit"));
    if (!Ok(settings, PGRES_TUPLES_OK, c.get(), "SHOW", error)) return false;
    if (std::string_view(PQgetvalue(settings.get(), 0, 0)) != "on") {
      *error = "synchronous_commit is not on";
      return false;
    }
    Result r(PQexec(c.get(), kSchema));
    return Ok(r, PGRES_COMMAND_OK, c.get(), "schema", error);
  }

  std::unique_ptr<PeerSession> Connect(std::string* error) override {
    Conn c = Open(config_.address, error);
    if (!c) return nullptr;
    auto s = std::make_unique<PostgresSession>(std::move(c), config_.queue);
    if (!s->PrepareStatements(error)) return nullptr;
    return s;
  }

 private:
  PeerConfig config_;
};

}  // namespace

std::unique_ptr<PeerDriver> MakePostgresDriver(const PeerConfig& config) {
  return std::make_unique<PostgresDriver>(config);
}

}  // namespace ledgerq::bench
