#!/usr/bin/env node
// A ledgerq producer: enqueues welcome mails into the queue "emails", with idempotency keys, so
// running it twice creates nothing new the second time.
//
//   node examples/node/producer.js [ADDRESS]
//
// ADDRESS (host:port, or a comma-separated list) defaults to $LEDGERQ_ADDRESS, else
// 127.0.0.1:7400. A token comes from $LEDGERQ_TOKEN; TLS from $LEDGERQ_TLS_CA (and
// $LEDGERQ_TLS_CERT/$LEDGERQ_TLS_KEY for mTLS), as for the CLI. Build the package first:
// cd clients/node && npm ci && npm run build.
'use strict';
const lq = require('./ledgerq');

async function main() {
  const address = process.argv[2] || process.env.LEDGERQ_ADDRESS || '127.0.0.1:7400';
  const client = new lq.Client({ addresses: address, ...lq.securityFromEnv() });
  try {
    const signups = [
      { id: 41, to: 'ada@example.com' },
      { id: 42, to: 'grace@example.com' },
      { id: 43, to: 'edsger@example.com' },
      { id: 44 }, // no address: the worker fails it permanently (a dead letter)
    ];
    for (const s of signups) {
      const { job, deduplicated } = await client.enqueue({
        queue: 'emails',
        type: 'welcome',
        payload: { to: s.to, signup: s.id },
        idempotencyKey: `signup-${s.id}`,
        maxAttempts: 3,
      });
      console.log(`job ${job.id} ${deduplicated ? 'deduplicated' : 'created'} (${job.state}) for signup ${s.id}`);
    }
    // A batch: one atomic write, an answer per item.
    const results = await client.enqueueBatch([
      { queue: 'emails', type: 'digest', payload: { steps: 3 }, idempotencyKey: 'digest-daily' },
      { queue: 'emails', type: '', payload: 'an invalid item: no type' },
    ]);
    for (const [i, r] of results.entries()) {
      if (r.error) console.log(`batch item ${i}: ${r.error.code}: ${r.error.message}`);
      else console.log(`batch item ${i}: job ${r.job.id}`);
    }
  } catch (e) {
    if (e instanceof lq.LedgerqError) {
      console.error(`producer: ${e.code}: ${e.message}`);
      process.exitCode = 1;
    } else {
      throw e;
    }
  } finally {
    client.close();
  }
}

main();
