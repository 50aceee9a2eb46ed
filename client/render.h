// How the CLI shows jobs to people (aligned text) and to scripts (JSON). Payloads that are JSON
// appear as JSON; other payloads as base64.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "ledgerq/v1/ledgerq.pb.h"

namespace ledgerq::client {

// "READY" for JOB_STATE_READY.
std::string StateName(v1::JobState state);
nlohmann::json JobToJson(const v1::Job& job);
std::string JobToText(const v1::Job& job);

// A job's history as a readable timeline with the time between steps, e.g.
//   +3ms    leased: attempt 1, worker w1, waited 3ms
nlohmann::json HistoryToJson(const v1::JobHistory& h);
std::string HistoryToText(const v1::JobHistory& h);

}  // namespace ledgerq::client
