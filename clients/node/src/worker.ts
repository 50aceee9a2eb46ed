// The worker SDK (as client/worker.h is for C++). Register a handler per job type, then run():
// it long-polls Lease with at most `concurrency` jobs running at once, heartbeats every running
// lease at a third of its duration from one timer (one Heartbeat call for all leases due), and
// reports each outcome with the job's lease token, sent back exactly as leased (nonce included).
// stop(), SIGTERM or SIGINT stop leasing, let running handlers finish (up to drainTimeoutMs),
// give the rest back with Release, and make run() resolve.
import * as os from 'node:os';
import { Client, ConnectionOptions, Payload, encodePayload } from './client';
import { status as GrpcStatus } from '@grpc/grpc-js';
import {
  FailedPreconditionError,
  LedgerqError,
  PermanentError,
  TransientError,
  invalidArgument,
} from './errors';
import type { HeartbeatResult, Job, LeaseToken, LeasedJob, Timestamp } from './types';
import { timestampToDate } from './types';

export interface WorkerOptions extends ConnectionOptions {
  /** Queues to lease from (at least one). */
  queues: string | string[];
  /** Jobs running at once; default 4. */
  concurrency?: number;
  /** Lease duration in seconds (1..43200); default 30. Heartbeats run at a third of it. */
  leaseSeconds?: number;
  /** Default hostname:pid. */
  workerId?: string;
  /** How long each Lease call long-polls, in ms (0..10000); default 10000. */
  pollWaitMs?: number;
  /** On stop, how long running handlers may take before their jobs are released; default 30000. */
  drainTimeoutMs?: number;
  /** run() installs SIGTERM and SIGINT handlers that stop the worker; default true. */
  handleSignals?: boolean;
  /** Called for every job once its outcome was reported (or the report failed). */
  onDone?: (job: JobContext, outcome: Outcome, error?: LedgerqError) => void;
  /** Where warnings go (the server unavailable, a report refused); default console.warn. */
  log?: (message: string) => void;
}

/** What happened to a job, as reported to the server. */
export type Outcome =
  | { kind: 'complete'; result: Buffer }
  | { kind: 'fail'; permanent: boolean; code: string; message: string; details: string; retryAfterMs?: number }
  | { kind: 'release'; reason: string };

export type Handler = (job: JobContext) => Payload | Promise<Payload>;

const MAX_CODE_BYTES = 128;
const MAX_MESSAGE_BYTES = 4096;
const MAX_DETAILS_BYTES = 16 * 1024;
const MAX_RESULT_BYTES = 1 << 20;
const MAX_POLL_WAIT_MS = 10_000;

