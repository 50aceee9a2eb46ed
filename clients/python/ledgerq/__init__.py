"""ledgerq: Python client and worker for the ledgerq job-queue server.

    import ledgerq

    with ledgerq.Client("127.0.0.1:7400") as c:
        r = c.enqueue("emails", "welcome", {"to": "ada@example.com"}, idempotency_key="signup-42")

    w = ledgerq.Worker("127.0.0.1:7400", queues=["emails"])

    @w.handler("welcome")
    def welcome(job: ledgerq.JobContext):
        send_mail(job.json())
        return {"sent": True}

    w.run()  # until SIGTERM/SIGINT or w.stop(); drains running handlers

The raw protobuf messages and enums are in ``ledgerq.pb`` (generated from
proto/ledgerq/v1/ledgerq.proto by clients/python/generate.sh).
"""

from ._proto import pb, pb_grpc
from ._connection import TLS
from .client import BatchItemResult, Client, EnqueueResult, RetryPolicy
from .errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    Error,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    JobFailure,
    LeaseLost,
    NotFound,
    OutOfRange,
    PermanentError,
    PermissionDenied,
    Release,
    ResourceExhausted,
    TransientError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)
from .worker import JobContext, Outcome, Worker

__version__ = "0.1.0"

JobState = pb.JobState
ErrorKind = pb.ErrorKind


def state_name(state: int) -> str:
    """``"SUCCEEDED"`` for ``pb.JOB_STATE_SUCCEEDED`` and so on."""
    return pb.JobState.Name(state).removeprefix("JOB_STATE_")


__all__ = [
    "pb", "pb_grpc", "TLS", "Client", "EnqueueResult", "BatchItemResult", "RetryPolicy",
    "Worker", "JobContext", "Outcome", "JobState", "ErrorKind", "state_name",
    "Error", "Cancelled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
    "LeaseLost", "JobFailure", "PermanentError", "TransientError", "Release",
]
