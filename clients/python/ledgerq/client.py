"""The producer side: enqueue jobs, read them, cancel them, read their history."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Union

from . import errors
from ._connection import TLS, Addresses, Connection
from ._proto import Data, Seconds, encode_data, pb, to_duration, to_timestamp

__all__ = ["Client", "RetryPolicy", "EnqueueResult", "BatchItemResult"]


@dataclass(frozen=True)
class RetryPolicy:
    """A per-job backoff override: the delay before retry n is drawn from
    ``[0, min(backoff_cap, backoff_base * backoff_factor**(n-1)))``. None keeps the queue's."""

    backoff_base: Optional[Seconds] = None
    backoff_factor: Optional[float] = None
    backoff_cap: Optional[Seconds] = None

    def to_proto(self) -> Any:
        """The ``ledgerq.v1.RetryPolicy`` message."""
        p = pb.RetryPolicy()
        if self.backoff_base is not None:
            p.backoff_base.CopyFrom(to_duration(self.backoff_base))
        if self.backoff_factor is not None:
            p.backoff_factor = float(self.backoff_factor)
        if self.backoff_cap is not None:
            p.backoff_cap.CopyFrom(to_duration(self.backoff_cap))
        return p


@dataclass(frozen=True, repr=False)
class EnqueueResult:
    """What an enqueue answered.

    Attributes:
        job: the job (``ledgerq.v1.Job``); with ``deduplicated``, the original one.
        deduplicated: the idempotency key already named this job; nothing new was created.
    """

    job: Any
    deduplicated: bool

    @property
    def id(self) -> int:
        """The job's id."""
        return int(self.job.id)

    def __repr__(self) -> str:
        state = pb.JobState.Name(self.job.state).removeprefix("JOB_STATE_")
        return f"EnqueueResult(id={self.job.id}, state={state}, deduplicated={self.deduplicated})"


@dataclass(frozen=True)
class BatchItemResult:
    """One item's answer in :meth:`Client.enqueue_batch`: exactly one of ``result`` and
    ``error`` is set."""

    result: Optional[EnqueueResult] = None
    error: Optional[errors.Error] = None

    @property
    def ok(self) -> bool:
        """True when the item was enqueued (or deduplicated)."""
        return self.error is None


def build_enqueue_request(
    queue: str,
    type: str,
    payload: Data = None,
    *,
    priority: int = 0,
    run_at: Union[_dt.datetime, int, float, None] = None,
    delay: Optional[Seconds] = None,
    max_attempts: int = 0,
    idempotency_key: str = "",
    labels: Optional[Mapping[str, str]] = None,
    parent_job_id: int = 0,
    concurrency_key: str = "",
    traceparent: str = "",
    tracestate: str = "",
    retry_policy: Optional[RetryPolicy] = None,
) -> Any:
    """The ``ledgerq.v1.EnqueueRequest`` for :meth:`Client.enqueue`'s arguments."""
    req = pb.EnqueueRequest(
        queue=queue,
        type=type,
        payload=encode_data(payload),
        priority=int(priority),
        max_attempts=int(max_attempts),
        idempotency_key=idempotency_key or "",
        parent_job_id=int(parent_job_id or 0),
        concurrency_key=concurrency_key or "",
        traceparent=traceparent or "",
        tracestate=tracestate or "",
    )
    if run_at is not None:
        req.run_at.CopyFrom(to_timestamp(run_at))
    if delay is not None:
        req.delay.CopyFrom(to_duration(delay))
    if labels:
        for k, v in labels.items():
            req.labels[str(k)] = str(v)
    if retry_policy is not None:
        req.retry_policy.CopyFrom(retry_policy.to_proto())
    return req


