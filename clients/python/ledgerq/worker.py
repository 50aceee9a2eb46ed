"""The worker side: lease jobs, run handlers on a thread pool, heartbeat, report outcomes.

Mirrors the C++ worker SDK (client/worker.h): leases are long-polled, every running lease is
heartbeated at a third of its duration by one background thread (one Heartbeat call for all
leases that are due), checkpoints ride on heartbeats, and stopping stops leasing and lets the
running handlers finish.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import FrameType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

import grpc

from . import errors
from ._connection import TLS, Addresses, Connection
from ._proto import Data, encode_data, from_timestamp, pb, to_duration

__all__ = ["Worker", "JobContext", "Outcome", "Handler"]

log = logging.getLogger("ledgerq.worker")

MAX_CODE_BYTES = 128
MAX_MESSAGE_BYTES = 4096
MAX_DETAILS_BYTES = 16 * 1024
MAX_RESULT_BYTES = 1 << 20
MAX_CHECKPOINT_BYTES = 64 * 1024
MAX_LEASE_JOBS = 256

#: How long a report (Complete, Fail, Release) is retried while the server is unavailable.
REPORT_RETRY_SECONDS = 30.0


def _truncate(text: str, limit: int, keep: str = "head") -> str:
    """At most ``limit`` UTF-8 bytes of ``text``, cut at a character boundary. ``keep="tail"``
    keeps the end (the useful part of a traceback) behind a marker."""
    raw = text.encode("utf-8", errors="replace")
    if len(raw) <= limit:
        return text
    if keep == "tail":
        marker = b"...(truncated)\n"
        return (marker + raw[len(raw) - (limit - len(marker)):]).decode("utf-8", errors="ignore")
    return raw[:limit].decode("utf-8", errors="ignore")


@dataclass(frozen=True)
class Outcome:
    """What a handler decided about its job, as reported to the server.

    Attributes:
        kind: ``"complete"``, ``"transient"``, ``"permanent"`` or ``"release"``.
        result: the result bytes (complete).
        code, message, details: the error (transient, permanent).
        retry_after: seconds before the retry (transient), None for the backoff's draw.
        delay: seconds before the job may be leased again (release).
    """

    kind: str
    result: bytes = b""
    code: str = ""
    message: str = ""
    details: str = ""
    retry_after: Optional[float] = None
    delay: float = 0.0


class JobContext:
    """One leased job, handed to its handler.

    Attributes:
        id, queue, type, payload, attempt: the job's; ``payload`` is bytes.
        job: the whole ``ledgerq.v1.Job``.
        leased: the whole ``ledgerq.v1.LeasedJob``.
        token: the lease's fencing token (``ledgerq.v1.LeaseToken``: job id, attempt, nonce).
            The worker sends it back exactly as received; handlers need not touch it.
        checkpoint_data: the checkpoint an earlier attempt saved (bytes), or None. After
            :meth:`checkpoint`, the checkpoint just saved.
        lease_lost: set when a heartbeat says the lease expired or moved on (or the worker
            released the job while stopping): whatever this attempt does will be refused, so
            a long handler should check it and give up.
    """

    def __init__(self, worker: "Worker", leased: Any) -> None:
        self._worker = worker
        self.leased = leased
        self.job = leased.job
        self.token = leased.token
        self.id: int = int(leased.job.id)
        self.queue: str = leased.job.queue
        self.type: str = leased.job.type
        self.payload: bytes = bytes(leased.job.payload)
        self.attempt: int = int(leased.token.attempt)
        self.checkpoint_data: Optional[bytes] = bytes(leased.checkpoint) or None
        self.lease_lost: bool = False
        self.deadline = from_timestamp(leased.deadline)
        # Worker bookkeeping.
        self._phase = "running"  # running -> reporting -> done
        self._released = False
        self._next_heartbeat = time.monotonic() + worker.lease_seconds / 3.0

    @property
    def key(self) -> Tuple[int, int]:
        """(job id, attempt): names this lease."""
        return (self.id, self.attempt)

    @property
    def traceparent(self) -> str:
        """This attempt's W3C traceparent (the job's trace id, a span id of its own)."""
        return self.leased.traceparent or self.job.traceparent

    @property
    def tracestate(self) -> str:
        """The W3C tracestate given at enqueue."""
        return self.leased.tracestate or self.job.tracestate

    @property
    def labels(self) -> Dict[str, str]:
        """The job's labels."""
        return dict(self.job.labels)

    @property
    def stopping(self) -> bool:
        """The worker is shutting down: finish quickly, or ``raise ledgerq.Release()``."""
        return self._worker.stopping

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload.decode("utf-8")) if self.payload else None

    def checkpoint(self, data: Data) -> None:
        """Saves a checkpoint durably, right away (a Heartbeat with ``set_checkpoint``), for
        later attempts of this job to find in ``checkpoint_data``. Also extends the lease.

        ``data``: bytes, str, dict or list (JSON), at most 64 KiB. Raises
        :class:`ledgerq.LeaseLost` when the lease is gone, another :class:`ledgerq.Error`
        when the call fails.
        """
        raw = encode_data(data, "checkpoint")
        if len(raw) > MAX_CHECKPOINT_BYTES:
            raise ValueError(f"checkpoint: {len(raw)} bytes exceed the limit of "
                             f"{MAX_CHECKPOINT_BYTES}")
        message = self._worker._heartbeat([self], raw)
        if self.lease_lost:
            raise errors.LeaseLost(f"job {self.id} attempt {self.attempt}: lease lost"
                                   + (f": {message}" if message else ""))
        self.checkpoint_data = raw

    def __repr__(self) -> str:
        return f"JobContext(id={self.id}, queue={self.queue!r}, type={self.type!r}, " \
               f"attempt={self.attempt})"


