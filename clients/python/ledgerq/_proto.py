"""The generated stubs (``ledgerq.v1``) and small conversions between Python values and protobuf.

The stubs are generated from ``proto/ledgerq/v1/ledgerq.proto`` into ``ledgerq/v1/`` by
``clients/python/generate.sh`` and are never committed.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any, Optional, Union

from google.protobuf import duration_pb2, timestamp_pb2

try:
    from .v1 import ledgerq_pb2 as pb
    from .v1 import ledgerq_pb2_grpc as pb_grpc
except ImportError as e:  # pragma: no cover - exercised only without generated stubs
    raise ImportError(
        "ledgerq: the gRPC stubs are not generated; run clients/python/generate.sh "
        f"(it writes clients/python/ledgerq/v1/) [{e}]"
    ) from e

__all__ = ["pb", "pb_grpc", "encode_data", "to_timestamp", "to_duration", "from_timestamp",
           "Data", "Seconds"]

#: What payloads, results and checkpoints may be given as: bytes as they are, str as UTF-8,
#: dict or list as compact JSON, None as empty.
Data = Union[bytes, bytearray, memoryview, str, dict, list, None]
#: A duration: seconds as a number, or a timedelta.
Seconds = Union[int, float, _dt.timedelta]


def encode_data(value: Any, what: str = "payload") -> bytes:
    """Encodes a payload, result or checkpoint. Raises TypeError naming ``what`` otherwise."""
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raise TypeError(f"{what}: expected bytes, str, dict, list or None, got {type(value).__name__}")


def _seconds(value: Seconds) -> float:
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    return float(value)


def to_duration(value: Seconds) -> duration_pb2.Duration:
    """A protobuf Duration from seconds (int or float) or a timedelta."""
    s = _seconds(value)
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(round(s * 1e9)))
    return d


def to_timestamp(value: Union[_dt.datetime, int, float]) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp from a datetime (naive means UTC) or Unix seconds."""
    t = timestamp_pb2.Timestamp()
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        t.FromDatetime(value)
    else:
        t.FromNanoseconds(int(round(float(value) * 1e9)))
    return t


def from_timestamp(t: timestamp_pb2.Timestamp) -> Optional[_dt.datetime]:
    """A timezone-aware UTC datetime, or None for an unset (zero) timestamp."""
    if t.seconds == 0 and t.nanos == 0:
        return None
    return _dt.datetime.fromtimestamp(t.seconds + t.nanos / 1e9, tz=_dt.timezone.utc)
