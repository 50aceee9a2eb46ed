"""Worker against a real ledgerqd: outcomes, retries, checkpoints, heartbeats, draining."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Dict, List

import ledgerq
from conftest import PY_ROOT, Daemon, fast_retries, job_state, running, wait_for


def make_worker(daemon: Daemon, queue: str, **kw) -> ledgerq.Worker:
    kw.setdefault("poll_wait", 2.0)
    kw.setdefault("worker_id", "pytest-worker")
    return ledgerq.Worker(daemon.grpc, [queue], **kw)


def test_worker_completes_a_job(daemon: Daemon, client: ledgerq.Client, queue: str) -> None:
    done: List[ledgerq.Outcome] = []
    w = make_worker(daemon, queue, on_done=lambda job, o, err: done.append(o))

    @w.handler("greet")
    def greet(job: ledgerq.JobContext) -> Dict[str, str]:
        assert job.attempt == 1 and job.queue == queue
        assert job.traceparent.startswith("00-")
        return {"hello": job.json()["name"]}

    r = client.enqueue(queue, "greet", {"name": "ada"})
    with running(w):
        wait_for(lambda: job_state(client, r.id) == "SUCCEEDED", what="SUCCEEDED")
    job = client.get(r.id)
    assert json.loads(job.result) == {"hello": "ada"}
    assert job.attempts == 1
    assert [o.kind for o in done] == ["complete"]
    events = [e.type for e in client.history(r.id).events]
    assert events == ["SUBMITTED", "LEASED", "COMPLETED"]
    leased = client.history(r.id).events[1]
    assert leased.worker_id == "pytest-worker"


def test_transient_exception_is_retried(daemon: Daemon, client: ledgerq.Client,
                                        queue: str) -> None:
    w = make_worker(daemon, queue)

    @w.handler("flaky")
    def flaky(job: ledgerq.JobContext) -> str:
        if job.attempt == 1:
            raise ConnectionError("database went away")
        return "ok on attempt %d" % job.attempt

    r = client.enqueue(queue, "flaky", retry_policy=fast_retries())
    with running(w):
        wait_for(lambda: job_state(client, r.id) == "SUCCEEDED", what="SUCCEEDED")
    job = client.get(r.id)
    assert job.attempts == 2
    assert job.result == b"ok on attempt 2"
    (err,) = job.errors
    assert err.kind == ledgerq.pb.ERROR_KIND_TRANSIENT
    assert err.code == "ConnectionError"
    assert err.message == "database went away"
    assert "Traceback" in err.details and "flaky" in err.details
    assert err.worker_id == "pytest-worker"


def test_permanent_error_dead_letters(daemon: Daemon, client: ledgerq.Client,
                                      queue: str) -> None:
    w = make_worker(daemon, queue)

    def charge(job: ledgerq.JobContext) -> None:
        raise ledgerq.PermanentError("CARD_DECLINED", "the card was declined")

    w.register("charge", charge)
    r = client.enqueue(queue, "charge", {"amount": 5}, retry_policy=fast_retries())
    with running(w):
        wait_for(lambda: job_state(client, r.id) == "DEAD", what="DEAD")
    job = client.get(r.id)
    assert job.attempts == 1
    assert job.dead_reason == "permanent_error"
    (err,) = job.errors
    assert err.kind == ledgerq.pb.ERROR_KIND_PERMANENT
    assert (err.code, err.message) == ("CARD_DECLINED", "the card was declined")


def test_retry_after_is_honoured(daemon: Daemon, client: ledgerq.Client, queue: str) -> None:
    reported = threading.Event()
    w = make_worker(daemon, queue, on_done=lambda job, o, err: reported.set())

    @w.handler("rate-limited")
    def limited(job: ledgerq.JobContext) -> None:
        raise ledgerq.TransientError("RATE_LIMITED", "slow down", retry_after=30)

    r = client.enqueue(queue, "rate-limited")
    with running(w):
        assert reported.wait(10), "the failure was not reported"
        failed_at = time.time()
    job = client.get(r.id)
    assert ledgerq.state_name(job.state) == "SCHEDULED"
    assert job.errors[0].code == "RATE_LIMITED"
    run_at = job.run_at.seconds + job.run_at.nanos / 1e9
    assert abs(run_at - (failed_at + 30)) < 3, (run_at, failed_at)
    client.cancel(r.id)


def test_checkpoint_reaches_the_next_attempt(daemon: Daemon, client: ledgerq.Client,
                                             queue: str) -> None:
    seen: Dict[int, object] = {}
    w = make_worker(daemon, queue)

    @w.handler("resumable")
    def resumable(job: ledgerq.JobContext) -> str:
        seen[job.attempt] = job.checkpoint_data
        if job.attempt == 1:
            job.checkpoint(b"rows 0..999 done")
            assert job.checkpoint_data == b"rows 0..999 done"
            raise ledgerq.TransientError("INTERRUPTED", "stopped half way")
        return "resumed from " + job.checkpoint_data.decode()

    r = client.enqueue(queue, "resumable", retry_policy=fast_retries())
    with running(w):
        wait_for(lambda: job_state(client, r.id) == "SUCCEEDED", what="SUCCEEDED")
    assert seen == {1: None, 2: b"rows 0..999 done"}
    assert client.get(r.id).result == b"resumed from rows 0..999 done"


def test_heartbeats_keep_a_long_job_alive(daemon: Daemon, client: ledgerq.Client,
                                          queue: str) -> None:
    # A 1 s lease and a 2.5 s handler: without heartbeats (every 1/3 s) the lease would expire.
    w = make_worker(daemon, queue, lease_seconds=1)
    lost: List[bool] = []

    @w.handler("slow")
    def slow(job: ledgerq.JobContext) -> str:
        time.sleep(2.5)
        lost.append(job.lease_lost)
        return "done"

    r = client.enqueue(queue, "slow", retry_policy=fast_retries())
    with running(w):
        wait_for(lambda: job_state(client, r.id) == "SUCCEEDED", timeout=15, what="SUCCEEDED")
    job = client.get(r.id)
    assert job.attempts == 1 and not job.errors
    assert lost == [False]


def test_lost_lease_is_flagged(daemon: Daemon, client: ledgerq.Client, queue: str) -> None:
    # Heartbeats held back (a test hook: the lease is not in the heartbeat loop's due list)
    # until the 1 s lease has expired; the next heartbeat then says lease_lost.
    w = make_worker(daemon, queue, lease_seconds=1)
    flags: Dict[int, bool] = {}
    release = threading.Event()

    @w.handler("stuck")
    def stuck(job: ledgerq.JobContext) -> str:
        if job.attempt == 1:
            job._next_heartbeat = time.monotonic() + 3600  # no heartbeats for this attempt
            def expired() -> bool:
                j = client.get(job.id)
                return j.attempts > 1 or ledgerq.state_name(j.state) != "LEASED"

            wait_for(expired, timeout=10, what="lease expiry")
            try:
                job.checkpoint(b"too late")
            except ledgerq.LeaseLost:
                pass
            flags[1] = job.lease_lost
            release.set()
            return "ignored"
        flags[job.attempt] = job.lease_lost
        return "second attempt"

    r = client.enqueue(queue, "stuck", retry_policy=fast_retries())
    with running(w):
        assert release.wait(15)
        wait_for(lambda: job_state(client, r.id) == "SUCCEEDED", what="SUCCEEDED")
    assert flags[1] is True
    assert flags.get(2) is False
    job = client.get(r.id)
    assert job.result == b"second attempt" and job.attempts == 2


def test_no_handler_fails_transiently(daemon: Daemon, client: ledgerq.Client,
                                      queue: str) -> None:
    reported = threading.Event()
    w = make_worker(daemon, queue, on_done=lambda job, o, err: reported.set())
    w.register("known", lambda job: None)
    r = client.enqueue(queue, "unknown", max_attempts=1)
    with running(w):
        assert reported.wait(10)
    job = client.get(r.id)
    assert job.errors[0].code == "NO_HANDLER"
    assert "unknown" in job.errors[0].message


def test_concurrency_bounds_running_handlers(daemon: Daemon, client: ledgerq.Client,
                                             queue: str) -> None:
    lock = threading.Lock()
    now = [0]
    peak = [0]
    w = make_worker(daemon, queue, concurrency=3)

    @w.handler("work")
    def work(job: ledgerq.JobContext) -> None:
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.3)
        with lock:
            now[0] -= 1

    ids = [r.result.id for r in client.enqueue_batch(
        [{"queue": queue, "type": "work"} for _ in range(9)])]
    with running(w):
        wait_for(lambda: all(job_state(client, i) == "SUCCEEDED" for i in ids), timeout=15,
                 what="all SUCCEEDED")
    assert peak[0] == 3


def test_stop_drains_a_running_handler(daemon: Daemon, client: ledgerq.Client,
                                       queue: str) -> None:
    started = threading.Event()
    w = make_worker(daemon, queue, poll_wait=10)

    @w.handler("long")
    def long(job: ledgerq.JobContext) -> str:
        started.set()
        time.sleep(1.0)
        assert job.stopping
        return "finished while draining"

    r = client.enqueue(queue, "long")
    with running(w):
        assert started.wait(10)
        # The worker's next long-poll (for the free slots) is parked on the server now.
        wait_for(lambda: w._lease_future is not None, what="the next long-poll")
        time.sleep(0.1)
        t0 = time.monotonic()
        w.stop()
    # The parked long-poll was cancelled (no 10 s wait); the running job finished first.
    assert time.monotonic() - t0 < 5
    job = client.get(r.id)
    assert ledgerq.state_name(job.state) == "SUCCEEDED"
    assert job.result == b"finished while draining"
    assert [e.type for e in client.history(r.id).events][-1] == "COMPLETED"


def test_drain_timeout_releases_the_rest(daemon: Daemon, client: ledgerq.Client,
                                         queue: str) -> None:
    started = threading.Event()
    unblock = threading.Event()
    w = make_worker(daemon, queue, drain_timeout=0.5)

    @w.handler("stuck")
    def stuck(job: ledgerq.JobContext) -> str:
        started.set()
        unblock.wait(10)
        return "too late"

    r = client.enqueue(queue, "stuck", max_attempts=3)
    try:
        with running(w, join_timeout=8):
            assert started.wait(10)
            w.stop()
        job = client.get(r.id)
        assert ledgerq.state_name(job.state) == "READY"
        assert job.attempts == 1
        assert [e.type for e in client.history(r.id).events][-1] == "RELEASED"
    finally:
        unblock.set()
    client.cancel(r.id)


WORKER_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[3])
    import ledgerq

    w = ledgerq.Worker(sys.argv[1], [sys.argv[2]], poll_wait=10, drain_timeout=20)

    @w.handler("slow")
    def slow(job):
        print("started", job.id, flush=True)
        time.sleep(1.5)
        return "drained"

    w.run()
    print("run returned", flush=True)
""")


def test_sigterm_drains_and_returns(daemon: Daemon, client: ledgerq.Client, queue: str,
                                    tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    r = client.enqueue(queue, "slow")
    p = subprocess.Popen([sys.executable, str(script), daemon.grpc, queue, str(PY_ROOT)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        line = ""
        deadline = time.monotonic() + 15
        while not line.startswith("started") and time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line and p.poll() is not None:
                break
        assert line.startswith("started"), p.stderr.read() if p.stderr else ""
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    assert p.returncode == 0, err
    assert "run returned" in out
    job = client.get(r.id)
    assert ledgerq.state_name(job.state) == "SUCCEEDED"
    assert job.result == b"drained"
