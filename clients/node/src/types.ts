// The ledgerq.v1 messages as this package hands them out: decoded by @grpc/proto-loader with
// camelCase field names, uint64/int64 as decimal strings (`longs: String`), enums as their names
// (`enums: String`), bytes as Buffer, unset scalars as their defaults and unset messages as null.
// Field meanings are in proto/ledgerq/v1/ledgerq.proto.

/** A uint64 id (job id, sequence number) as a decimal string, e.g. "42". */
export type Id = string;
/** What an id may be given as: a decimal string, a safe integer or a bigint. */
export type IdInput = string | number | bigint;

/** google.protobuf.Timestamp; see timestampToDate(). */
export interface Timestamp {
  seconds: string;
  nanos: number;
}

/** google.protobuf.Duration; see durationToMs(). */
export interface Duration {
  seconds: string;
  nanos: number;
}

export type JobState =
  | 'JOB_STATE_UNSPECIFIED'
  | 'JOB_STATE_SCHEDULED'
  | 'JOB_STATE_READY'
  | 'JOB_STATE_LEASED'
  | 'JOB_STATE_SUCCEEDED'
  | 'JOB_STATE_DEAD'
  | 'JOB_STATE_CANCELLED';

export type ErrorKind = 'ERROR_KIND_UNSPECIFIED' | 'ERROR_KIND_TRANSIENT' | 'ERROR_KIND_PERMANENT';

export interface AttemptError {
  attempt: number;
  at: Timestamp | null;
  workerId: string;
  kind: ErrorKind;
  code: string;
  message: string;
  details: string;
  workerHost: string;
  leaseStarted: Timestamp | null;
  leaseEnded: Timestamp | null;
  payloadSnapshot: string;
  payloadSnapshotSha256: Buffer;
}

export interface RetryPolicy {
  backoffBase: Duration | null;
  backoffFactor: number;
  backoffCap: Duration | null;
}

export interface Job {
  id: Id;
  queue: string;
  type: string;
  payload: Buffer;
  priority: number;
  runAt: Timestamp | null;
  maxAttempts: number;
  idempotencyKey: string;
  parentJobId: Id;
  labels: Record<string, string>;
  traceparent: string;
  state: JobState;
  attempts: number;
  createdAt: Timestamp | null;
  updatedAt: Timestamp | null;
  result: Buffer;
  errors: AttemptError[];
  payloadSha256: Buffer;
  submittedBy: string;
  cancelReason: string;
  deadReason: string;
  leaseWorkerId: string;
  leaseDeadline: Timestamp | null;
  attemptsRemaining: number;
  retryPolicy: RetryPolicy | null;
  tracestate: string;
  policyVersion: string;
  payloadOmitted: boolean;
  payloadPurged: boolean;
  concurrencyKey: string;
  childJobIds: Id[];
  needsAttention: boolean;
  compensationJobId: Id;
}

export interface JobEvent {
  seq: Id;
  /** SUBMITTED, DEDUPLICATED, LEASED, RELEASED, COMPLETED, FAILED, RETRY_SCHEDULED, ... */
  type: string;
  at: Timestamp | null;
  principal: string;
  attempt: number;
  fromState: JobState;
  toState: JobState;
  workerId: string;
  leaseDeadline: Timestamp | null;
  error: AttemptError | null;
  runAt: Timestamp | null;
  reason: string;
  traceparent: string;
  attemptStarted: Timestamp | null;
  payloadSha256: Buffer;
  resultSha256: Buffer;
  policyVersion: string;
  policyDigest: Buffer;
  policyText: string;
  relatedJobId: Id;
  limits: Record<string, unknown> | null;
  circuit: Record<string, unknown> | null;
  schedule: Record<string, unknown> | null;
  needsAttention: boolean;
  concurrencyKey: string;
  parentJobId: Id;
}

export interface JobHistory {
  /** The job, without payload. */
  job: Job;
  events: JobEvent[];
}

/**
 * The fencing token of one lease. Send it back exactly as received, `nonce` included: the server
 * checks the nonce, and the lease is bound to the principal that took it.
 */
export interface LeaseToken {
  jobId: Id;
  attempt: number;
  nonce: Buffer;
}

export interface LeasedJob {
  job: Job;
  token: LeaseToken;
  deadline: Timestamp | null;
  checkpoint: Buffer;
  traceparent: string;
  tracestate: string;
}

export interface HeartbeatResult {
  token: LeaseToken;
  leaseLost: boolean;
  deadline: Timestamp | null;
  message: string;
}

/** Converts a Timestamp to a Date (millisecond precision); null stays null. */
export function timestampToDate(ts: Timestamp | null | undefined): Date | null {
  if (!ts) return null;
  return new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6));
}

/** Converts a Duration to milliseconds; null is 0. */
export function durationToMs(d: Duration | null | undefined): number {
  if (!d) return 0;
  return Number(d.seconds) * 1000 + d.nanos / 1e6;
}
