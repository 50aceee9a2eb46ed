#!/usr/bin/python3
"""A worker for the jobs of examples/python/producer.py: sends (prints) welcome e-mails.

    /usr/bin/python3 examples/python/worker.py [ADDRESS] [--queue emails] [--concurrency 4]

ADDRESS, $LEDGERQ_TOKEN and the TLS variables as for producer.py. SIGTERM or Ctrl-C stops
leasing, lets running jobs finish and exits.
"""

import argparse
import logging
import os
import sys
import time

try:
    import ledgerq
except ImportError:  # running from a clone: use clients/python
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", "..", "clients", "python"))
    import ledgerq


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("address", nargs="?", default=os.environ.get("LEDGERQ_ADDRESS")
                    or os.environ.get("LEDGERQ_SERVER") or "127.0.0.1:7400")
    ap.add_argument("--queue", default="emails")
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    worker = ledgerq.Worker(args.address, [args.queue],
                            token=os.environ.get("LEDGERQ_TOKEN") or None,
                            tls=ledgerq.TLS.from_env(), concurrency=args.concurrency)

    @worker.handler("welcome")
    def welcome(job: ledgerq.JobContext) -> dict:
        payload = job.json() or {}
        if "to" not in payload:  # retrying cannot fix this: straight to the dead letters
            raise ledgerq.PermanentError("BAD_PAYLOAD", "payload has no \"to\" field")
        if job.checkpoint_data:  # an earlier attempt got this far
            print(f"job {job.id}: resuming after {job.checkpoint_data.decode()}", flush=True)
        time.sleep(0.2)  # rendering the mail
        job.checkpoint(b"rendered")
        print(f"job {job.id} attempt {job.attempt}: sending welcome mail to {payload['to']}",
              flush=True)
        return {"sent": True}  # completes the job; any other exception would retry it

    worker.run()  # until SIGTERM/SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
