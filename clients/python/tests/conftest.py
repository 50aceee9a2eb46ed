"""Fixtures: a real ledgerqd per session (and per auth test module), clients, workers.

The daemon binary is $LEDGERQD, else <repo>/build/server/ledgerqd; the CLI is $LEDGERQ_CLI,
else <repo>/build/client/ledgerq. Every wait here is bounded in time.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue as queue_mod
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

import pytest

HERE = Path(__file__).resolve().parent
PY_ROOT = HERE.parent  # clients/python
REPO = PY_ROOT.parent.parent
sys.path.insert(0, str(PY_ROOT))

import ledgerq  # noqa: E402

START_TIMEOUT = 20.0


def ledgerqd_path() -> Path:
    return Path(os.environ.get("LEDGERQD") or REPO / "build" / "server" / "ledgerqd")


def cli_path() -> Path:
    return Path(os.environ.get("LEDGERQ_CLI") or REPO / "build" / "client" / "ledgerq")


def _binary(path: Path) -> Path:
    """The binary; waits once (2 s) if it is missing, as a rebuild may be replacing it."""
    if not os.access(path, os.X_OK):
        time.sleep(2.0)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} not found or not executable (build it, or set LEDGERQD/LEDGERQ_CLI)")
    return path


class Daemon:
    """One ledgerqd on free loopback ports, its data in ``data_dir``."""

    def __init__(self, data_dir: Path, extra_args: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.proc: Optional[subprocess.Popen] = None
        self.grpc = ""
        self.http = ""
        self.stderr_path = data_dir.parent / f"{data_dir.name}.stderr"
        self._lines: "queue_mod.Queue[Optional[str]]" = queue_mod.Queue()

    def start(self) -> "Daemon":
        for attempt in range(2):
            try:
                self._start_once()
                return self
            except (OSError, RuntimeError) as e:
                self.stop()
                if attempt == 1:
                    pytest.fail(f"ledgerqd did not start: {e}\n{self.stderr_tail()}")
                time.sleep(2.0)  # the binary may be being rebuilt: retry once
        return self

    def _start_once(self) -> None:
        binary = _binary(ledgerqd_path())
        args = [str(binary), "--data-dir", str(self.data_dir), "--grpc-listen", "127.0.0.1:0",
                "--http-listen", "127.0.0.1:0", "--sync", "none", *self.extra_args]
        self._lines = queue_mod.Queue()
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err,
                                         stdin=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read_stdout, args=(self.proc, self._lines),
                         daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no 'listening' line within {START_TIMEOUT}s")
            try:
                line = self._lines.get(timeout=min(left, 0.5))
            except queue_mod.Empty:
                continue
            if line is None:
                raise RuntimeError(f"ledgerqd exited with {self.proc.wait(5)}")
            m = re.search(r"listening grpc=(\S+) http=(\S+)", line)
            if m:
                self.grpc, self.http = m.group(1), m.group(2)
                return

    @staticmethod
    def _read_stdout(proc: subprocess.Popen, lines: "queue_mod.Queue[Optional[str]]") -> None:
        assert proc.stdout is not None
        for line in proc.stdout:  # keeps draining, so the pipe never fills
            lines.put(line)
        lines.put(None)

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)

    def stderr_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("ledgerqd") / "data").start()
    yield d
    d.stop()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[ledgerq.Client]:
    with ledgerq.Client(daemon.grpc) as c:
        yield c


_counter = itertools.count(1)


@pytest.fixture
def queue(request: pytest.FixtureRequest) -> str:
    """A queue name of this test's own."""
    name = re.sub(r"[^A-Za-z0-9._:-]", "-", request.node.name)[:100]
    return f"{name}.{next(_counter)}"


def wait_for(pred: Callable[[], object], timeout: float = 10.0, what: str = "condition",
             interval: float = 0.05) -> object:
    """Polls ``pred`` until it is truthy (returns its value) or fails the test after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def job_state(c: ledgerq.Client, job_id: int) -> str:
    return ledgerq.state_name(c.get(job_id).state)


@contextlib.contextmanager
def running(worker: ledgerq.Worker, join_timeout: float = 15.0) -> Iterator[ledgerq.Worker]:
    """Runs the worker on a thread for the block; stops and joins it after."""
    errors: List[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=target, name="test-worker", daemon=True)
    t.start()
    try:
        yield worker
    finally:
        worker.stop()
        t.join(join_timeout)
        worker.close()
        assert not t.is_alive(), "worker.run() did not return after stop()"
        if errors:
            raise errors[0]


def fast_retries() -> ledgerq.RetryPolicy:
    """Retries after at most 50 ms, so tests do not wait for the default 1 s backoff."""
    return ledgerq.RetryPolicy(backoff_base=0.05, backoff_factor=1.0, backoff_cap=0.05)
