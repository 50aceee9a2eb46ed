'use strict';
// Starts a real ledgerqd for a test file: a fresh data dir, ports chosen by the kernel, read
// back from the line it prints once it listens. Path from $LEDGERQD, default
// <repo>/build/server/ledgerqd.
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..', '..', '..');
const LEDGERQD = process.env.LEDGERQD || path.join(REPO, 'build', 'server', 'ledgerqd');
const LEDGERQ_CLI = process.env.LEDGERQ_CLI || path.join(REPO, 'build', 'client', 'ledgerq');
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

function startOnce(extraArgs, dataDir, listen = {}) {
  const args = [
    '--data-dir', dataDir,
    '--grpc-listen', listen.grpc || '127.0.0.1:0',
    '--http-listen', listen.http || '127.0.0.1:0',
    '--sync', 'none',
    '--log-level', 'warn',
    ...extraArgs,
  ];
  const child = spawn(LEDGERQD, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
    if (stderr.length > 64 * 1024) stderr = stderr.slice(-32 * 1024);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      const what = `ledgerqd did not print its listening line within ${START_TIMEOUT_MS} ms`;
      reject(new Error(`${what}\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, START_TIMEOUT_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`ledgerqd exited (${code ?? sig}) before listening\nstderr: ${stderr}`));
    });
    child.stdout.on('data', (d) => {
      stdout += d;
      const m = /listening grpc=(\S+):(\d+) http=(\S+):(\d+)/.exec(stdout);
      if (m) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        resolve({
          child,
          address: `${m[1]}:${m[2]}`,
          grpcPort: Number(m[2]),
          httpPort: Number(m[4]),
          stderr: () => stderr,
        });
      }
    });
  });
}

/**
 * Starts ledgerqd with extra flags. Returns { address, grpcPort, httpPort, dataDir, stop() }.
 * A missing binary (being rebuilt) is retried once after a second.
 */
async function startDaemon(extraArgs = []) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ledgerq-node-test-'));
  const start = async (listen) => {
    try {
      return await startOnce(extraArgs, dataDir, listen);
    } catch (e) {
      if (e.code !== 'ENOENT' && fs.existsSync(LEDGERQD)) throw e;
      await sleep(1000);
      return startOnce(extraArgs, dataDir, listen);
    }
  };
  const d = { dataDir, ...(await start()) };
  const kill = async () => {
    const { child } = d;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(t);
    }
  };
  d.stop = async () => {
    await kill();
    fs.rmSync(dataDir, { recursive: true, force: true });
  };
  /** Stops it (SIGTERM) and starts it again on the same data dir and ports, after pauseMs. */
  d.restart = async (pauseMs = 0) => {
    await kill();
    if (pauseMs) await sleep(pauseMs);
    const again = await start({ grpc: d.address, http: `127.0.0.1:${d.httpPort}` });
    Object.assign(d, again);
  };
  return d;
}

/** Makes an auth file with one principal; returns its token. */
function addPrincipal(file, principal, role) {
  const out = execFileSync(LEDGERQ_CLI, ['auth', 'add', '--file', file, '--principal', principal, '--role', role], {
    encoding: 'utf8',
  });
  const m = /(lq_[0-9a-f]{64})/.exec(out);
  if (!m) throw new Error(`no token in: ${out}`);
  return m[1];
}

/** Polls fn() until it returns a truthy value; bounded. */
async function waitFor(fn, { timeoutMs = 10_000, everyMs = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

module.exports = { REPO, LEDGERQD, LEDGERQ_CLI, startDaemon, addPrincipal, waitFor, sleep };
