'use strict';
// Bearer tokens against a ledgerqd with an auth file made by `ledgerq auth add`, and TLS.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const lq = require('../');
const { startDaemon, addPrincipal, waitFor } = require('./helpers/daemon');

describe('token auth', () => {
  let daemon;
  let dir;
  const tokens = {};

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ledgerq-node-auth-'));
    const file = path.join(dir, 'auth.toml');
    tokens.producer = addPrincipal(file, 'p', 'producer');
    tokens.worker = addPrincipal(file, 'w', 'worker');
    tokens.worker2 = addPrincipal(file, 'w2', 'worker');
    daemon = await startDaemon(['--auth-file', file]);
  });

  after(async () => {
    await daemon?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('no token or an unknown one is UnauthenticatedError; the producer token works', async () => {
    const anon = new lq.Client({ addresses: daemon.address });
    const wrong = new lq.Client({ addresses: daemon.address, token: `lq_${'0'.repeat(64)}` });
    const producer = new lq.Client({ addresses: daemon.address, token: tokens.producer });
    try {
      await assert.rejects(anon.enqueue({ queue: 'a.q', type: 't' }), (e) => {
        assert.ok(e instanceof lq.UnauthenticatedError);
        assert.equal(e.code, 'UNAUTHENTICATED');
        return true;
      });
      await assert.rejects(wrong.enqueue({ queue: 'a.q', type: 't' }), lq.UnauthenticatedError);
      const r = await producer.enqueue({ queue: 'a.q', type: 't', payload: 'hi' });
      assert.equal(r.job.submittedBy, 'p');
      assert.equal((await producer.get(r.job.id)).payload.toString(), 'hi');
      // A worker may not enqueue.
      const worker = new lq.Client({ addresses: daemon.address, token: tokens.worker });
      await assert.rejects(worker.enqueue({ queue: 'a.q', type: 't' }), (e) => {
        assert.ok(e instanceof lq.PermissionDeniedError);
        assert.match(e.message, /permission "enqueue"/);
        return true;
      });
      worker.close();
    } finally {
      anon.close();
      wrong.close();
      producer.close();
    }
  });

  it('a Worker with the worker token completes the job; with the producer token run() rejects', async () => {
    const producer = new lq.Client({ addresses: daemon.address, token: tokens.producer });
    try {
      const r = await producer.enqueue({ queue: 'a.work', type: 'echo', payload: { n: 1 } });
      const w = new lq.Worker({
        addresses: daemon.address,
        token: tokens.worker,
        queues: 'a.work',
        pollWaitMs: 2000,
        handleSignals: false,
        log: () => {},
      });
      w.handle('echo', async (job) => job.json());
      const running = w.run();
      try {
        const job = await waitFor(async () => {
          const j = await producer.get(r.job.id);
          return j.state === 'JOB_STATE_SUCCEEDED' ? j : null;
        }, { what: 'the job to succeed' });
        assert.deepEqual(JSON.parse(job.result.toString()), { n: 1 });
      } finally {
        await w.stop();
        await running;
      }

      const bad = new lq.Worker({
        addresses: daemon.address,
        token: tokens.producer,
        queues: 'a.work',
        handleSignals: false,
        log: () => {},
      });
      await assert.rejects(bad.run(), lq.PermissionDeniedError);
    } finally {
      producer.close();
    }
  });

  it('a lease is bound to the principal that took it', async () => {
    const producer = new lq.Client({ addresses: daemon.address, token: tokens.producer });
    const w1 = new lq.Client({ addresses: daemon.address, token: tokens.worker });
    const w2 = new lq.Client({ addresses: daemon.address, token: tokens.worker2 });
    try {
      const r = await producer.enqueue({ queue: 'a.bound', type: 't' });
      const [leased] = await w1.lease({ queues: ['a.bound'], workerId: 'w1', waitMs: 2000 });
      assert.equal(leased.job.id, r.job.id);
      await assert.rejects(w2.complete(leased.token, 'stolen'), lq.FailedPreconditionError);
      assert.equal((await w1.complete(leased.token, 'mine')).state, 'JOB_STATE_SUCCEEDED');
    } finally {
      producer.close();
      w1.close();
      w2.close();
    }
  });
});

describe('TLS', () => {
  let daemon;
  let dir;
  let ca;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ledgerq-node-tls-'));
    const key = path.join(dir, 'server.key');
    const cert = path.join(dir, 'server.crt');
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    ], { stdio: 'ignore' });
    ca = fs.readFileSync(cert);
    daemon = await startDaemon(['--tls-cert', cert, '--tls-key', key]);
  });

  after(async () => {
    await daemon?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('connects with the CA given; plaintext or an untrusted server is UnavailableError', async () => {
    // By name: the certificate names localhost too (a TLS server name may not be an IP address).
    const byName = `localhost:${daemon.grpcPort}`;
    const good = new lq.Client({ addresses: byName, tls: { ca } });
    const plain = new lq.Client({ addresses: daemon.address, timeoutMs: 3000 });
    const untrusted = new lq.Client({ addresses: byName, tls: true, timeoutMs: 3000 });
    try {
      const r = await good.enqueue({ queue: 't.q', type: 't' });
      assert.equal((await good.get(r.job.id)).state, 'JOB_STATE_READY');
      await assert.rejects(plain.get(r.job.id), lq.UnavailableError);
      await assert.rejects(untrusted.get(r.job.id), lq.UnavailableError);
    } finally {
      good.close();
      plain.close();
      untrusted.close();
    }
    // securityFromEnv reads the CA file named by LEDGERQ_TLS_CA.
    const caFile = path.join(dir, 'server.crt');
    const sec = lq.securityFromEnv({ LEDGERQ_TLS_CA: caFile, LEDGERQ_TOKEN: 'lq_x' });
    assert.equal(sec.token, 'lq_x');
    assert.deepEqual(sec.tls.ca, ca);
    const viaEnv = new lq.Client({ addresses: byName, ...sec });
    try {
      await viaEnv.enqueue({ queue: 't.q', type: 't' });
    } finally {
      viaEnv.close();
    }
    assert.throws(() => lq.securityFromEnv({ LEDGERQ_TLS_CA: path.join(dir, 'missing.pem') }), /LEDGERQ_TLS_CA: cannot read/);
  });
});
