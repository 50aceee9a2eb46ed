"""examples/python/producer.py and worker.py run against a real ledgerqd."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import ledgerq
from conftest import REPO, Daemon, job_state, wait_for

EXAMPLES = REPO / "examples" / "python"


def test_producer_and_worker_examples(daemon: Daemon, client: ledgerq.Client,
                                      queue: str) -> None:
    env = dict(os.environ, LEDGERQ_ADDRESS=daemon.grpc)
    env.pop("LEDGERQ_TOKEN", None)
    out = subprocess.run([sys.executable, str(EXAMPLES / "producer.py"), "--queue", queue,
                          "--count", "2"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    ids = [int(m) for m in re.findall(r"^job (\d+) created", out.stdout, re.M)]
    assert len(ids) == 2, out.stdout

    w = subprocess.Popen([sys.executable, str(EXAMPLES / "worker.py"), daemon.grpc, "--queue",
                          queue], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        wait_for(lambda: all(job_state(client, i) == "SUCCEEDED" for i in ids), timeout=15,
                 what="the example worker to complete both jobs")
        w.send_signal(signal.SIGTERM)
        stdout, stderr = w.communicate(timeout=15)
    finally:
        if w.poll() is None:
            w.kill()
            w.wait(5)
    assert w.returncode == 0, stderr
    assert "sending welcome mail to user1@example.com" in stdout
    assert client.get(ids[0]).result == b'{"sent":true}'
