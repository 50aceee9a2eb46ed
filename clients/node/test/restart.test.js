'use strict';
// A worker keeps going through a daemon restart: its report waits for the server to come back,
// and the lease (token and nonce) is still valid after recovery.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const lq = require('../');
const { startDaemon, waitFor, sleep } = require('./helpers/daemon');

describe('daemon restart', () => {
  let daemon;

  before(async () => {
    daemon = await startDaemon();
  });

  after(async () => {
    await daemon?.stop();
  });

  it('a job running across a restart is completed once the server is back', async () => {
    const client = new lq.Client({ addresses: daemon.address, timeoutMs: 3000 });
    let started;
    const handlerStarted = new Promise((r) => (started = r));
    const done = [];
    const w = new lq.Worker({
      addresses: daemon.address,
      queues: ['r.q'],
      pollWaitMs: 1000,
      leaseSeconds: 10,
      handleSignals: false,
      log: () => {},
      onDone: (ctx, outcome, error) => done.push({ at: Date.now(), error }),
      timeoutMs: 3000,
    });
    w.handle('t', async (job) => {
      started();
      await sleep(1000);
      return `done in attempt ${job.attempt}`;
    });
    const running = w.run();
    try {
      const r = await client.enqueue({ queue: 'r.q', type: 't' });
      await handlerStarted;
      const t0 = Date.now();
      // Down for 1.5 s: the Complete at 1 s meets no server and is retried.
      await daemon.restart(1500);
      const job = await waitFor(
        async () => {
          const j = await client.get(r.job.id).catch(() => null);
          return j && j.state === 'JOB_STATE_SUCCEEDED' ? j : null;
        },
        { timeoutMs: 15_000, everyMs: 100, what: 'the job to succeed after the restart' },
      );
      assert.equal(job.attempts, 1, 'the lease survived the restart');
      assert.equal(job.result.toString(), 'done in attempt 1');
      assert.equal(done.length, 1);
      assert.equal(done[0].error, undefined);
      assert.ok(done[0].at - t0 >= 1400, `reported ${done[0].at - t0} ms after the start, after the restart`);
    } finally {
      await w.stop();
      await running;
      client.close();
    }
  });
});
