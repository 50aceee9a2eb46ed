// Errors: every failed call rejects with a LedgerqError subclass that carries the gRPC code name
// (`code`, e.g. "INVALID_ARGUMENT"), its number (`grpcCode`) and the server's message unchanged
// (`message`; validation errors name the field, e.g. "queue: must match [A-Za-z0-9._:-]{1,128}").
import { status as GrpcStatus } from '@grpc/grpc-js';

/** The gRPC status code names, as in grpc::StatusCode. */
export type GrpcCodeName =
  | 'OK'
  | 'CANCELLED'
  | 'UNKNOWN'
  | 'INVALID_ARGUMENT'
  | 'DEADLINE_EXCEEDED'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'PERMISSION_DENIED'
  | 'RESOURCE_EXHAUSTED'
  | 'FAILED_PRECONDITION'
  | 'ABORTED'
  | 'OUT_OF_RANGE'
  | 'UNIMPLEMENTED'
  | 'INTERNAL'
  | 'UNAVAILABLE'
  | 'DATA_LOSS'
  | 'UNAUTHENTICATED';

export function codeName(code: number): GrpcCodeName {
  const name = (GrpcStatus as unknown as Record<number, string>)[code];
  return (typeof name === 'string' ? name : 'UNKNOWN') as GrpcCodeName;
}

/** Base class of every error this package throws for a failed call or a refused item. */
export class LedgerqError extends Error {
  /** The gRPC status code name, e.g. "NOT_FOUND". */
  readonly code: GrpcCodeName;
  /** The numeric gRPC status code. */
  readonly grpcCode: number;
  /** The server that answered (or did not), when known. */
  readonly address?: string;

  constructor(grpcCode: number, message: string, address?: string) {
    super(message);
    this.name = new.target.name;
    this.grpcCode = grpcCode;
    this.code = codeName(grpcCode);
    if (address !== undefined) this.address = address;
  }
}

export class InvalidArgumentError extends LedgerqError {}
export class NotFoundError extends LedgerqError {}
/**
 * ALREADY_EXISTS: above all an idempotency key that already names a job submitted with another
 * type or payload. `jobId` is that job's id when the message names it.
 */
export class AlreadyExistsError extends LedgerqError {
  readonly jobId?: string;
  constructor(grpcCode: number, message: string, address?: string) {
    super(grpcCode, message, address);
    const m = /already names job (\d+)/.exec(message);
    if (m) this.jobId = m[1];
  }
}
export class PermissionDeniedError extends LedgerqError {}
/** FAILED_PRECONDITION: e.g. a stale lease token, a job that can no longer be cancelled. */
export class FailedPreconditionError extends LedgerqError {}
export class UnauthenticatedError extends LedgerqError {}
export class ResourceExhaustedError extends LedgerqError {}
/** UNAVAILABLE: no server at the address(es) answered. */
export class UnavailableError extends LedgerqError {}
/** DEADLINE_EXCEEDED: the server did not answer within the timeout (an UnavailableError too). */
export class DeadlineExceededError extends UnavailableError {}
/** CANCELLED: the call was cancelled on this side (e.g. a Lease long-poll when a worker stops). */
export class CancelledError extends LedgerqError {}
export class InternalError extends LedgerqError {}

const CLASSES: Partial<Record<number, new (c: number, m: string, a?: string) => LedgerqError>> = {
  [GrpcStatus.INVALID_ARGUMENT]: InvalidArgumentError,
  [GrpcStatus.NOT_FOUND]: NotFoundError,
  [GrpcStatus.ALREADY_EXISTS]: AlreadyExistsError,
  [GrpcStatus.PERMISSION_DENIED]: PermissionDeniedError,
  [GrpcStatus.FAILED_PRECONDITION]: FailedPreconditionError,
  [GrpcStatus.UNAUTHENTICATED]: UnauthenticatedError,
  [GrpcStatus.RESOURCE_EXHAUSTED]: ResourceExhaustedError,
  [GrpcStatus.UNAVAILABLE]: UnavailableError,
  [GrpcStatus.DEADLINE_EXCEEDED]: DeadlineExceededError,
  [GrpcStatus.CANCELLED]: CancelledError,
  [GrpcStatus.INTERNAL]: InternalError,
};

/** The error for a gRPC status code and message (e.g. an ItemError of a batch). */
export function errorFor(grpcCode: number, message: string, address?: string): LedgerqError {
  const Cls = CLASSES[grpcCode] ?? LedgerqError;
  return new Cls(grpcCode, message, address);
}

interface GrpcLikeError {
  code?: number;
  details?: string;
  message?: string;
}

/** Converts an error from @grpc/grpc-js, keeping the server's message intact. */
export function fromGrpcError(err: unknown, address: string): LedgerqError {
  if (err instanceof LedgerqError) return err;
  const e = (err ?? {}) as GrpcLikeError;
  const code = typeof e.code === 'number' ? e.code : GrpcStatus.UNKNOWN;
  const details = e.details ?? e.message ?? String(err);
  switch (code) {
    case GrpcStatus.UNAVAILABLE:
      return errorFor(code, `server ${address} unavailable: ${details}`, address);
    case GrpcStatus.DEADLINE_EXCEEDED:
      return errorFor(code, `server ${address} did not answer in time (${details})`, address);
    default:
      return errorFor(code, details, address);
  }
}

// ---------------------------------------------------------------------------------------------
// Outcomes a job handler throws.

export interface JobFailureOptions {
  /** Stored with the attempt's error (at most 16 KiB; longer is cut). Default: the stack. */
  details?: string;
  /** The underlying error, if any. */
  cause?: unknown;
}

/**
 * Thrown by a handler: the job fails permanently and goes straight to the dead letters (DEAD,
 * dead_reason "permanent_error") with this code and message.
 */
export class PermanentError extends Error {
  readonly code: string;
  readonly details?: string;
  constructor(code: string, message: string, options: JobFailureOptions = {}) {
    super(message);
    this.name = 'PermanentError';
    this.code = code;
    if (options.details !== undefined) this.details = options.details;
    if (options.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

export interface TransientErrorOptions extends JobFailureOptions {
  /**
   * Run the retry no sooner than this (FailRequest.retry_after); the server honours it within
   * the queue's backoff cap. Without it the retry waits the usual backoff with jitter.
   */
  retryAfterMs?: number;
}

/**
 * Thrown by a handler: the attempt fails transiently and the job is retried (after
 * `retryAfterMs`, or the backoff) while attempts remain. Any other thrown value is treated the
 * same way, with the error's name as its code.
 */
export class TransientError extends Error {
  readonly code: string;
  readonly details?: string;
  readonly retryAfterMs?: number;
  constructor(code: string, message: string, options: TransientErrorOptions = {}) {
    super(message);
    this.name = 'TransientError';
    this.code = code;
    if (options.details !== undefined) this.details = options.details;
    if (options.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs;
    if (options.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

/** An InvalidArgumentError raised on this side, before anything is sent. */
export function invalidArgument(message: string): InvalidArgumentError {
  return new InvalidArgumentError(GrpcStatus.INVALID_ARGUMENT, message);
}
