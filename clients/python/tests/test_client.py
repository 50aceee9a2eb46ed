"""Client against a real ledgerqd: enqueue, get, history, cancel, idempotency, errors, batch."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

import ledgerq
from conftest import Daemon, job_state


def test_enqueue_get_history_cancel(client: ledgerq.Client, queue: str) -> None:
    r = client.enqueue(queue, "welcome", {"to": "ada@example.com"}, priority=3,
                       labels={"tenant": "t1"}, max_attempts=7)
    assert not r.deduplicated
    assert r.id > 0
    job = client.get(r.id)
    assert job.queue == queue and job.type == "welcome"
    assert json.loads(job.payload) == {"to": "ada@example.com"}
    assert job.priority == 3 and job.max_attempts == 7 and dict(job.labels) == {"tenant": "t1"}
    assert ledgerq.state_name(job.state) == "READY"

    cancelled = client.cancel(r.id, "changed my mind")
    assert ledgerq.state_name(cancelled.state) == "CANCELLED"
    assert cancelled.cancel_reason == "changed my mind"

    h = client.history(r.id)
    assert h.job.id == r.id
    assert [e.type for e in h.events] == ["SUBMITTED", "CANCELLED"]
    assert [e.seq for e in h.events] == sorted(e.seq for e in h.events)

    # A cancelled job cannot be cancelled again.
    with pytest.raises(ledgerq.FailedPrecondition) as e:
        client.cancel(r.id)
    assert e.value.code == "FAILED_PRECONDITION"


def test_payload_kinds(client: ledgerq.Client, queue: str) -> None:
    assert client.get(client.enqueue(queue, "t", b"\x00\x01").id).payload == b"\x00\x01"
    assert client.get(client.enqueue(queue, "t", "héllo").id).payload == "héllo".encode()
    assert client.get(client.enqueue(queue, "t", [1, 2]).id).payload == b"[1,2]"
    assert client.get(client.enqueue(queue, "t").id).payload == b""
    with pytest.raises(TypeError, match="payload"):
        client.enqueue(queue, "t", 42)  # type: ignore[arg-type]


def test_run_at_and_delay_schedule(client: ledgerq.Client, queue: str) -> None:
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    a = client.enqueue(queue, "t", run_at=later)
    assert ledgerq.state_name(a.job.state) == "SCHEDULED"
    assert abs(a.job.run_at.seconds - later.timestamp()) < 2
    b = client.enqueue(queue, "t", delay=600)
    assert ledgerq.state_name(b.job.state) == "SCHEDULED"
    assert abs(b.job.run_at.seconds - (time.time() + 600)) < 5


def test_idempotency(client: ledgerq.Client, queue: str) -> None:
    first = client.enqueue(queue, "welcome", {"to": "ada"}, idempotency_key="signup-42")
    again = client.enqueue(queue, "welcome", {"to": "ada"}, idempotency_key="signup-42")
    assert not first.deduplicated
    assert again.deduplicated and again.id == first.id

    with pytest.raises(ledgerq.AlreadyExists) as e:
        client.enqueue(queue, "welcome", {"to": "bob"}, idempotency_key="signup-42")
    assert e.value.code == "ALREADY_EXISTS"
    assert e.value.job_id == first.id
    assert f"already names job {first.id}" in e.value.message
    assert isinstance(e.value, ledgerq.Error)

    assert client.get_by_key(queue, "signup-42").id == first.id
    h = client.history(queue=queue, idempotency_key="signup-42")
    assert [ev.type for ev in h.events] == ["SUBMITTED", "DEDUPLICATED"]


def test_invalid_argument_names_the_field(client: ledgerq.Client, queue: str) -> None:
    with pytest.raises(ledgerq.InvalidArgument) as e:
        client.enqueue("no spaces allowed", "t")
    assert e.value.code == "INVALID_ARGUMENT"
    assert e.value.message.startswith("queue:")

    with pytest.raises(ledgerq.InvalidArgument) as e:
        client.enqueue(queue, "t", max_attempts=5000)
    assert "max_attempts" in e.value.message
    assert "max_attempts" in str(e.value)


def test_not_found(client: ledgerq.Client) -> None:
    with pytest.raises(ledgerq.NotFound) as e:
        client.get(10**15)
    assert e.value.code == "NOT_FOUND"
    with pytest.raises(ledgerq.NotFound):
        client.history(10**15)


def test_batch_with_one_bad_item(client: ledgerq.Client, queue: str) -> None:
    results = client.enqueue_batch([
        {"queue": queue, "type": "a", "payload": {"n": 1}},
        {"queue": "bad queue", "type": "b"},
        {"queue": queue, "type": "c", "payload": "three", "idempotency_key": "k3"},
    ])
    assert [r.ok for r in results] == [True, False, True]
    bad = results[1].error
    assert isinstance(bad, ledgerq.InvalidArgument)
    assert bad.message.startswith("items[1].queue")
    assert results[0].result is not None and results[2].result is not None
    assert client.get(results[2].result.id).payload == b"three"
    assert results[0].result.id < results[2].result.id

    with pytest.raises(ledgerq.InvalidArgument, match="items"):
        client.enqueue_batch([])


def test_failover_to_the_next_address(daemon: Daemon, queue: str) -> None:
    # Port 1 on loopback refuses connections: UNAVAILABLE, then the next address answers.
    with ledgerq.Client(["127.0.0.1:1", daemon.grpc], timeout=5) as c:
        r = c.enqueue(queue, "t")
        assert c.address == daemon.grpc
        assert job_state(c, r.id) == "READY"
    with ledgerq.Client("127.0.0.1:1, 127.0.0.1:2", timeout=5) as c:
        with pytest.raises(ledgerq.Unavailable) as e:
            c.get(1)
        assert "127.0.0.1:1" in e.value.message and "127.0.0.1:2" in e.value.message


def test_raw_call_escape_hatch(client: ledgerq.Client, queue: str) -> None:
    client.enqueue(queue, "t")
    resp = client.call("AdminService", "ListQueues", ledgerq.pb.ListQueuesRequest())
    assert any(q.name == queue and q.ready == 1 for q in resp.queues)


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="addresses"):
        ledgerq.Client([])
    with pytest.raises(ValueError, match="token"):
        ledgerq.Client("127.0.0.1:7400", token="two words")
    with pytest.raises(ValueError, match="tls.ca_file"):
        ledgerq.Client("127.0.0.1:7400", tls=ledgerq.TLS(ca_file="/nonexistent.pem"))
