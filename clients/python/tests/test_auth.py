"""Tokens, roles, the lease token's nonce, and TLS/mTLS, against ledgerqd with an auth file."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Iterator

import pytest

import ledgerq
from conftest import Daemon, cli_path, job_state, running, wait_for, _binary


def add_principal(auth_file: Path, name: str, role: str) -> str:
    """`ledgerq auth add`; returns the token it prints."""
    out = subprocess.run(
        [str(_binary(cli_path())), "auth", "add", "--file", str(auth_file), "--principal", name,
         "--role", role],
        check=True, capture_output=True, text=True, timeout=20).stdout
    m = re.search(r"token \(shown only now; the file keeps its SHA-256\): (lq_[0-9a-f]+)", out)
    assert m, out
    return m.group(1)


@pytest.fixture(scope="module")
def tokens_and_daemon(tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[tuple[Dict[str, str], Daemon]]:
    tmp = tmp_path_factory.mktemp("auth")
    auth = tmp / "auth.toml"
    tokens = {
        "producer": add_principal(auth, "billing-api", "producer"),
        "worker": add_principal(auth, "billing-worker", "worker"),
        "worker2": add_principal(auth, "other-worker", "worker"),
    }
    d = Daemon(tmp / "data", ["--auth-file", str(auth)]).start()
    yield tokens, d
    d.stop()


@pytest.fixture
def tokens(tokens_and_daemon: tuple[Dict[str, str], Daemon]) -> Dict[str, str]:
    return tokens_and_daemon[0]


@pytest.fixture
def auth_daemon(tokens_and_daemon: tuple[Dict[str, str], Daemon]) -> Daemon:
    return tokens_and_daemon[1]


def test_no_token_is_unauthenticated(auth_daemon: Daemon, queue: str) -> None:
    with ledgerq.Client(auth_daemon.grpc) as c:
        with pytest.raises(ledgerq.Unauthenticated) as e:
            c.enqueue(queue, "t")
        assert e.value.code == "UNAUTHENTICATED"
    with ledgerq.Client(auth_daemon.grpc, token="lq_" + "0" * 64) as c:
        with pytest.raises(ledgerq.Unauthenticated):
            c.enqueue(queue, "t")


def test_token_works_and_roles_apply(auth_daemon: Daemon, tokens: Dict[str, str],
                                     queue: str) -> None:
    with ledgerq.Client(auth_daemon.grpc, token=tokens["producer"]) as c:
        r = c.enqueue(queue, "t", {"a": 1})
        job = c.get(r.id)
        assert job.submitted_by == "billing-api"
        assert job.payload == b'{"a":1}'
        with pytest.raises(ledgerq.PermissionDenied) as e:
            c.call("WorkerService", "Lease", ledgerq.pb.LeaseRequest(queues=[queue]))
        assert "lease" in e.value.message or "work" in e.value.message
        with pytest.raises(ledgerq.PermissionDenied):  # CancelJob is for operators
            c.cancel(r.id)


def test_worker_principal_round_trip(auth_daemon: Daemon, tokens: Dict[str, str],
                                     queue: str) -> None:
    with ledgerq.Client(auth_daemon.grpc, token=tokens["producer"]) as c:
        r = c.enqueue(queue, "t", "payload")
        nonces = []
        w = ledgerq.Worker(auth_daemon.grpc, [queue], token=tokens["worker"], poll_wait=2)

        @w.handler("t")
        def handle(job: ledgerq.JobContext) -> str:
            nonces.append(job.token.nonce)
            job.checkpoint(b"half")  # a heartbeat with the nonce, as the worker principal
            return job.payload.decode().upper()

        with running(w):
            wait_for(lambda: job_state(c, r.id) == "SUCCEEDED", what="SUCCEEDED")
        assert c.get(r.id).result == b"PAYLOAD"
        assert len(nonces) == 1 and len(nonces[0]) == 16
        leased = [e for e in c.history(r.id).events if e.type == "LEASED"][0]
        assert leased.principal == "billing-worker"


def test_lease_token_nonce_and_principal_are_checked(auth_daemon: Daemon, tokens: Dict[str, str],
                                                     queue: str) -> None:
    pb = ledgerq.pb
    with ledgerq.Client(auth_daemon.grpc, token=tokens["producer"]) as producer, \
            ledgerq.Client(auth_daemon.grpc, token=tokens["worker"]) as worker, \
            ledgerq.Client(auth_daemon.grpc, token=tokens["worker2"]) as other:
        r = producer.enqueue(queue, "t")
        leased = worker.call("WorkerService", "Lease",
                             pb.LeaseRequest(queues=[queue], worker_id="raw", max_jobs=1))
        (lj,) = leased.jobs
        token = lj.token
        assert token.job_id == r.id and len(token.nonce) == 16

        without_nonce = pb.LeaseToken(job_id=token.job_id, attempt=token.attempt)
        with pytest.raises(ledgerq.FailedPrecondition):
            worker.call("WorkerService", "Complete",
                        pb.CompleteRequest(token=without_nonce, result=b"x"))
        with pytest.raises(ledgerq.FailedPrecondition):  # another principal, the right token
            other.call("WorkerService", "Complete", pb.CompleteRequest(token=token, result=b"x"))

        done = worker.call("WorkerService", "Complete",
                           pb.CompleteRequest(token=token, result=b"ok"))
        assert ledgerq.state_name(done.job.state) == "SUCCEEDED"
        again = worker.call("WorkerService", "Complete",
                            pb.CompleteRequest(token=token, result=b"ok"))
        assert again.job.id == r.id  # a repeated Complete gets the first answer
        assert producer.get(r.id).result == b"ok"


# ----------------------------------------------------------------------------------------------
# TLS and mTLS


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=ledgerq test CA", cwd=d)
    for name, subj, ext in (
            ("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
            ("client", "/CN=cert-producer", "extendedKeyUsage=clientAuth")):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj,
                 cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile",
                 f"{name}.ext", cwd=d)
    (d / "auth.toml").write_text(
        '[[principal]]\nname = "cert-producer"\nrole = "producer"\n')  # no token: certs only
    return d


def test_tls(pki: Path, tmp_path: Path, queue: str) -> None:
    d = Daemon(tmp_path / "data", ["--tls-cert", str(pki / "server.pem"),
                                   "--tls-key", str(pki / "server.key")]).start()
    try:
        with ledgerq.Client(d.grpc, tls=ledgerq.TLS(ca_file=str(pki / "ca.pem"))) as c:
            r = c.enqueue(queue, "t")
            assert job_state(c, r.id) == "READY"
        with ledgerq.Client(d.grpc, timeout=3) as plain:
            with pytest.raises(ledgerq.Unavailable):
                plain.get(r.id)
    finally:
        d.stop()


def test_mtls_client_certificate_names_the_principal(pki: Path, tmp_path: Path,
                                                     queue: str) -> None:
    d = Daemon(tmp_path / "data", ["--tls-cert", str(pki / "server.pem"),
                                   "--tls-key", str(pki / "server.key"),
                                   "--tls-client-ca", str(pki / "ca.pem"),
                                   "--auth-file", str(pki / "auth.toml")]).start()
    try:
        tls = ledgerq.TLS(ca_file=str(pki / "ca.pem"), cert_file=str(pki / "client.pem"),
                          key_file=str(pki / "client.key"))
        with ledgerq.Client(d.grpc, tls=tls) as c:
            r = c.enqueue(queue, "t")
            assert c.get(r.id).submitted_by == "cert-producer"
        with ledgerq.Client(d.grpc, tls=ledgerq.TLS(ca_file=str(pki / "ca.pem")),
                            timeout=3) as no_cert:
            with pytest.raises((ledgerq.Unavailable, ledgerq.Unauthenticated)):
                no_cert.get(r.id)
    finally:
        d.stop()


def test_tls_settings_are_checked(pki: Path) -> None:
    with pytest.raises(ValueError, match="cert_file and key_file"):
        ledgerq.Client("127.0.0.1:7400", tls=ledgerq.TLS(cert_file=str(pki / "client.pem")))
    with pytest.raises(ValueError, match="no PEM block"):
        ledgerq.Client("127.0.0.1:7400", tls=ledgerq.TLS(ca_file=str(pki / "auth.toml")))

