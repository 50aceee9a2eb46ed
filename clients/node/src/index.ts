// ledgerq for Node: a Promise-based Client and a Worker over the ledgerq.v1 gRPC API, loaded
// from proto/ledgerq/v1/ledgerq.proto at run time. See README.md.
export { Client, securityFromEnv, toId, encodePayload } from './client';
export type {
  CallOptions,
  ClientOptions,
  ConnectionOptions,
  EnqueueBatchResult,
  EnqueueOptions,
  EnqueueResult,
  FailOptions,
  HeartbeatOptions,
  LeaseOptions,
  Payload,
  Pem,
  RetryPolicyInput,
  TlsOptions,
} from './client';
export { Worker, JobContext, failureOutcome, truncateUtf8 } from './worker';
export type { Handler, Outcome, WorkerOptions } from './worker';
export {
  AlreadyExistsError,
  CancelledError,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  LedgerqError,
  NotFoundError,
  PermanentError,
  PermissionDeniedError,
  ResourceExhaustedError,
  TransientError,
  UnauthenticatedError,
  UnavailableError,
  codeName,
  errorFor,
} from './errors';
export type { GrpcCodeName, JobFailureOptions, TransientErrorOptions } from './errors';
export { LOADER_OPTIONS, loadServices, resolveProtoPath } from './proto';
export type { ServiceName } from './proto';
export { durationToMs, timestampToDate } from './types';
export type {
  AttemptError,
  Duration,
  ErrorKind,
  HeartbeatResult,
  Id,
  IdInput,
  Job,
  JobEvent,
  JobHistory,
  JobState,
  LeaseToken,
  LeasedJob,
  RetryPolicy,
  Timestamp,
} from './types';