#: A handler takes the job and returns its result: bytes, str, dict/list (JSON) or None.
Handler = Callable[[JobContext], Any]
F = TypeVar("F", bound=Handler)

OnDone = Callable[[JobContext, Outcome, Optional[errors.Error]], None]


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Worker:
    """Leases jobs from some queues and runs a handler per job type on a thread pool.

    Args:
        addresses: "host:port", a comma-separated list, or a list (failover on UNAVAILABLE;
            the leader will be followed once replication lands).
        queues: a queue name or a list of them.
        token: bearer token of a principal with the worker role (or admin).
        tls: :class:`ledgerq.TLS`, True (system roots) or None.
        concurrency: handlers running at once; the worker never holds more leases than that.
        lease_seconds: lease duration (1 s .. 12 h); heartbeats go out at a third of it.
        worker_id: recorded with every attempt; default ``hostname:pid``.
        poll_wait: seconds one Lease call long-polls (0 .. 60).
        drain_timeout: on stop, seconds running handlers get to finish; the leases of those
            still running afterwards are released (the job goes back to its queue).
        timeout: seconds each unary call may take.
        on_done: called after each job's outcome was reported, with the job, the
            :class:`Outcome` and the report's error (None when the server accepted it).

    A handler's outcome is chosen by what it does: returning completes the job with the
    return value as its result; raising :class:`ledgerq.PermanentError` fails it permanently
    (DEAD); raising :class:`ledgerq.TransientError` (with an optional ``retry_after``) or any
    other exception fails it transiently (retried with backoff; code = the exception's class
    name, message = ``str(e)``, details = the traceback); raising :class:`ledgerq.Release`
    gives it back. A job of a type with no handler fails transiently with code NO_HANDLER.
    """

    def __init__(self, addresses: Addresses, queues: Union[str, Sequence[str]],
                 token: Optional[str] = None, tls: Union[TLS, bool, None] = None,
                 concurrency: int = 4, lease_seconds: float = 30.0,
                 worker_id: Optional[str] = None, *, poll_wait: float = 10.0,
                 drain_timeout: float = 30.0, timeout: float = 10.0,
                 on_done: Optional[OnDone] = None) -> None:
        self.queues: List[str] = [queues] if isinstance(queues, str) else list(queues)
        if not self.queues or not all(self.queues):
            raise ValueError("queues: give at least one queue")
        if not 1 <= int(concurrency) <= 1024:
            raise ValueError("concurrency: must be between 1 and 1024")
        if not 1.0 <= float(lease_seconds) <= 12 * 3600:
            raise ValueError("lease_seconds: must be between 1 and 43200")
        if not 0.0 <= float(poll_wait) <= 60.0:
            raise ValueError("poll_wait: must be between 0 and 60 seconds")
        if float(drain_timeout) < 0:
            raise ValueError("drain_timeout: must not be negative")
        self.concurrency = int(concurrency)
        self.lease_seconds = float(lease_seconds)
        self.poll_wait = float(poll_wait)
        self.drain_timeout = float(drain_timeout)
        self.worker_id: str = worker_id or _default_worker_id()
        self._on_done = on_done
        self._conn = Connection(addresses, token=token, tls=tls, timeout=timeout)
        self._handlers: Dict[str, Handler] = {}
        self._default: Optional[Handler] = None

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._active: Dict[Tuple[int, int], JobContext] = {}
        self._free = self.concurrency
        self._lease_future: Optional[grpc.Future] = None
        self._stop_event = threading.Event()
        self._force_event = threading.Event()
        # Set by signal handlers, which take no locks; the heartbeat thread acts on them.
        self._signalled = False
        self._signalled_twice = False
        self._running = False

    # -- registration ------------------------------------------------------------------------

    def register(self, type: str, fn: Handler) -> None:
        """Runs ``fn(job)`` for jobs of this type; type ``"*"`` handles every type that has no
        handler of its own."""
        if not callable(fn):
            raise TypeError("register: fn must be callable")
        if type == "*":
            self._default = fn
        else:
            self._handlers[type] = fn

    def handler(self, type: str) -> Callable[[F], F]:
        """Decorator form of :meth:`register`: ``@worker.handler("send")``."""

        def deco(fn: F) -> F:
            self.register(type, fn)
            return fn

        return deco

    # -- running -----------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called (or a signal arrived)."""
        return self._stop_event.is_set() or self._signalled

    def stop(self) -> None:
        """Stops leasing; :meth:`run` then drains the running handlers and returns.
        Thread-safe; call it from anywhere but a signal handler (``run()`` installs its own)."""
        with self._lock:
            self._stop_event.set()
            fut = self._lease_future
        if fut is not None:
            fut.cancel()  # a parked long-poll returns now
        with self._cond:
            self._cond.notify_all()

    def run(self) -> None:
        """Leases and runs jobs until :meth:`stop`, SIGTERM or SIGINT; then stops leasing, lets
        running handlers finish for up to ``drain_timeout`` seconds, releases the leases of
        those still running, and returns. A second signal skips the rest of the wait.

        Signal handlers are installed only when called on the main thread, and the previous
        ones are put back on return. A worker runs once: after :meth:`stop` (even one called
        before ``run()``), ``run()`` returns at once.
        """
        if not self._handlers and self._default is None:
            raise ValueError("register at least one handler before run()")
        with self._lock:
            if self._running:
                raise RuntimeError("run: this worker is already running")
            self._running = True
        previous = self._install_signal_handlers()
        hb_stop = threading.Event()
        heartbeats = threading.Thread(target=self._heartbeat_loop, args=(hb_stop,),
                                      name="ledgerq-heartbeat", daemon=True)
        pool = ThreadPoolExecutor(max_workers=self.concurrency,
                                  thread_name_prefix="ledgerq-handler")
        heartbeats.start()
        log.info("worker %s leasing from %s with concurrency %d", self.worker_id,
                 ",".join(self.queues), self.concurrency)
        try:
            self._lease_loop(pool)
        finally:
            self.stop()
            try:
                self._drain()
            finally:
                pool.shutdown(wait=False, cancel_futures=True)
                hb_stop.set()
                heartbeats.join(timeout=5.0)
                for sig, old in previous.items():
                    signal.signal(sig, old)
                with self._lock:
                    self._running = False
                log.info("worker %s stopped", self.worker_id)

    def close(self) -> None:
        """Closes the channels (after :meth:`run` returned)."""
        self._conn.close()

    def _install_signal_handlers(self) -> Dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: Dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        # No locks here: a signal handler runs on the main thread between two bytecodes, maybe
        # while that thread holds one. Plain flags; the heartbeat thread calls stop().
        if self._signalled:
            self._signalled_twice = True
        self._signalled = True

    def _lease_loop(self, pool: ThreadPoolExecutor) -> None:
        backoff = 0.5
        while not self.stopping:
            with self._cond:
                while self._free == 0 and not self.stopping:
                    self._cond.wait(0.5)
                if self.stopping:
                    return
                n = min(self._free, MAX_LEASE_JOBS)
                self._free -= n  # reserved until the jobs are leased and done
            req = pb.LeaseRequest(queues=self.queues, worker_id=self.worker_id, max_jobs=n)
            req.lease_duration.CopyFrom(to_duration(self.lease_seconds))
            req.wait.CopyFrom(to_duration(self.poll_wait))
            try:
                resp = self._conn.call("WorkerService", "Lease", req,
                                       extra_timeout=self.poll_wait,
                                       on_future=self._set_lease_future)
            except errors.Error as e:
                self._give_back(n)
                if self.stopping:
                    return
                log.warning("lease from %s failed: %s; retrying in %.1fs",
                            self._conn.current_address, e, backoff)
                self._stop_event.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            finally:
                with self._lock:
                    self._lease_future = None
            backoff = 0.5
            jobs = list(resp.jobs)
            self._give_back(n - len(jobs))
            for leased in jobs:
                ctx = JobContext(self, leased)
                with self._lock:
                    self._active[ctx.key] = ctx
                pool.submit(self._process, ctx)

    def _set_lease_future(self, fut: grpc.Future) -> None:
        with self._lock:
            self._lease_future = fut
            stopping = self._stop_event.is_set()
        if stopping:
            fut.cancel()

    def _give_back(self, n: int) -> None:
        if n <= 0:
            return
        with self._cond:
            self._free += n
            self._cond.notify_all()

    # -- one job -----------------------------------------------------------------------------

    def _process(self, ctx: JobContext) -> None:
        outcome: Optional[Outcome] = None
        err: Optional[errors.Error] = None
        try:
            if ctx._released:
                return
            outcome = self._run_handler(ctx)
            with self._lock:
                if ctx._released:  # released by the drain: the server already took it back
                    log.info("job %d attempt %d finished after its lease was released", ctx.id,
                             ctx.attempt)
                    return
                ctx._phase = "reporting"
            err = self._report(ctx, outcome)
            if err is not None:
                log.warning("job %d attempt %d: %s not accepted: %s", ctx.id, ctx.attempt,
                            outcome.kind, err)
            if self._on_done is not None:
                try:
                    self._on_done(ctx, outcome, err)
                except Exception:  # noqa: BLE001 - a callback must not kill the worker
                    log.exception("on_done callback failed")
        finally:
            with self._cond:
                ctx._phase = "done"
                self._active.pop(ctx.key, None)
                self._free += 1
                self._cond.notify_all()

    def _run_handler(self, ctx: JobContext) -> Outcome:
        fn = self._handlers.get(ctx.type, self._default)
        if fn is None:
            return Outcome(kind="transient", code="NO_HANDLER",
                           message=f"worker {self.worker_id} has no handler for type {ctx.type}")
        try:
            value = fn(ctx)
            result = encode_data(value, "result")
            if len(result) > MAX_RESULT_BYTES:
                return Outcome(kind="permanent", code="RESULT_TOO_LARGE",
                               message=f"result of {len(result)} bytes exceeds the limit of "
                                       f"{MAX_RESULT_BYTES}")
            return Outcome(kind="complete", result=result)
        except errors.PermanentError as e:
            return Outcome(kind="permanent", code=e.code, message=e.message,
                           details=e.details if e.details is not None else traceback.format_exc())
        except errors.TransientError as e:
            return Outcome(kind="transient", code=e.code, message=e.message,
                           details=e.details if e.details is not None else traceback.format_exc(),
                           retry_after=e.retry_after)
        except errors.Release as e:
            return Outcome(kind="release", delay=float(e.delay))
        except BaseException as e:  # noqa: BLE001 - any other exception fails transiently
            return Outcome(kind="transient", code=type(e).__name__,
                           message=str(e) or type(e).__name__, details=traceback.format_exc())

    def _report(self, ctx: JobContext, o: Outcome) -> Optional[errors.Error]:
        """Sends the outcome with the job's token exactly as leased. Retried while the server
        is unavailable: the token makes a repeat harmless (a repeated Complete gets the first
        answer)."""
        if o.kind == "complete":
            method, req = "Complete", pb.CompleteRequest(token=ctx.token, result=o.result)
        elif o.kind in ("transient", "permanent"):
            kind = pb.ERROR_KIND_PERMANENT if o.kind == "permanent" else pb.ERROR_KIND_TRANSIENT
            req = pb.FailRequest(token=ctx.token, error=pb.JobError(
                kind=kind,
                code=_truncate(o.code or "ERROR", MAX_CODE_BYTES),
                message=_truncate(o.message, MAX_MESSAGE_BYTES),
                details=_truncate(o.details, MAX_DETAILS_BYTES, keep="tail")))
            if o.retry_after is not None:
                req.retry_after.CopyFrom(to_duration(max(0.0, float(o.retry_after))))
            method = "Fail"
        else:
            method, req = "Release", pb.ReleaseRequest(token=ctx.token)
            req.delay.CopyFrom(to_duration(max(0.0, o.delay)))
        give_up = time.monotonic() + REPORT_RETRY_SECONDS
        while True:
            try:
                self._conn.call("WorkerService", method, req)
                return None
            except (errors.Unavailable, errors.DeadlineExceeded) as e:
                if time.monotonic() + 0.5 > give_up or self._force_event.is_set():
                    return e
                self._force_event.wait(0.5)
            except errors.Error as e:
                return e

    # -- heartbeats --------------------------------------------------------------------------

    def _heartbeat(self, ctxs: List[JobContext], checkpoint: Optional[bytes]) -> str:
        """One Heartbeat for these leases (with a checkpoint, for all of them); marks lost
        leases. Returns the server's message for the first lost one. Raises errors.Error."""
        req = pb.HeartbeatRequest(tokens=[c.token for c in ctxs])
        req.extend_by.CopyFrom(to_duration(self.lease_seconds))
        if checkpoint is not None:
            req.checkpoint = checkpoint
            req.set_checkpoint = True
        resp = self._conn.call("WorkerService", "Heartbeat", req)
        by_key = {(r.token.job_id, r.token.attempt): r for r in resp.results}
        lost_message = ""
        now = time.monotonic()
        for i, c in enumerate(ctxs):
            r = by_key.get(c.key)
            if r is None and i < len(resp.results):
                r = resp.results[i]
            if r is None:
                continue
            if r.lease_lost:
                if not c.lease_lost:
                    log.warning("job %d attempt %d: lease lost: %s", c.id, c.attempt, r.message)
                c.lease_lost = True
                lost_message = lost_message or r.message
            else:
                c._next_heartbeat = now + self.lease_seconds / 3.0
                c.deadline = from_timestamp(r.deadline) or c.deadline
        return lost_message

    def _heartbeat_loop(self, done: threading.Event) -> None:
        tick = min(max(self.lease_seconds / 10.0, 0.05), 1.0)
        poll = min(tick, 0.2)  # also how fast a signal turns into stop()
        next_tick = time.monotonic()
        failing = False
        while not done.wait(poll):
            if self._signalled and not self._stop_event.is_set():
                log.info("worker %s: signal received; stopping, waiting for running jobs",
                         self.worker_id)
                self.stop()
            if self._signalled_twice and not self._force_event.is_set():
                log.info("worker %s: second signal; not waiting any longer", self.worker_id)
                self._force_event.set()
                with self._cond:
                    self._cond.notify_all()
            now = time.monotonic()
            if now < next_tick:
                continue
            next_tick = now + tick
            with self._lock:
                due = [c for c in self._active.values()
                       if c._phase == "running" and not c.lease_lost and not c._released
                       and c._next_heartbeat <= now]
            if not due:
                continue
            try:
                self._heartbeat(due, None)
                if failing:
                    log.info("heartbeats are answered again")
                failing = False
            except errors.Error as e:
                if not failing:
                    log.warning("heartbeat of %d lease(s) failed: %s; retrying", len(due), e)
                failing = True

    # -- stopping ----------------------------------------------------------------------------

    def _drain(self) -> None:
        """Waits for running handlers (up to drain_timeout), releases the leases of those still
        running, then waits briefly for reports in flight."""
        deadline = time.monotonic() + self.drain_timeout
        with self._cond:
            if self._active:
                log.info("worker %s: waiting up to %.1fs for %d running job(s)", self.worker_id,
                         self.drain_timeout, len(self._active))
            while self._active and not self._force_event.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
            to_release = [c for c in self._active.values() if c._phase == "running"]
            for c in to_release:
                c._released = True
                c.lease_lost = True  # tell the handler its work will not count
        for c in to_release:
            log.warning("job %d attempt %d still running at the end of the drain; releasing it",
                        c.id, c.attempt)
            err = self._report(c, Outcome(kind="release"))
            if err is not None:
                log.warning("job %d attempt %d: release not accepted: %s", c.id, c.attempt, err)
        # Reports already on their way: give them the time of one call.
        end = time.monotonic() + self._conn.timeout
        with self._cond:
            while any(c._phase == "reporting" for c in self._active.values()):
                left = end - time.monotonic()
                if left <= 0 or self._force_event.is_set():
                    break
                self._cond.wait(min(left, 0.2))
