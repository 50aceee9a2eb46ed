#!/usr/bin/python3
"""Enqueues welcome e-mails for the example worker (examples/python/worker.py).

    /usr/bin/python3 examples/python/producer.py [ADDRESS] [--queue emails] [--count 3]

ADDRESS is host:port (or a comma-separated list), else $LEDGERQ_ADDRESS, else $LEDGERQ_SERVER,
else 127.0.0.1:7400. The token comes from $LEDGERQ_TOKEN, TLS files from $LEDGERQ_TLS_CA,
$LEDGERQ_TLS_CERT and $LEDGERQ_TLS_KEY. Run clients/python/generate.sh once first.
"""

import argparse
import os
import sys

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
    ap.add_argument("--count", type=int, default=3)
    args = ap.parse_args()

    with ledgerq.Client(args.address, token=os.environ.get("LEDGERQ_TOKEN") or None,
                        tls=ledgerq.TLS.from_env()) as client:
        for i in range(1, args.count + 1):
            try:
                r = client.enqueue(args.queue, "welcome", {"to": f"user{i}@example.com"},
                                   idempotency_key=f"signup-{i}")
            except ledgerq.Error as e:  # e.code: "INVALID_ARGUMENT"...; e.message names the field
                print(f"enqueue failed: {e}", file=sys.stderr)
                return 1
            print(f"job {r.id} {'deduplicated' if r.deduplicated else 'created'} "
                  f"({ledgerq.state_name(r.job.state)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