class Client:
    """A blocking client for ledgerqd's JobService.

    Args:
        addresses: "host:port", a comma-separated list, or a list. With several, calls go to
            the one that answered last and move on to the next on UNAVAILABLE. Once
            replication lands, the client will follow the leader instead.
        token: bearer token (``lq_...``), sent as ``authorization: Bearer <token>``.
        tls: :class:`TLS` settings, True for TLS trusting the system's roots, None for plain
            text (only for loopback servers, or ones started with ``--insecure-allow-...``).
        timeout: seconds each call may take.

    Every method raises a :class:`ledgerq.Error` subclass on failure, carrying the gRPC
    status code's name and the server's message (which names the offending field).
    Thread-safe; use it as a context manager or call :meth:`close`.
    """

    def __init__(self, addresses: Addresses, token: Optional[str] = None,
                 tls: Union[TLS, bool, None] = None, timeout: float = 10.0) -> None:
        self._conn = Connection(addresses, token=token, tls=tls, timeout=timeout)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the channels."""
        self._conn.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> str:
        """The address calls currently go to."""
        return self._conn.current_address

    # -- JobService --------------------------------------------------------------------------

    def enqueue(
        self,
        queue: str,
        type: str,
        payload: Data = None,
        *,
        priority: int = 0,
        run_at: Union[_dt.datetime, int, float, None] = None,
        delay: Optional[Seconds] = None,
        max_attempts: int = 0,
        idempotency_key: str = "",
        labels: Optional[Mapping[str, str]] = None,
        parent_job_id: int = 0,
        concurrency_key: str = "",
        traceparent: str = "",
        tracestate: str = "",
        retry_policy: Optional[RetryPolicy] = None,
    ) -> EnqueueResult:
        """Enqueues one job; answered once it is durable.

        Args:
            queue, type: names matching ``[A-Za-z0-9._:-]{1,128}``.
            payload: bytes as they are, str as UTF-8, dict or list as JSON.
            priority: higher runs first.
            run_at: earliest start, a datetime (naive is UTC) or Unix seconds; or ``delay``
                (seconds or timedelta), not both.
            max_attempts: 0 takes the server's default.
            idempotency_key: scoped to the queue. The same key with the same type and
                payload returns the original job with ``deduplicated=True``; with a different
                type or payload it raises :class:`ledgerq.AlreadyExists` (``.job_id`` names
                the original job).
            labels: up to 64 string pairs.
            parent_job_id: makes this job a child of that job.
            concurrency_key: jobs of a queue with the same key run at most the queue's
                ``max_per_key`` at a time.
            traceparent, tracestate: W3C trace context (generated when absent).
            retry_policy: a per-job backoff override.
        """
        req = build_enqueue_request(
            queue, type, payload, priority=priority, run_at=run_at, delay=delay,
            max_attempts=max_attempts, idempotency_key=idempotency_key, labels=labels,
            parent_job_id=parent_job_id, concurrency_key=concurrency_key,
            traceparent=traceparent, tracestate=tracestate, retry_policy=retry_policy)
        resp = self._conn.call("JobService", "Enqueue", req)
        return EnqueueResult(job=resp.job, deduplicated=resp.deduplicated)

    def enqueue_batch(self, items: Sequence[Union[Mapping[str, Any], Any]]
                      ) -> List[BatchItemResult]:
        """Enqueues 1..1000 jobs in one atomic, durable write.

        Each item is a mapping of :meth:`enqueue`'s arguments (``{"queue": ..., "type": ...,
        "payload": ...}``) or a ``ledgerq.v1.EnqueueRequest``. Answers one
        :class:`BatchItemResult` per item, in order: an invalid item gets its own ``error``
        and does not stop the others. An empty or oversized batch raises InvalidArgument.
        """
        reqs = []
        for i, item in enumerate(items):
            if isinstance(item, pb.EnqueueRequest):
                reqs.append(item)
            elif isinstance(item, Mapping):
                try:
                    reqs.append(build_enqueue_request(**item))
                except TypeError as e:
                    raise TypeError(f"items[{i}]: {e}") from None
            else:
                raise TypeError(f"items[{i}]: expected a mapping or an EnqueueRequest, "
                                f"got {type(item).__name__}")
        resp = self._conn.call("JobService", "EnqueueBatch", pb.EnqueueBatchRequest(items=reqs))
        out: List[BatchItemResult] = []
        for r in resp.results:
            if r.WhichOneof("outcome") == "ok":
                out.append(BatchItemResult(
                    result=EnqueueResult(job=r.ok.job, deduplicated=r.ok.deduplicated)))
            else:
                out.append(BatchItemResult(error=errors.from_item_code(
                    r.error.code, r.error.message, self._conn.current_address)))
        return out

    def get(self, job_id: int) -> Any:
        """The job (``ledgerq.v1.Job``) with this id; NotFound when there is none."""
        return self._conn.call("JobService", "GetJob", pb.GetJobRequest(id=int(job_id)))

    def get_by_key(self, queue: str, idempotency_key: str) -> Any:
        """The job an idempotency key names in its queue."""
        req = pb.GetJobRequest(
            idempotency=pb.IdempotencyRef(queue=queue, idempotency_key=idempotency_key))
        return self._conn.call("JobService", "GetJob", req)

    def cancel(self, job_id: int, reason: str = "") -> Any:
        """Cancels a SCHEDULED or READY job and returns it; FailedPrecondition otherwise."""
        return self._conn.call("JobService", "CancelJob",
                               pb.CancelJobRequest(id=int(job_id), reason=reason))

    def history(self, job_id: Optional[int] = None, *, queue: Optional[str] = None,
                idempotency_key: Optional[str] = None) -> Any:
        """A job's history (``ledgerq.v1.JobHistory``: ``.job`` without payload and
        ``.events`` in order), by id or by queue + idempotency key."""
        if job_id is not None:
            req = pb.GetJobHistoryRequest(id=int(job_id))
        elif queue is not None and idempotency_key is not None:
            req = pb.GetJobHistoryRequest(
                idempotency=pb.IdempotencyRef(queue=queue, idempotency_key=idempotency_key))
        else:
            raise ValueError("history: give job_id, or queue and idempotency_key")
        resp = self._conn.call("JobService", "GetJobHistory", req)
        if not resp.jobs:
            raise errors.NotFound("no such job", address=self._conn.current_address)
        return resp.jobs[0]

    def trace(self, trace_id: str) -> List[Any]:
        """The histories of every job submitted in a W3C trace (32 hex digits)."""
        resp = self._conn.call("JobService", "GetJobHistory",
                               pb.GetJobHistoryRequest(trace_id=trace_id))
        return list(resp.jobs)

    # -- escape hatch ------------------------------------------------------------------------

    def call(self, service: str, method: str, request: Any, *,
             extra_timeout: float = 0.0) -> Any:
        """Any RPC of ``ledgerq.v1`` with this client's credentials and failover, e.g.
        ``client.call("AdminService", "ListQueues", ledgerq.pb.ListQueuesRequest())``."""
        return self._conn.call(service, method, request, extra_timeout=extra_timeout)

