"""Errors of the ledgerq client.

Two families:

* :class:`Error` and its subclasses are what a call to the server raised: one class per gRPC
  status code, carrying the code's name (``"INVALID_ARGUMENT"``) and the server's message intact
  (validation messages name the field, e.g. ``"queue: must match [A-Za-z0-9._:-]{1,128}"``).
* :class:`PermanentError`, :class:`TransientError` and :class:`Release` are raised *by worker
  handlers* to choose their job's outcome (see :class:`ledgerq.Worker`).
"""

from __future__ import annotations

import re
from typing import Dict, Optional, Type

import grpc

__all__ = [
    "Error",
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
    "LeaseLost",
    "JobFailure",
    "PermanentError",
    "TransientError",
    "Release",
    "from_rpc_error",
    "from_status",
]


class Error(Exception):
    """A call to ledgerqd failed.

    Attributes:
        code: the gRPC status code's name, e.g. ``"NOT_FOUND"``.
        message: the server's message, unchanged (it names the field for validation errors).
        address: the server address the call went to, when known.
    """

    status_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, code: Optional[str] = None,
                 address: Optional[str] = None) -> None:
        super().__init__(message)
        self.code: str = code or self.status_code.name
        self.message: str = message
        self.address: Optional[str] = address

    def __str__(self) -> str:
        where = f" (server {self.address})" if self.address else ""
        return f"{self.code}: {self.message}{where}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class Cancelled(Error):
    """The call was cancelled (CANCELLED)."""

    status_code = grpc.StatusCode.CANCELLED


class Unknown(Error):
    """UNKNOWN."""

    status_code = grpc.StatusCode.UNKNOWN


class InvalidArgument(Error):
    """A field failed validation (INVALID_ARGUMENT); the message names the field."""

    status_code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(Error):
    """The server did not answer within the call's timeout (DEADLINE_EXCEEDED).

    The request may or may not have taken effect; an idempotency key makes a retry safe.
    """

    status_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(Error):
    """No such job, or one the caller may not read: the server does not tell which (NOT_FOUND)."""

    status_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(Error):
    """The idempotency key already names another job, submitted with a different type or
    payload (ALREADY_EXISTS).

    Attributes:
        job_id: the id of the job the key names, parsed from the server's message (``None``
            when the message names none).
    """

    status_code = grpc.StatusCode.ALREADY_EXISTS
    _JOB_ID = re.compile(r"already names job (\d+)")

    def __init__(self, message: str, *, code: Optional[str] = None,
                 address: Optional[str] = None) -> None:
        super().__init__(message, code=code, address=address)
        m = self._JOB_ID.search(message)
        self.job_id: Optional[int] = int(m.group(1)) if m else None


class PermissionDenied(Error):
    """The caller's role or queues do not allow this (PERMISSION_DENIED)."""

    status_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(Error):
    """A limit was hit (RESOURCE_EXHAUSTED)."""

    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(Error):
    """The job is not in a state that allows this, or a lease token is stale, has the wrong
    nonce or belongs to another principal (FAILED_PRECONDITION)."""

    status_code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(Error):
    """ABORTED."""

    status_code = grpc.StatusCode.ABORTED


class OutOfRange(Error):
    """OUT_OF_RANGE."""

    status_code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(Error):
    """The server does not know this method (UNIMPLEMENTED)."""

    status_code = grpc.StatusCode.UNIMPLEMENTED


class Internal(Error):
    """INTERNAL."""

    status_code = grpc.StatusCode.INTERNAL


class Unavailable(Error):
    """No server could be reached (UNAVAILABLE); with several addresses, none of them."""

    status_code = grpc.StatusCode.UNAVAILABLE


class DataLoss(Error):
    """DATA_LOSS."""

    status_code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(Error):
    """Missing or unknown credentials (UNAUTHENTICATED)."""

    status_code = grpc.StatusCode.UNAUTHENTICATED


class LeaseLost(FailedPrecondition):
    """Raised by :meth:`ledgerq.JobContext.checkpoint` when the server says the lease is lost
    (it expired or moved on): whatever this attempt does next will be refused."""


_BY_CODE: Dict[grpc.StatusCode, Type[Error]] = {
    cls.status_code: cls
    for cls in (Cancelled, Unknown, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists,
                PermissionDenied, ResourceExhausted, FailedPrecondition, Aborted, OutOfRange,
                Unimplemented, Internal, Unavailable, DataLoss, Unauthenticated)
}
_BY_VALUE: Dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


def from_status(code: grpc.StatusCode, message: str, address: Optional[str] = None) -> Error:
    """The :class:`Error` subclass instance for a gRPC status code and message."""
    cls = _BY_CODE.get(code, Error)
    return cls(message, code=code.name, address=address)


def from_item_code(code: int, message: str, address: Optional[str] = None) -> Error:
    """The :class:`Error` for a numeric status code, as in ``ItemError.code`` of batch answers."""
    status = _BY_VALUE.get(code)
    if status is None:
        return Error(message, code=f"CODE_{code}", address=address)
    return from_status(status, message, address)


def from_rpc_error(e: grpc.RpcError, address: Optional[str] = None) -> Error:
    """Converts an exception raised by a grpc stub into an :class:`Error` subclass."""
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = e.details() if hasattr(e, "details") else str(e)
    return from_status(code or grpc.StatusCode.UNKNOWN, details or "", address)


# --------------------------------------------------------------------------------------------
# Raised by worker handlers.


class JobFailure(Exception):
    """Base of the exceptions a handler raises to fail its job with a chosen code.

    Attributes:
        code: a short machine-readable code (at most 128 bytes), e.g. ``"DB_TIMEOUT"``.
        message: what went wrong, for people (at most 4096 bytes; longer is truncated).
        details: e.g. a stack trace (at most 16 KiB); default: the traceback of the raise.
    """

    def __init__(self, code: str, message: str = "", *, details: Optional[str] = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.details = details


class PermanentError(JobFailure):
    """Fails the job permanently: it goes straight to the dead letters (DEAD), no retry."""


class TransientError(JobFailure):
    """Fails the job transiently: it is retried after backoff while attempts remain.

    Args:
        retry_after: seconds to wait before the retry, instead of the backoff's random draw
            (the server caps it at the retry policy's ``backoff_cap``).
    """

    def __init__(self, code: str, message: str = "", retry_after: Optional[float] = None, *,
                 details: Optional[str] = None) -> None:
        super().__init__(code, message, details=details)
        self.retry_after = retry_after


class Release(Exception):
    """Gives the job back to its queue without failing it (ReleaseRequest); the attempt counts.

    Args:
        delay: seconds before the job may be leased again.
    """

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(f"release (delay {delay}s)")
        self.delay = delay
