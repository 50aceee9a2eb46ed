'use strict';
// Client against a real ledgerqd: enqueue, get, history, cancel, idempotency, validation errors,
// batches, id representation and failover over an address list.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const lq = require('../');
const { startDaemon } = require('./helpers/daemon');

describe('Client', () => {
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

  it('enqueues, gets, reads the history and cancels', async () => {
    const r = await client.enqueue({
      queue: 'c.basic',
      type: 'welcome',
      payload: { to: 'ada@example.com' },
      priority: 5,
      maxAttempts: 3,
      labels: { tenant: 't1' },
      concurrencyKey: 'customer-1',
    });
    assert.equal(r.deduplicated, false);
    assert.equal(typeof r.job.id, 'string', 'ids are decimal strings');
    assert.match(r.job.id, /^[0-9]+$/);
    assert.equal(r.job.state, 'JOB_STATE_READY');

    const job = await client.get(r.job.id);
    assert.equal(job.queue, 'c.basic');
    assert.equal(job.type, 'welcome');
    assert.ok(Buffer.isBuffer(job.payload));
    assert.deepEqual(JSON.parse(job.payload.toString()), { to: 'ada@example.com' });
    assert.equal(job.priority, 5);
    assert.equal(job.maxAttempts, 3);
    assert.deepEqual(job.labels, { tenant: 't1' });
    assert.equal(job.concurrencyKey, 'customer-1');
    assert.ok(lq.timestampToDate(job.createdAt) instanceof Date);
    assert.ok(Math.abs(lq.timestampToDate(job.createdAt).getTime() - Date.now()) < 60_000);

    // The same job by a number and by a bigint.
    assert.equal((await client.get(Number(r.job.id))).id, r.job.id);
    assert.equal((await client.get(BigInt(r.job.id))).id, r.job.id);

    const cancelled = await client.cancel(r.job.id, 'not needed');
    assert.equal(cancelled.state, 'JOB_STATE_CANCELLED');
    assert.equal(cancelled.cancelReason, 'not needed');

    const h = await client.history(r.job.id);
    assert.equal(h.job.id, r.job.id);
    assert.deepEqual(
      h.events.map((e) => e.type),
      ['SUBMITTED', 'CANCELLED'],
    );
    assert.equal(h.events[1].toState, 'JOB_STATE_CANCELLED');
    assert.equal(h.events[1].reason, 'not needed');
    assert.ok(BigInt(h.events[1].seq) > BigInt(h.events[0].seq));

    // Cancelling again: the job is no longer SCHEDULED or READY.
    await assert.rejects(client.cancel(r.job.id, 'again'), lq.FailedPreconditionError);
  });

  it('payloads: Buffer as is, string as UTF-8, objects as JSON; runAt and delay schedule', async () => {
    const bin = Buffer.from([0, 1, 2, 255]);
    const a = await client.enqueue({ queue: 'c.payload', type: 't', payload: bin });
    assert.deepEqual((await client.get(a.job.id)).payload, bin);
    const s = await client.enqueue({ queue: 'c.payload', type: 't', payload: 'héllo' });
    assert.equal((await client.get(s.job.id)).payload.toString('utf8'), 'héllo');
    const later = await client.enqueue({ queue: 'c.payload', type: 't', runAt: new Date(Date.now() + 3_600_000) });
    assert.equal(later.job.state, 'JOB_STATE_SCHEDULED');
    const delayed = await client.enqueue({ queue: 'c.payload', type: 't', delayMs: 3_600_000 });
    assert.equal(delayed.job.state, 'JOB_STATE_SCHEDULED');
    const runAt = lq.timestampToDate((await client.get(delayed.job.id)).runAt).getTime();
    assert.ok(Math.abs(runAt - (Date.now() + 3_600_000)) < 60_000);
  });

  it('deduplicates by idempotency key; another payload is AlreadyExistsError naming the job', async () => {
    const first = await client.enqueue({ queue: 'c.idem', type: 'charge', payload: { cents: 100 }, idempotencyKey: 'order-7' });
    assert.equal(first.deduplicated, false);
    const again = await client.enqueue({ queue: 'c.idem', type: 'charge', payload: { cents: 100 }, idempotencyKey: 'order-7' });
    assert.equal(again.deduplicated, true);
    assert.equal(again.job.id, first.job.id);

    await assert.rejects(
      client.enqueue({ queue: 'c.idem', type: 'charge', payload: { cents: 999 }, idempotencyKey: 'order-7' }),
      (e) => {
        assert.ok(e instanceof lq.AlreadyExistsError);
        assert.ok(e instanceof lq.LedgerqError);
        assert.equal(e.code, 'ALREADY_EXISTS');
        assert.equal(e.grpcCode, 6);
        assert.match(e.message, new RegExp(`already names job ${first.job.id}\\b`));
        assert.equal(e.jobId, first.job.id);
        return true;
      },
    );

    const byKey = await client.getByIdempotencyKey('c.idem', 'order-7');
    assert.equal(byKey.id, first.job.id);
    const h = await client.historyByIdempotencyKey('c.idem', 'order-7');
    assert.deepEqual(
      h.events.map((e) => e.type),
      ['SUBMITTED', 'DEDUPLICATED'],
    );
    await assert.rejects(client.getByIdempotencyKey('c.idem', 'no-such-key'), lq.NotFoundError);
  });

  it('a bad field is InvalidArgumentError naming the field', async () => {
    await assert.rejects(client.enqueue({ queue: 'bad queue!', type: 't' }), (e) => {
      assert.ok(e instanceof lq.InvalidArgumentError);
      assert.equal(e.code, 'INVALID_ARGUMENT');
      assert.match(e.message, /^queue: /);
      return true;
    });
    await assert.rejects(client.enqueue({ queue: 'c.bad', type: 't', maxAttempts: 100000 }), (e) => {
      assert.ok(e instanceof lq.InvalidArgumentError);
      assert.match(e.message, /max_attempts/);
      return true;
    });
    // Checked on this side before anything is sent.
    assert.throws(() => lq.toId('12x'), (e) => e instanceof lq.InvalidArgumentError && /^id: /.test(e.message));
    await assert.rejects(client.get(-1), lq.InvalidArgumentError);
    await assert.rejects(client.get('99999999'), (e) => e instanceof lq.NotFoundError && /99999999/.test(e.message));
  });

  it('a batch answers per item: a bad item gets its own error, the others are written', async () => {
    const results = await client.enqueueBatch([
      { queue: 'c.batch', type: 'a', payload: 'one' },
      { queue: 'c.batch', type: '', payload: 'bad: no type' },
      { queue: 'c.batch', type: 'a', payload: 'three', idempotencyKey: 'b-3' },
    ]);
    assert.equal(results.length, 3);
    assert.equal(results[0].error, undefined);
    assert.equal(results[0].deduplicated, false);
    assert.ok(results[1].error instanceof lq.InvalidArgumentError);
    assert.equal(results[1].error.code, 'INVALID_ARGUMENT');
    assert.match(results[1].error.message, /items\[1\]\.type/);
    assert.equal(results[1].job, undefined);
    assert.equal((await client.get(results[0].job.id)).payload.toString(), 'one');
    assert.equal((await client.get(results[2].job.id)).payload.toString(), 'three');
    assert.ok(BigInt(results[2].job.id) > BigInt(results[0].job.id));

    // An empty batch is refused whole.
    await assert.rejects(client.enqueueBatch([]), lq.InvalidArgumentError);
  });

  it('follows an address list: a dead address is skipped, all dead is UnavailableError', async () => {
    const dead = await unusedAddress();
    const c = new lq.Client({ addresses: [dead, daemon.address], timeoutMs: 5000 });
    try {
      const r = await c.enqueue({ queue: 'c.failover', type: 't' });
      assert.equal(c.address, daemon.address, 'the address that answered is used from then on');
      assert.equal((await c.get(r.job.id)).id, r.job.id);
    } finally {
      c.close();
    }
    const none = new lq.Client({ addresses: `${dead},${await unusedAddress()}`, timeoutMs: 3000 });
    try {
      await assert.rejects(none.get(1), (e) => {
        assert.ok(e instanceof lq.UnavailableError);
        assert.equal(e.code, 'UNAVAILABLE');
        assert.match(e.message, new RegExp(dead));
        return true;
      });
    } finally {
      none.close();
    }
  });

  it('call() reaches any method; a closed client refuses calls', async () => {
    const r = await client.call('AdminService', 'ListQueues', {});
    assert.ok(r.queues.some((q) => q.name === 'c.basic'));
    const c = new lq.Client({ addresses: daemon.address });
    c.close();
    await assert.rejects(c.get(1), lq.CancelledError);
  });
});

/** A loopback address nothing listens on (a port the kernel handed out, then closed). */
function unusedAddress() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(`127.0.0.1:${port}`));
    });
  });
}