/** Cuts a string to at most `max` UTF-8 bytes, at a character boundary. */
export function truncateUtf8(s: string, max: number): string {
  const b = Buffer.from(s, 'utf8');
  if (b.length <= max) return s;
  let n = max;
  while (n > 0 && (b[n] & 0xc0) === 0x80) n--;
  return b.subarray(0, n).toString('utf8');
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** A leased job as a handler sees it. */
export class JobContext {
  /** The whole LeasedJob as the server sent it. */
  readonly leased: LeasedJob;
  private readonly worker: Worker;
  private readonly abort = new AbortController();
  private lost = false;
  /** @internal when the next heartbeat is due (ms, Date.now()). */
  nextHeartbeatAt: number;
  /** @internal the job was released (drain timeout) or its lease lost: no report. */
  givenBack = false;

  /** @internal */
  constructor(worker: Worker, leased: LeasedJob, heartbeatEveryMs: number) {
    this.worker = worker;
    this.leased = leased;
    this.nextHeartbeatAt = Date.now() + heartbeatEveryMs;
  }

  get job(): Job {
    return this.leased.job;
  }
  get id(): string {
    return this.leased.job.id;
  }
  get queue(): string {
    return this.leased.job.queue;
  }
  get type(): string {
    return this.leased.job.type;
  }
  get payload(): Buffer {
    return this.leased.job.payload;
  }
  /** This lease's attempt number (1 for the first lease). */
  get attempt(): number {
    return this.leased.token.attempt;
  }
  /** The fencing token, exactly as leased. */
  get token(): LeaseToken {
    return this.leased.token;
  }
  /** The server's estimate of the lease's deadline (extended by heartbeats). */
  get deadline(): Date | null {
    return timestampToDate(this.leased.deadline);
  }
  /** This attempt's W3C traceparent (the job's trace id, a span id of its own). */
  get traceparent(): string {
    return this.leased.traceparent || this.leased.job.traceparent;
  }
  get tracestate(): string {
    return this.leased.tracestate || this.leased.job.tracestate;
  }
  /** The latest checkpoint an earlier attempt (or this one) saved; undefined when none. */
  get previousCheckpoint(): Buffer | undefined {
    return this.leased.checkpoint.length > 0 ? this.leased.checkpoint : undefined;
  }
  /** The lease was lost (expired or moved on): whatever this attempt reports will be refused. */
  get leaseLost(): boolean {
    return this.lost;
  }
  /** The worker is stopping: finish quickly. */
  get stopping(): boolean {
    return this.worker.stopping;
  }
  /** Aborted when the lease is lost or the worker gives the job back at the drain timeout. */
  get signal(): AbortSignal {
    return this.abort.signal;
  }
  /** The payload as UTF-8 text. */
  text(): string {
    return this.payload.toString('utf8');
  }
  /** The payload parsed as JSON. */
  json<T = unknown>(): T {
    return JSON.parse(this.text()) as T;
  }

  /**
   * Saves a checkpoint durably, right away (a Heartbeat with set_checkpoint), for later
   * attempts (≤ 64 KiB; a Buffer, a string, or anything else as JSON). Rejects when the call
   * fails, or with FailedPreconditionError when the lease is lost.
   */
  async checkpoint(data: Payload): Promise<void> {
    const bytes = encodePayload(data, 'checkpoint');
    await this.worker.saveCheckpoint(this, bytes);
    (this.leased as { checkpoint: Buffer }).checkpoint = bytes;
  }

  /** @internal */
  markLost(message: string): void {
    if (this.lost) return;
    this.lost = true;
    this.abort.abort(new Error(message || `lease of job ${this.id} lost`));
  }

  /** @internal */
  giveBack(reason: string): void {
    this.givenBack = true;
    if (!this.abort.signal.aborted) this.abort.abort(new Error(reason));
  }
}

interface Running {
  ctx: JobContext;
  /** handler -> report; never rejects */
  done: Promise<void>;
  phase: 'handler' | 'report' | 'done';
}

export class Worker {
  readonly workerId: string;
  readonly queues: readonly string[];
  readonly concurrency: number;
  readonly leaseSeconds: number;
  private readonly client: Client;
  private readonly options: WorkerOptions;
  private readonly handlers = new Map<string, Handler>();
  private fallback?: Handler;
  private readonly running = new Set<Running>();
  private readonly stopController = new AbortController();
  private drainTimeoutMs: number;
  private drainCut?: () => void;
  private slotWaiter?: () => void;
  private heartbeatInFlight = false;
  private readonly givingBack: Promise<void>[] = [];
  private runPromise?: Promise<void>;
  private fatal?: LedgerqError;
  private readonly log: (message: string) => void;

  constructor(options: WorkerOptions) {
    if (!options || typeof options !== 'object') throw invalidArgument('options: give { addresses, queues }');
    this.options = options;
    const queues = Array.isArray(options.queues) ? options.queues : [options.queues];
    this.queues = Object.freeze(queues.filter((q) => !!q));
    if (this.queues.length === 0) throw invalidArgument('queues: give at least one queue');
    this.concurrency = options.concurrency ?? 4;
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1 || this.concurrency > 256) {
      throw invalidArgument('concurrency: must be an integer between 1 and 256');
    }
    this.leaseSeconds = options.leaseSeconds ?? 30;
    if (!(this.leaseSeconds >= 1 && this.leaseSeconds <= 43_200)) {
      throw invalidArgument('leaseSeconds: must be between 1 and 43200');
    }
    const wait = options.pollWaitMs ?? MAX_POLL_WAIT_MS;
    if (!(wait >= 0 && wait <= MAX_POLL_WAIT_MS)) throw invalidArgument('pollWaitMs: must be between 0 and 10000');
    this.drainTimeoutMs = options.drainTimeoutMs ?? 30_000;
    if (!(this.drainTimeoutMs >= 0)) throw invalidArgument('drainTimeoutMs: must be >= 0');
    this.workerId = options.workerId || `${os.hostname()}:${process.pid}`;
    this.log = options.log ?? ((m) => console.warn(`ledgerq worker ${this.workerId}: ${m}`));
    this.client = new Client(options);
  }

  /** Registers the handler of a job type. Its return value completes the job. */
  handle(type: string, handler: Handler): this {
    if (typeof handler !== 'function') throw invalidArgument(`handle(${JSON.stringify(type)}): give a function`);
    this.handlers.set(type, handler);
    return this;
  }

  /**
   * The handler for types without their own. Without it such jobs fail transiently with code
   * NO_HANDLER, so that a worker that knows the type may take the retry.
   */
  handleAny(handler: Handler): this {
    this.fallback = handler;
    return this;
  }

  /** True once stop() was called (or a signal came). */
  get stopping(): boolean {
    return this.stopController.signal.aborted;
  }

  /** Jobs whose handler or report is running now. */
  get runningJobs(): number {
    return this.running.size;
  }

  /**
   * Leases and runs jobs until stop() (or SIGTERM/SIGINT), then drains and resolves. Rejects
   * only when the server refuses the worker itself (UNAUTHENTICATED, PERMISSION_DENIED,
   * INVALID_ARGUMENT from Lease), after draining. A worker runs once.
   */
  run(): Promise<void> {
    if (this.runPromise) return Promise.reject(new Error('Worker.run(): a worker runs once'));
    this.runPromise = this.runInner();
    return this.runPromise;
  }

  /**
   * Stops leasing; running handlers may finish for up to drainTimeoutMs (the option, or the one
   * given here if shorter), then their jobs are released. Resolves when run() has finished.
   */
  stop(options: { drainTimeoutMs?: number } = {}): Promise<void> {
    if (options.drainTimeoutMs !== undefined && options.drainTimeoutMs < this.drainTimeoutMs) {
      this.drainTimeoutMs = Math.max(0, options.drainTimeoutMs);
      this.drainCut?.();
    }
    if (!this.stopping) this.stopController.abort();
    this.slotWaiter?.();
    return this.runPromise ? this.runPromise.catch(() => undefined) : Promise.resolve();
  }

  // --- The loop -------------------------------------------------------------------------------

  private async runInner(): Promise<void> {
    const heartbeatEveryMs = (this.leaseSeconds * 1000) / 3;
    const tick = Math.min(1000, Math.max(50, (this.leaseSeconds * 1000) / 10));
    const timer = setInterval(() => void this.heartbeatDue(), tick);
    const signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT'];
    let signalled = 0;
    const onSignal = (sig: NodeJS.Signals) => {
      signalled++;
      if (signalled === 1) {
        this.log(`${sig}: stopping; running jobs may finish for ${this.drainTimeoutMs} ms (again: release them now)`);
        void this.stop();
      } else {
        void this.stop({ drainTimeoutMs: 0 });
      }
    };
    if (this.options.handleSignals !== false) for (const s of signals) process.on(s, onSignal);
    try {
      await this.leaseLoop(heartbeatEveryMs);
      await this.drain();
    } finally {
      clearInterval(timer);
      if (this.options.handleSignals !== false) for (const s of signals) process.removeListener(s, onSignal);
      this.client.close();
    }
    if (this.fatal) throw this.fatal;
  }

  private async leaseLoop(heartbeatEveryMs: number): Promise<void> {
    let failures = 0;
    const stop = this.stopController.signal;
    while (!this.stopping) {
      if (this.running.size >= this.concurrency) {
        await new Promise<void>((resolve) => (this.slotWaiter = resolve));
        this.slotWaiter = undefined;
        continue;
      }
      let leased: LeasedJob[];
      try {
        leased = await this.client.lease(
          {
            queues: [...this.queues],
            workerId: this.workerId,
            maxJobs: this.concurrency - this.running.size,
            leaseDurationMs: this.leaseSeconds * 1000,
            waitMs: this.options.pollWaitMs ?? MAX_POLL_WAIT_MS,
          },
          { signal: stop },
        );
        failures = 0;
      } catch (e) {
        if (this.stopping) break;
        const err = e as LedgerqError;
        if (err.code === 'UNAUTHENTICATED' || err.code === 'PERMISSION_DENIED' || err.code === 'INVALID_ARGUMENT') {
          this.log(`Lease refused, stopping: ${err.code}: ${err.message}`);
          this.fatal = err;
          this.stopController.abort();
          break;
        }
        failures++;
        const backoff = Math.min(5000, 250 * 2 ** Math.min(failures, 5)) * (0.5 + Math.random() / 2);
        if (failures === 1 || failures % 10 === 0) this.log(`Lease failed (${err.code}: ${err.message}); retrying`);
        await sleep(backoff, stop);
        continue;
      }
      for (const lj of leased) {
        if (this.stopping) {
          // Leased as the worker stopped: give it straight back (drain() waits for it).
          this.givingBack.push(
            this.client.release(lj.token).then(
              () => undefined,
              (e: LedgerqError) => this.log(`job ${lj.job.id}: release failed: ${e.code}: ${e.message}`),
            ),
          );
          continue;
        }
        this.start(lj, heartbeatEveryMs);
      }
    }
  }

  private start(leased: LeasedJob, heartbeatEveryMs: number): void {
    const ctx = new JobContext(this, leased, heartbeatEveryMs);
    const entry: Running = { ctx, phase: 'handler', done: Promise.resolve() };
    entry.done = this.process(entry).finally(() => {
      entry.phase = 'done';
      this.running.delete(entry);
      this.slotWaiter?.();
    });
    this.running.add(entry);
  }

  private async process(entry: Running): Promise<void> {
    const ctx = entry.ctx;
    const handler = this.handlers.get(ctx.type) ?? this.fallback;
    let outcome: Outcome;
    if (!handler) {
      outcome = {
        kind: 'fail',
        permanent: false,
        code: 'NO_HANDLER',
        message: `worker ${this.workerId} has no handler for type ${ctx.type}`,
        details: '',
      };
    } else {
      try {
        const value = await handler(ctx);
        const result = encodePayload(value, 'result');
        outcome =
          result.length > MAX_RESULT_BYTES
            ? {
                kind: 'fail',
                permanent: false,
                code: 'RESULT_TOO_LARGE',
                message: `result: ${result.length} bytes exceeds the limit of ${MAX_RESULT_BYTES} bytes`,
                details: '',
              }
            : { kind: 'complete', result };
      } catch (e) {
        outcome = failureOutcome(e);
      }
    }
    if (ctx.givenBack) return; // released at the drain timeout: the server has moved on
    entry.phase = 'report';
    const err = await this.report(ctx, outcome);
    if (err && !(err.code === 'FAILED_PRECONDITION' && ctx.leaseLost)) {
      this.log(`job ${ctx.id} attempt ${ctx.attempt}: reporting ${outcome.kind} failed: ${err.code}: ${err.message}`);
    }
    this.notifyDone(ctx, outcome, err);
  }

  private notifyDone(ctx: JobContext, outcome: Outcome, err?: LedgerqError): void {
    try {
      this.options.onDone?.(ctx, outcome, err);
    } catch (e) {
      this.log(`onDone threw: ${(e as Error)?.stack ?? String(e)}`);
    }
  }

  /** Reports an outcome; retries while the server is unavailable (a repeat is harmless). */
  private async report(ctx: JobContext, outcome: Outcome): Promise<LedgerqError | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        if (outcome.kind === 'complete') {
          try {
            await this.client.complete(ctx.token, outcome.result);
          } catch (e) {
            if ((e as LedgerqError).code !== 'INVALID_ARGUMENT') throw e;
            // The server refused the result itself: fail the attempt instead, saying why.
            const msg = (e as LedgerqError).message;
            outcome = { kind: 'fail', permanent: false, code: 'RESULT_REJECTED', message: msg, details: '' };
            continue;
          }
        } else if (outcome.kind === 'fail') {
          await this.client.fail(ctx.token, {
            kind: outcome.permanent ? 'permanent' : 'transient',
            code: truncateUtf8(outcome.code, MAX_CODE_BYTES),
            message: truncateUtf8(outcome.message, MAX_MESSAGE_BYTES),
            details: truncateUtf8(outcome.details, MAX_DETAILS_BYTES),
            ...(outcome.retryAfterMs !== undefined ? { retryAfterMs: outcome.retryAfterMs } : {}),
          });
        } else {
          await this.client.release(ctx.token);
        }
        return undefined;
      } catch (e) {
        const err = e as LedgerqError;
        if (!(err instanceof LedgerqError)) return new LedgerqError(GrpcStatus.UNKNOWN, String(e));
        // UNAVAILABLE and DEADLINE_EXCEEDED (an UnavailableError too): try again for ~30 s.
        if (!(err.code === 'UNAVAILABLE' || err.code === 'DEADLINE_EXCEEDED') || attempt >= 60) return err;
        await sleep(500);
      }
    }
  }

  private async drain(): Promise<void> {
    if (this.running.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      const began = Date.now();
      const cut = new Promise<void>((resolve) => {
        // stop() with a shorter drain timeout re-arms the timer for what is left of it.
        const arm = () => {
          clearTimeout(timer);
          timer = setTimeout(resolve, Math.max(0, began + this.drainTimeoutMs - Date.now()));
        };
        this.drainCut = arm;
        arm();
      });
      await Promise.race([Promise.all([...this.running].map((r) => r.done)), cut]);
      clearTimeout(timer);
      this.drainCut = undefined;
    }
    // Jobs whose handler is still running: give them back now, so another worker takes them.
    const releases: Promise<unknown>[] = [];
    for (const r of this.running) {
      if (r.phase !== 'handler') continue;
      r.ctx.giveBack(`worker ${this.workerId} stopped: job released after the drain timeout`);
      releases.push(
        this.report(r.ctx, { kind: 'release', reason: 'drain_timeout' }).then((err) => {
          if (err) this.log(`job ${r.ctx.id}: release failed: ${err.code}: ${err.message}`);
          this.notifyDone(r.ctx, { kind: 'release', reason: 'drain_timeout' }, err);
        }),
      );
      this.running.delete(r);
    }
    await Promise.all([...releases, ...this.givingBack]);
    // Reports already under way finish (bounded by report()'s retries).
    await Promise.all([...this.running].filter((r) => r.phase === 'report').map((r) => r.done));
  }

  // --- Heartbeats -------------------------------------------------------------------------------

  private async heartbeatDue(): Promise<void> {
    if (this.heartbeatInFlight) return;
    const now = Date.now();
    const due = [...this.running]
      .map((r) => r.ctx)
      .filter((c) => !c.givenBack && !c.leaseLost && c.nextHeartbeatAt <= now);
    if (due.length === 0) return;
    this.heartbeatInFlight = true;
    try {
      for (let i = 0; i < due.length; i += 1000) {
        const chunk = due.slice(i, i + 1000);
        const results = await this.client.heartbeat(
          chunk.map((c) => c.token),
          { extendByMs: this.leaseSeconds * 1000 },
        );
        this.applyHeartbeat(chunk, results);
      }
    } catch (e) {
      // Tried again at the next tick: the leases stay due.
      const err = e as LedgerqError;
      this.log(`Heartbeat failed (${err.code}: ${err.message}); retrying`);
    } finally {
      this.heartbeatInFlight = false;
    }
  }

  private applyHeartbeat(jobs: JobContext[], results: HeartbeatResult[]): void {
    const every = (this.leaseSeconds * 1000) / 3;
    for (let i = 0; i < jobs.length && i < results.length; i++) {
      const r = results[i];
      if (r.leaseLost) {
        jobs[i].markLost(r.message);
      } else {
        jobs[i].nextHeartbeatAt = Date.now() + every;
        if (r.deadline) (jobs[i].leased as { deadline: Timestamp | null }).deadline = r.deadline;
      }
    }
  }

  /** @internal */
  async saveCheckpoint(ctx: JobContext, bytes: Buffer): Promise<void> {
    const [r] = await this.client.heartbeat([ctx.token], { extendByMs: this.leaseSeconds * 1000, checkpoint: bytes });
    this.applyHeartbeat([ctx], r ? [r] : []);
    if (!r || r.leaseLost) {
      const msg = r?.message || `lease of job ${ctx.id} is lost`;
      throw new FailedPreconditionError(GrpcStatus.FAILED_PRECONDITION, msg, this.client.address);
    }
  }
}

/** The outcome of a thrown value (see PermanentError and TransientError). */
export function failureOutcome(e: unknown): Outcome {
  if (e instanceof PermanentError) {
    return { kind: 'fail', permanent: true, code: e.code, message: e.message, details: e.details ?? e.stack ?? '' };
  }
  if (e instanceof TransientError) {
    const details = e.details ?? e.stack ?? '';
    const o: Outcome = { kind: 'fail', permanent: false, code: e.code, message: e.message, details };
    if (e.retryAfterMs !== undefined) o.retryAfterMs = e.retryAfterMs;
    return o;
  }
  if (e instanceof Error) {
    return { kind: 'fail', permanent: false, code: e.name || 'Error', message: e.message, details: e.stack ?? '' };
  }
  return { kind: 'fail', permanent: false, code: 'THROWN', message: String(e), details: '' };
}
