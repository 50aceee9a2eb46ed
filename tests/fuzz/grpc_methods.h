// The methods fuzz_grpc_handlers calls, indexed by an input's first byte (its low seven bits,
// modulo the count).
// Shared with the seed generator, so a seed's first byte names the method its request is for.
#pragma once

#include <cstddef>

namespace ledgerq::fuzz {

struct Method {
  const char* path;
  bool long_poll;  // may park: a short client deadline, and DEADLINE_EXCEEDED is fine
};

inline constexpr Method kMethods[] = {
    {"/ledgerq.v1.JobService/Enqueue", false},            // 0
    {"/ledgerq.v1.JobService/EnqueueBatch", false},       // 1
    {"/ledgerq.v1.JobService/GetJob", false},             // 2
    {"/ledgerq.v1.JobService/CancelJob", false},          // 3
    {"/ledgerq.v1.JobService/GetJobHistory", false},      // 4
    {"/ledgerq.v1.WorkerService/Lease", true},            // 5
    {"/ledgerq.v1.WorkerService/Heartbeat", false},       // 6
    {"/ledgerq.v1.WorkerService/Complete", false},        // 7
    {"/ledgerq.v1.WorkerService/CompleteBatch", false},   // 8
    {"/ledgerq.v1.WorkerService/Fail", false},            // 9
    {"/ledgerq.v1.WorkerService/Release", false},         // 10
    {"/ledgerq.v1.AdminService/ListQueues", false},       // 11
    {"/ledgerq.v1.AdminService/PauseQueue", false},       // 12
    {"/ledgerq.v1.AdminService/ResumeQueue", false},      // 13
    {"/ledgerq.v1.AdminService/ListJobs", false},         // 14
    {"/ledgerq.v1.AdminService/ListDeadLetters", false},  // 15
    {"/ledgerq.v1.AdminService/Redrive", false},          // 16
    {"/ledgerq.v1.AdminService/ListFailures", false},     // 17
};
inline constexpr size_t kNumMethods = sizeof(kMethods) / sizeof(kMethods[0]);

enum MethodIndex : unsigned char {
  kEnqueue,
  kEnqueueBatch,
  kGetJob,
  kCancelJob,
  kGetJobHistory,
  kLease,
  kHeartbeat,
  kComplete,
  kCompleteBatch,
  kFail,
  kRelease,
  kListQueues,
  kPauseQueue,
  kResumeQueue,
  kListJobs,
  kListDeadLetters,
  kRedrive,
  kListFailures,
};

}  // namespace ledgerq::fuzz
