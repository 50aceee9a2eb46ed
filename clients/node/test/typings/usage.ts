// Compiled (not run) by `npm run typecheck`: the shipped typings describe the API as a
// TypeScript user writes it.
import {
  AlreadyExistsError,
  Client,
  EnqueueBatchResult,
  Job,
  JobContext,
  LedgerqError,
  PermanentError,
  TransientError,
  Worker,
  timestampToDate,
} from '../..';

async function producer(): Promise<void> {
  const client = new Client({ addresses: ['10.0.0.1:7400', '10.0.0.2:7400'], token: 'lq_x', timeoutMs: 5000 });
  const { job, deduplicated }: { job: Job; deduplicated: boolean } = await client.enqueue({
    queue: 'emails',
    type: 'welcome',
    payload: { to: 'ada@example.com' },
    idempotencyKey: 'signup-42',
    runAt: new Date(),
    labels: { tenant: 't1' },
  });
  const id: string = job.id;
  const state: 'JOB_STATE_READY' | string = job.state;
  const created: Date | null = timestampToDate(job.createdAt);
  void [deduplicated, id, state, created];
  const results: EnqueueBatchResult[] = await client.enqueueBatch([{ queue: 'q', type: 't', payload: Buffer.from('x') }]);
  for (const r of results) {
    if (r.error) {
      const code: string = r.error.code;
      void code;
    } else {
      const j: Job = r.job;
      void j;
    }
  }
  try {
    await client.get(42n);
  } catch (e) {
    if (e instanceof AlreadyExistsError) void e.jobId;
    if (e instanceof LedgerqError) void [e.code, e.grpcCode, e.message];
  }
  const h = await client.history('42');
  void h.events.map((ev) => ev.type);
  client.close();
}

async function worker(): Promise<void> {
  const w = new Worker({ addresses: '127.0.0.1:7400', queues: ['emails'], concurrency: 8, leaseSeconds: 60 });
  w.handle('welcome', async (job: JobContext) => {
    const { to } = job.json<{ to?: string }>();
    if (!to) throw new PermanentError('NO_RECIPIENT', 'no "to"');
    if (job.attempt < 2) throw new TransientError('SMTP_DOWN', 'try later', { retryAfterMs: 5000 });
    const before: Buffer | undefined = job.previousCheckpoint;
    await job.checkpoint({ step: 1 });
    const lost: boolean = job.leaseLost;
    void [before, lost, job.signal.aborted];
    return { sent: true };
  });
  await w.run();
  await w.stop({ drainTimeoutMs: 1000 });
}

void producer;
void worker;
