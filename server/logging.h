// ledgerqd's logging: daemon messages ("ledgerqd" logger) and lifecycle lines ("lifecycle",
// asynchronous) both go to stderr through one buffer, flushed when it fills, every second, on
// every daemon message and at exit, so lines are never split or interleaved and a busy daemon
// does not pay one write(2) per line. With --log-format json every line is a JSON object.
#pragma once

#include "server/config.h"

namespace ledgerq::server {

void SetUpLogging(const Config& config);
// Drains the asynchronous lifecycle log and flushes stderr.
void ShutDownLogging();

}  // namespace ledgerq::server
