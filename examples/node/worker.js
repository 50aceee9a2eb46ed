#!/usr/bin/env node
// A ledgerq worker for the jobs examples/node/producer.js enqueues. Runs until SIGTERM or
// Ctrl-C, then lets running jobs finish and exits.
//
//   node examples/node/worker.js [ADDRESS]
//
// ADDRESS, the token and TLS as for producer.js.
'use strict';
const lq = require('./ledgerq');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const address = process.argv[2] || process.env.LEDGERQ_ADDRESS || '127.0.0.1:7400';
  const worker = new lq.Worker({
    addresses: address,
    queues: ['emails'],
    concurrency: 4,
    leaseSeconds: 30,
    ...lq.securityFromEnv(),
  });

  worker.handle('welcome', async (job) => {
    const { to } = job.json();
    // A payload that can never work: straight to the dead letters, no retry.
    if (!to) throw new lq.PermanentError('NO_RECIPIENT', 'the payload has no "to" address');
    console.log(`job ${job.id}: sending a welcome mail to ${to} (attempt ${job.attempt})`);
    await sleep(50); // any other thrown error would be retried with backoff
    return { sent: true, to };
  });

  // A long job that survives a crash: each step saves a checkpoint, a retry resumes from it.
  worker.handle('digest', async (job) => {
    const { steps } = job.json();
    let done = job.previousCheckpoint ? JSON.parse(job.previousCheckpoint.toString()).done : 0;
    while (done < steps) {
      if (job.leaseLost) throw new lq.TransientError('LEASE_LOST', 'stopped: the lease was lost');
      await sleep(100);
      done++;
      await job.checkpoint({ done });
    }
    console.log(`job ${job.id}: digest done in ${steps} steps`);
    return { steps: done };
  });

  console.log(`worker ${worker.workerId} on ${address}, queue emails`);
  await worker.run(); // resolves after SIGTERM/SIGINT (or worker.stop()) once jobs drained
  console.log('worker stopped');
}

main().catch((e) => {
  console.error(`worker: ${e.code ? `${e.code}: ` : ''}${e.message}`);
  process.exitCode = 1;
});
