// Protobuf logs an error for every string field with invalid UTF-8 it is asked to parse, which
// arbitrary bytes do all the time; keep only the fatal ones (which then abort, as they should).
#pragma once

#include <google/protobuf/stubs/logging.h>

#include <cstdio>
#include <string>

namespace ledgerq::fuzz {

inline void QuietProtobufLogs() {
  google::protobuf::SetLogHandler(
      [](google::protobuf::LogLevel level, const char* file, int line, const std::string& message) {
        if (level >= google::protobuf::LOGLEVEL_FATAL) {
          std::fprintf(stderr, "[libprotobuf FATAL %s:%d] %s\n", file, line, message.c_str());
        }
      });
}

}  // namespace ledgerq::fuzz
