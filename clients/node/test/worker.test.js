'use strict';
// Worker against a real ledgerqd: outcomes, retries, checkpoints, heartbeats, lost leases,
// concurrency, graceful stop and the lease token's nonce.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const lq = require('../');
const { startDaemon, waitFor, sleep } = require('./helpers/daemon');

const FAST_RETRY = { backoffBaseMs: 20, backoffCapMs: 50 };
const TERMINAL = new Set(['JOB_STATE_SUCCEEDED', 'JOB_STATE_DEAD', 'JOB_STATE_CANCELLED']);

describe('Worker', () => {
  let daemon;
  let client;

  before(async () => {
    daemon = await startDaemon();
    client = new lq.Client({ addresses: daemon.address });
  });

  after(async () => {
    client?.close();
    await daemon?.stop();
  });

  /** A worker on one queue, running in the background; the test stops it. */
  function startWorker(queue, handlers, options = {}) {
    const done = [];
    const w = new lq.Worker({
      addresses: daemon.address,
      queues: [queue],
      pollWaitMs: 2000,
      handleSignals: false,
      log: () => {},
      onDone: (job, outcome, error) => done.push({ job, outcome, error }),
      ...options,
    });
    for (const [type, h] of Object.entries(handlers)) w.handle(type, h);
    const running = w.run();
    return { w, running, done };
  }

  async function finished(id, timeoutMs = 10_000) {
    return waitFor(
      async () => {
        const j = await client.get(id);
        return TERMINAL.has(j.state) ? j : null;
      },
      { timeoutMs, what: `job ${id} to finish` },
    );
  }

  it('completes a job with the handler result (objects as JSON)', async () => {
    const { w, running } = startWorker('w.ok', {
      welcome: async (job) => {
        assert.equal(job.attempt, 1);
        assert.equal(job.previousCheckpoint, undefined);
        assert.equal(job.leaseLost, false);
        assert.match(job.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/);
        return { sent: true, to: job.json().to };
      },
      text: async () => 'plain text',
      bytes: async () => Buffer.from([7, 8, 9]),
    });
    try {
      const a = await client.enqueue({ queue: 'w.ok', type: 'welcome', payload: { to: 'ada@example.com' } });
      const b = await client.enqueue({ queue: 'w.ok', type: 'text' });
      const c = await client.enqueue({ queue: 'w.ok', type: 'bytes' });
      const ja = await finished(a.job.id);
      assert.equal(ja.state, 'JOB_STATE_SUCCEEDED');
      assert.deepEqual(JSON.parse(ja.result.toString()), { sent: true, to: 'ada@example.com' });
      assert.equal(ja.attempts, 1);
      assert.equal((await finished(b.job.id)).result.toString(), 'plain text');
      assert.deepEqual((await finished(c.job.id)).result, Buffer.from([7, 8, 9]));
      const h = await client.history(a.job.id);
      assert.deepEqual(
        h.events.map((e) => e.type),
        ['SUBMITTED', 'LEASED', 'COMPLETED'],
      );
      assert.equal(h.events[1].workerId, w.workerId);
    } finally {
      await w.stop();
      await running;
    }
  });

  it('a thrown Error fails the attempt transiently; the retry succeeds (attempts 2)', async () => {
    const seen = [];
    const { w, running } = startWorker('w.retry', {
      flaky: async (job) => {
        seen.push(job.attempt);
        if (job.attempt === 1) throw new TypeError('connection reset by peer');
        return 'second time lucky';
      },
    });
    try {
      const r = await client.enqueue({ queue: 'w.retry', type: 'flaky', retryPolicy: FAST_RETRY });
      const job = await finished(r.job.id);
      assert.equal(job.state, 'JOB_STATE_SUCCEEDED');
      assert.equal(job.attempts, 2);
      assert.deepEqual(seen, [1, 2]);
      assert.equal(job.result.toString(), 'second time lucky');
      assert.equal(job.errors.length, 1);
      const e = job.errors[0];
      assert.equal(e.kind, 'ERROR_KIND_TRANSIENT');
      assert.equal(e.code, 'TypeError');
      assert.equal(e.message, 'connection reset by peer');
      assert.match(e.details, /TypeError: connection reset by peer\n\s+at /, 'details hold the stack');
      assert.equal(e.attempt, 1);
      const types = (await client.history(r.job.id)).events.map((ev) => ev.type);
      assert.deepEqual(types, ['SUBMITTED', 'LEASED', 'FAILED', 'RETRY_SCHEDULED', 'LEASED', 'COMPLETED']);
    } finally {
      await w.stop();
      await running;
    }
  });

  it('PermanentError dead-letters the job with its code; long details are cut to 16 KiB', async () => {
    const { w, running } = startWorker('w.perm', {
      charge: async () => {
        throw new lq.PermanentError('CARD_DECLINED', 'the card was declined', { details: 'é'.repeat(20_000) });
      },
    });
    try {
      const r = await client.enqueue({ queue: 'w.perm', type: 'charge', maxAttempts: 5 });
      const job = await finished(r.job.id);
      assert.equal(job.state, 'JOB_STATE_DEAD');
      assert.equal(job.deadReason, 'permanent_error');
      assert.equal(job.attempts, 1, 'no retry after a permanent failure');
      assert.equal(job.errors[0].kind, 'ERROR_KIND_PERMANENT');
      assert.equal(job.errors[0].code, 'CARD_DECLINED');
      assert.equal(job.errors[0].message, 'the card was declined');
      const bytes = Buffer.byteLength(job.errors[0].details);
      assert.ok(bytes <= 16 * 1024 && bytes > 16 * 1024 - 4, `details are ${bytes} bytes`);
      assert.ok(!job.errors[0].details.includes('\ufffd'), 'cut at a character boundary');
    } finally {
      await w.stop();
      await running;
    }
  });

  it('TransientError retryAfterMs is honoured', async () => {
    const leasedAt = [];
    const { w, running } = startWorker('w.after', {
      later: async (job) => {
        leasedAt.push(Date.now());
        if (job.attempt === 1) throw new lq.TransientError('RATE_LIMITED', 'slow down', { retryAfterMs: 1500 });
        return 'ok';
      },
    });
    try {
      // Its own backoff would retry within 20 ms; retry_after wins, within the 60 s cap.
      const r = await client.enqueue({
        queue: 'w.after',
        type: 'later',
        retryPolicy: { backoffBaseMs: 20, backoffCapMs: 60_000 },
      });
      const job = await finished(r.job.id);
      assert.equal(job.state, 'JOB_STATE_SUCCEEDED');
      assert.equal(job.attempts, 2);
      assert.equal(job.errors[0].code, 'RATE_LIMITED');
      const events = (await client.history(r.job.id)).events;
      const failed = events.find((e) => e.type === 'RETRY_SCHEDULED');
      const delayMs = lq.timestampToDate(failed.runAt) - lq.timestampToDate(failed.at);
      assert.ok(delayMs >= 1400, `the retry was scheduled ${delayMs} ms later`);
      assert.ok(leasedAt[1] - leasedAt[0] >= 1400, `the retry ran ${leasedAt[1] - leasedAt[0]} ms later`);
    } finally {
      await w.stop();
      await running;
    }
  });

  it('a checkpoint saved by attempt 1 is seen by attempt 2', async () => {
    const seen = [];
    const { w, running } = startWorker('w.ckpt', {
      import: async (job) => {
        seen.push(job.previousCheckpoint ? job.previousCheckpoint.toString() : null);
        if (job.attempt === 1) {
          await job.checkpoint({ rowsDone: 500 });
          assert.equal(job.previousCheckpoint.toString(), '{"rowsDone":500}');
          throw new Error('crashed half-way');
        }
        const from = JSON.parse(job.previousCheckpoint.toString()).rowsDone;
        return { resumedFrom: from };
      },
    });
    try {
      const r = await client.enqueue({ queue: 'w.ckpt', type: 'import', retryPolicy: FAST_RETRY });
      const job = await finished(r.job.id);
      assert.equal(job.state, 'JOB_STATE_SUCCEEDED');
      assert.deepEqual(seen, [null, '{"rowsDone":500}']);
      assert.deepEqual(JSON.parse(job.result.toString()), { resumedFrom: 500 });
    } finally {
      await w.stop();
      await running;
    }
  });

  it('heartbeats keep a lease alive past its duration', async () => {
    const { w, running } = startWorker(
      'w.hb',
      {
        slow: async (job) => {
          await sleep(3200); // 1.6 leases: heartbeats every 667 ms extend it
          return { leaseLost: job.leaseLost };
        },
      },
      { leaseSeconds: 2 },
    );
    try {
      const r = await client.enqueue({ queue: 'w.hb', type: 'slow', maxAttempts: 1 });
      const job = await finished(r.job.id);
      assert.equal(job.state, 'JOB_STATE_SUCCEEDED');
      assert.equal(job.attempts, 1);
      assert.deepEqual(JSON.parse(job.result.toString()), { leaseLost: false });
    } finally {
      await w.stop();
      await running;
    }
  });

  it('a lost lease sets job.leaseLost and aborts job.signal; the late report is refused', async () => {
    let ctx;
    const { w, running, done } = startWorker(
      'w.lost',
      {
        stuck: async (job) => {
          ctx = job;
          // Blocks the event loop: no heartbeat goes out and the 1 s lease expires.
          const until = Date.now() + 2500;
          while (Date.now() < until);
          await waitFor(() => job.leaseLost, { timeoutMs: 5000, what: 'leaseLost' });
          return 'too late';
        },
      },
      { leaseSeconds: 1 },
    );
    try {
      const r = await client.enqueue({ queue: 'w.lost', type: 'stuck', maxAttempts: 1 });
      const job = await finished(r.job.id);
      assert.equal(job.state, 'JOB_STATE_DEAD');
      assert.equal(job.deadReason, 'lease_expired');
      await waitFor(() => done.length === 1, { what: 'the report' });
      assert.equal(ctx.leaseLost, true);
      assert.equal(ctx.signal.aborted, true);
      assert.ok(done[0].error instanceof lq.FailedPreconditionError);
    } finally {
      await w.stop();
      await running;
    }
  });

  it('runs at most `concurrency` jobs at once', async () => {
    let now = 0;
    let max = 0;
    const { w, running } = startWorker(
      'w.conc',
      {
        work: async () => {
          now++;
          max = Math.max(max, now);
          await sleep(150);
          now--;
        },
      },
      { concurrency: 3 },
    );
    try {
      const results = await client.enqueueBatch(Array.from({ length: 9 }, () => ({ queue: 'w.conc', type: 'work' })));
      for (const res of results) assert.equal((await finished(res.job.id)).state, 'JOB_STATE_SUCCEEDED');
      assert.equal(max, 3);
    } finally {
      await w.stop();
      await running;
    }
  });

  it('a type without a handler fails transiently with NO_HANDLER', async () => {
    const { w, running } = startWorker('w.nohandler', {});
    try {
      const r = await client.enqueue({ queue: 'w.nohandler', type: 'unknown', maxAttempts: 1 });
      const job = await finished(r.job.id);
      assert.equal(job.state, 'JOB_STATE_DEAD');
      assert.equal(job.errors[0].code, 'NO_HANDLER');
    } finally {
      await w.stop();
      await running;
    }
  });

  it('stop() lets a running handler finish (SUCCEEDED) and leases nothing more', async () => {
    let started;
    const handlerStarted = new Promise((r) => (started = r));
    const { w, running } = startWorker(
      'w.stop',
      {
        slow: async (job) => {
          started();
          await sleep(800);
          return { stopping: job.stopping };
        },
      },
      { concurrency: 1, pollWaitMs: 10_000 },
    );
    const first = await client.enqueue({ queue: 'w.stop', type: 'slow' });
    await handlerStarted;
    const second = await client.enqueue({ queue: 'w.stop', type: 'slow' });
    const t0 = Date.now();
    await w.stop();
    await running;
    assert.ok(Date.now() - t0 >= 500, 'stop() waited for the handler');
    const job = await client.get(first.job.id);
    assert.equal(job.state, 'JOB_STATE_SUCCEEDED');
    assert.deepEqual(JSON.parse(job.result.toString()), { stopping: true });
    assert.equal((await client.get(second.job.id)).state, 'JOB_STATE_READY');
    await client.cancel(second.job.id, 'test done');
  });

  it('stop() with an idle worker returns at once, though Lease long-polls for 10 s', async () => {
    const { w, running } = startWorker('w.idle', {}, { pollWaitMs: 10_000 });
    await sleep(300);
    const t0 = Date.now();
    await w.stop();
    await running;
    assert.ok(Date.now() - t0 < 2000, `stop took ${Date.now() - t0} ms`);
  });

  it('past the drain timeout, running jobs are released for another worker', async () => {
    let started;
    const handlerStarted = new Promise((r) => (started = r));
    let sawAbort = false;
    const { w, running, done } = startWorker(
      'w.drain',
      {
        forever: async (job) => {
          started();
          await new Promise((resolve) => job.signal.addEventListener('abort', resolve));
          sawAbort = true;
          return 'ignored';
        },
      },
      { drainTimeoutMs: 300 },
    );
    const r = await client.enqueue({ queue: 'w.drain', type: 'forever' });
    await handlerStarted;
    const t0 = Date.now();
    await w.stop();
    await running;
    assert.ok(Date.now() - t0 < 3000);
    assert.equal(sawAbort, true);
    assert.equal(done.length, 1);
    assert.equal(done[0].outcome.kind, 'release');
    assert.equal(done[0].error, undefined);
    const h = await client.history(r.job.id);
    assert.ok(h.events.some((e) => e.type === 'RELEASED'));
    // Another worker takes it.
    const second = startWorker('w.drain', { forever: async () => 'done by the second worker' });
    try {
      const job = await finished(r.job.id);
      assert.equal(job.state, 'JOB_STATE_SUCCEEDED');
      assert.equal(job.result.toString(), 'done by the second worker');
    } finally {
      await second.w.stop();
    }
  });

  it('the lease token must come back whole: a wrong or missing nonce is refused', async () => {
    const r = await client.enqueue({ queue: 'w.nonce', type: 't' });
    const [leased] = await client.lease({ queues: ['w.nonce'], workerId: 'test', waitMs: 2000, leaseDurationMs: 30_000 });
    assert.equal(leased.job.id, r.job.id);
    assert.ok(Buffer.isBuffer(leased.token.nonce) && leased.token.nonce.length === 16);
    const wrong = { ...leased.token, nonce: Buffer.alloc(16) };
    await assert.rejects(client.complete(wrong, 'x'), lq.FailedPreconditionError);
    const { nonce, ...noNonce } = leased.token;
    assert.ok(nonce);
    await assert.rejects(client.complete(noNonce, 'x'), lq.FailedPreconditionError);
    const hb = await client.heartbeat([leased.token], { extendByMs: 10_000 });
    assert.equal(hb[0].leaseLost, false);
    const job = await client.complete(leased.token, 'right token');
    assert.equal(job.state, 'JOB_STATE_SUCCEEDED');
    // A repeated Complete gets the first answer.
    assert.equal((await client.complete(leased.token, 'right token')).state, 'JOB_STATE_SUCCEEDED');
  });
});
