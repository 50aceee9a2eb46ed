'use strict';
// Worker processes: SIGTERM drains a running handler; the examples run end to end.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFile } = require('node:child_process');
const path = require('node:path');
const lq = require('../');
const { REPO, startDaemon, waitFor } = require('./helpers/daemon');

const EXAMPLES = path.join(REPO, 'examples', 'node');

/** Spawns `node script args`; collects stdout; resolves exited with { code, signal }. */
function spawnNode(script, args, env = {}) {
  const child = spawn(process.execPath, [script, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const p = { child, stdout: '', stderr: '' };
  child.stdout.on('data', (d) => (p.stdout += d));
  child.stderr.on('data', (d) => (p.stderr += d));
  p.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  p.kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  return p;
}

async function exitWithin(p, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no exit within ${ms} ms; stdout: ${p.stdout} stderr: ${p.stderr}`)), ms);
  });
  try {
    return await Promise.race([p.exited, timeout]);
  } finally {
    clearTimeout(timer);
    p.kill();
  }
}

describe('worker processes', () => {
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

  it('SIGTERM lets the running handler finish (SUCCEEDED), removes the handlers, exits 0', async () => {
    const r = await client.enqueue({ queue: 's.term', type: 'slow' });
    const p = spawnNode(path.join(__dirname, 'fixtures', 'sigterm-worker.js'), [daemon.address, 's.term']);
    try {
      await waitFor(() => p.stdout.includes(`started ${r.job.id}`), { timeoutMs: 10_000, what: 'the handler to start' });
      const t0 = Date.now();
      p.child.kill('SIGTERM');
      const { code } = await exitWithin(p, 10_000);
      assert.equal(code, 0, p.stderr);
      assert.ok(Date.now() - t0 >= 500, 'it waited for the handler');
      assert.match(p.stdout, /drained listeners=0/);
      const job = await client.get(r.job.id);
      assert.equal(job.state, 'JOB_STATE_SUCCEEDED');
      assert.deepEqual(JSON.parse(job.result.toString()), { finishedWhileStopping: true });
    } finally {
      p.kill();
    }
  });

  it('a second SIGTERM releases running jobs at once', async () => {
    const r = await client.enqueue({ queue: 's.twice', type: 'slow' });
    const p = spawnNode(path.join(__dirname, 'fixtures', 'sigterm-worker.js'), [daemon.address, 's.twice']);
    try {
      await waitFor(() => p.stdout.includes(`started ${r.job.id}`), { timeoutMs: 10_000, what: 'the handler to start' });
      p.child.kill('SIGTERM');
      await new Promise((res) => setTimeout(res, 50));
      p.child.kill('SIGTERM');
      const { code } = await exitWithin(p, 10_000);
      assert.equal(code, 0, p.stderr);
      const h = await client.history(r.job.id);
      assert.ok(h.events.some((e) => e.type === 'RELEASED'), JSON.stringify(h.events.map((e) => e.type)));
    } finally {
      p.kill();
    }
  });

  it('examples/node: the producer enqueues, the worker runs the jobs and stops on SIGTERM', async () => {
    const run = (args, env) =>
      new Promise((resolve) =>
        execFile(process.execPath, args, { env: { ...process.env, ...env }, timeout: 15_000 }, (err, stdout, stderr) =>
          resolve({ err, stdout, stderr }),
        ),
      );
    const first = await run([path.join(EXAMPLES, 'producer.js'), daemon.address]);
    assert.equal(first.err, null, first.stderr);
    assert.equal((first.stdout.match(/ created /g) || []).length, 4, first.stdout);
    assert.match(first.stdout, /batch item 1: INVALID_ARGUMENT: items\[1\]\.type/);
    const again = await run([path.join(EXAMPLES, 'producer.js')], { LEDGERQ_ADDRESS: daemon.address });
    assert.equal((again.stdout.match(/ deduplicated /g) || []).length, 4, again.stdout);

    const p = spawnNode(path.join(EXAMPLES, 'worker.js'), [], { LEDGERQ_ADDRESS: daemon.address });
    try {
      const states = async (key) => (await client.getByIdempotencyKey('emails', key)).state;
      await waitFor(
        async () => {
          const s = await Promise.all(['signup-41', 'signup-42', 'signup-43', 'signup-44', 'digest-daily'].map(states));
          return s.every((x) => x === 'JOB_STATE_SUCCEEDED' || x === 'JOB_STATE_DEAD') ? s : null;
        },
        { timeoutMs: 15_000, what: 'the example jobs to finish' },
      );
      const dead = await client.getByIdempotencyKey('emails', 'signup-44');
      assert.equal(dead.state, 'JOB_STATE_DEAD');
      assert.equal(dead.errors[0].code, 'NO_RECIPIENT');
      const ok = await client.getByIdempotencyKey('emails', 'signup-41');
      assert.deepEqual(JSON.parse(ok.result.toString()), { sent: true, to: 'ada@example.com' });
      const digest = await client.getByIdempotencyKey('emails', 'digest-daily');
      assert.deepEqual(JSON.parse(digest.result.toString()), { steps: 3 });
      p.child.kill('SIGTERM');
      const { code } = await exitWithin(p, 10_000);
      assert.equal(code, 0, p.stderr);
      assert.match(p.stdout, /worker stopped/);
    } finally {
      p.kill();
    }
  });
});
