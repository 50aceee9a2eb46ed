"""Channels, credentials and address failover shared by Client and Worker."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import grpc

from . import errors
from ._proto import pb_grpc

__all__ = ["TLS", "Addresses", "Connection", "parse_addresses"]

#: One "host:port", a comma-separated list of them, or a sequence of them.
Addresses = Union[str, Sequence[str]]

_MAX_MESSAGE = 64 << 20


@dataclass(frozen=True)
class TLS:
    """TLS settings for talking to a ledgerqd started with ``--tls-cert``/``--tls-key``.

    Args:
        ca_file: PEM bundle to trust; None trusts the system's roots.
        cert_file: PEM client certificate chain, for mTLS (with ``key_file``).
        key_file: PEM private key of ``cert_file``.
        server_name: the name to check the server's certificate against, when it differs from
            the host of the address (gRPC's ``ssl_target_name_override``).
    """

    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    server_name: Optional[str] = None

    @classmethod
    def from_env(cls) -> Optional["TLS"]:
        """TLS from LEDGERQ_TLS_CA, LEDGERQ_TLS_CERT and LEDGERQ_TLS_KEY, as the CLI reads
        them; None when none is set."""
        ca = os.environ.get("LEDGERQ_TLS_CA") or None
        cert = os.environ.get("LEDGERQ_TLS_CERT") or None
        key = os.environ.get("LEDGERQ_TLS_KEY") or None
        if not (ca or cert or key):
            return None
        return cls(ca_file=ca, cert_file=cert, key_file=key)

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials; raises ValueError naming the setting and the file."""
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls: cert_file and key_file go together (mTLS)")
        ca = _read_pem(self.ca_file, "tls.ca_file") if self.ca_file else None
        key = _read_pem(self.key_file, "tls.key_file") if self.key_file else None
        cert = _read_pem(self.cert_file, "tls.cert_file") if self.cert_file else None
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                            certificate_chain=cert)


def _read_pem(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"{what}: cannot read {path}: {e.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{what}: {path} holds no PEM block")
    return data


def parse_addresses(addresses: Addresses) -> List[str]:
    """A list of "host:port" from a string (comma-separated allowed) or a sequence."""
    if isinstance(addresses, str):
        items = addresses.split(",")
    else:
        items = list(addresses)
    out = [a.strip() for a in items if a and a.strip()]
    if not out:
        raise ValueError("addresses: give at least one host:port")
    return out


class _Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.JobService = pb_grpc.JobServiceStub(channel)
        self.WorkerService = pb_grpc.WorkerServiceStub(channel)
        self.AdminService = pb_grpc.AdminServiceStub(channel)
        self.AuditService = pb_grpc.AuditServiceStub(channel)


class Connection:
    """Channels to one or more ledgerqd addresses, the token, and the failover rule.

    Until replication lands, the rule is: use the address that answered last; when a call gets
    UNAVAILABLE, try the next address in order, each at most once per call. Once ledgerqd runs
    as a Raft group, this is where the client will follow the leader.
    """

    def __init__(self, addresses: Addresses, token: Optional[str] = None,
                 tls: Union[TLS, bool, None] = None, timeout: float = 10.0) -> None:
        self.addresses: List[str] = parse_addresses(addresses)
        if token is not None and any(c.isspace() for c in token):
            raise ValueError("token: a token has no spaces or line breaks")
        if timeout <= 0:
            raise ValueError("timeout: must be positive")
        self.timeout = float(timeout)
        self._metadata: Tuple[Tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ())
        if tls is True:
            tls = TLS()
        self._tls: Optional[TLS] = tls or None
        self._creds = self._tls.credentials() if self._tls else None
        self._lock = threading.Lock()
        self._current = 0
        self._stubs: Dict[int, _Stubs] = {}
        self._closed = False

    @property
    def current_address(self) -> str:
        """The address calls go to first."""
        return self.addresses[self._current]

    def _stubs_for(self, i: int) -> _Stubs:
        with self._lock:
            if self._closed:
                raise errors.Cancelled("the client is closed")
            s = self._stubs.get(i)
            if s is None:
                options: List[Tuple[str, Any]] = [
                    ("grpc.max_receive_message_length", _MAX_MESSAGE),
                    ("grpc.max_send_message_length", _MAX_MESSAGE),
                ]
                if self._creds is not None:
                    if self._tls and self._tls.server_name:
                        options.append(("grpc.ssl_target_name_override", self._tls.server_name))
                    ch = grpc.secure_channel(self.addresses[i], self._creds, options=options)
                else:
                    ch = grpc.insecure_channel(self.addresses[i], options=options)
                s = _Stubs(ch)
                self._stubs[i] = s
            return s

    def call(self, service: str, method: str, request: Any, *, extra_timeout: float = 0.0,
             on_future: Optional[Callable[[grpc.Future], None]] = None) -> Any:
        """Calls ``service.method(request)`` with the token and the timeout (plus
        ``extra_timeout``), failing over on UNAVAILABLE. Raises an :class:`errors.Error`.

        With ``on_future``, the call is made as a future that is handed to ``on_future`` first,
        so another thread can cancel it (a cancelled call raises :class:`errors.Cancelled`).
        """
        n = len(self.addresses)
        start = self._current
        last: Optional[errors.Error] = None
        for k in range(n):
            i = (start + k) % n
            address = self.addresses[i]
            fn = getattr(getattr(self._stubs_for(i), service), method)
            timeout = self.timeout + extra_timeout
            try:
                if on_future is None:
                    resp = fn(request, timeout=timeout, metadata=self._metadata)
                else:
                    fut = fn.future(request, timeout=timeout, metadata=self._metadata)
                    on_future(fut)
                    resp = fut.result()
            except grpc.FutureCancelledError:
                raise errors.Cancelled("the call was cancelled", address=address) from None
            except grpc.RpcError as e:
                err = errors.from_rpc_error(e, address)
                if isinstance(err, errors.Unavailable):
                    last = err
                    if n > 1:
                        with self._lock:
                            if self._current == i:
                                self._current = (i + 1) % n
                    continue
                raise err from None
            if self._current != i:
                with self._lock:
                    self._current = i
            return resp
        assert last is not None
        if n > 1:
            raise errors.Unavailable(
                f"no server answered ({', '.join(self.addresses)}); last: {last.message}",
                address=last.address)
        raise last

    def close(self) -> None:
        """Closes every channel; later calls raise :class:`errors.Cancelled`."""
        with self._lock:
            self._closed = True
            stubs, self._stubs = self._stubs, {}
        for s in stubs.values():
            s.channel.close()
