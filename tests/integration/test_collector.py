"""The HTTP collector over real HTTP (httpx → uvicorn on a free port) with a real Tansu broker."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from pydantic import SecretStr

from common.settings import Settings
from moments.stack import free_port
from producers.collector import (
    BrokerReadiness,
    CollectorConfigError,
    collector_in_thread,
    collector_publisher,
    create_app,
)
from schemas.codec import event_content_id, event_from_json
from tests.integration.read_back import read_back

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _event(n: int, **changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": f"web-{uuid.uuid4().hex[:8]}-{n}",
        "customer_id": f"CUST-{n % 3}",
        "channel": "web",
        "type": "inquiry",
        "occurred_at": "2026-03-02T09:14:03.000+00:00",
        "source": "web-portal",
    }
    event.update(changes)
    return event


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    return settings.replace(api_keys=[SecretStr(KEY), SecretStr("second-key")])


@pytest.fixture
def collector(keyed: Settings) -> Iterator[str]:
    with (
        collector_publisher(keyed) as publisher,
        collector_in_thread(
            create_app(keyed, publisher, max_body_bytes=64 * 1024, max_batch=50),
            port=free_port(),
        ) as url,
    ):
        yield url


def test_batch_is_partially_accepted_and_accepted_events_reach_the_topic(
    collector: str, keyed: Settings
) -> None:
    good = _event(1, type="address_changed", attributes={"new_address": "7 Quay Street"})
    no_id = _event(2)
    del no_id["event_id"]
    bad_channel = _event(3, channel="fax")
    bad_time = _event(4, occurred_at="yesterday")

    response = httpx.post(
        f"{collector}/v1/events",
        json=[good, no_id, bad_channel, bad_time],
        headers=AUTH,
        timeout=30,
    )

    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    results = body["results"]
    assert results[0] == {"index": 0, "status": "accepted", "event_id": good["event_id"]}
    assert results[1]["status"] == "accepted"
    assert results[1]["event_id"] == event_content_id(event_from_json(no_id))
    assert results[2]["status"] == "rejected" and results[2]["field"] == "channel"
    assert "fax" in results[2]["error"]
    assert results[3]["status"] == "rejected" and results[3]["field"] == "occurred_at"

    seen = read_back(keyed, [results[0]["event_id"], results[1]["event_id"]])
    assert seen[str(good["event_id"])].attributes == {"new_address": "7 Quay Street"}
    assert seen[results[1]["event_id"]].customer_id == no_id["customer_id"]


def test_one_event_object_and_events_wrapper_are_accepted(collector: str, keyed: Settings) -> None:
    single = _event(5, type="feedback_given", text="Love the app")
    wrapped = _event(6, channel="email")

    one = httpx.post(f"{collector}/v1/events", json=single, headers=AUTH, timeout=30)
    many = httpx.post(
        f"{collector}/v1/events",
        json={"events": [wrapped]},
        headers={"X-API-Key": "second-key"},
        timeout=30,
    )

    assert one.status_code == 202 and one.json()["accepted"] == 1
    assert many.status_code == 202 and many.json()["results"][0]["event_id"] == wrapped["event_id"]
    seen = read_back(keyed, [str(single["event_id"]), str(wrapped["event_id"])])
    assert seen[str(single["event_id"])].text == "Love the app"


def test_all_rejected_is_422_with_a_result_per_event(collector: str) -> None:
    response = httpx.post(
        f"{collector}/v1/events",
        json=[_event(7, customer_id=""), {"hello": "world"}, "not an object"],
        headers=AUTH,
        timeout=30,
    )

    assert response.status_code == 422
    body = response.json()
    assert "every event was rejected" in body["error"]
    assert body["accepted"] == 0
    assert [r["status"] for r in body["results"]] == ["rejected"] * 3
    assert body["results"][0]["field"] == "customer_id"
    assert body["results"][1]["field"] == "hello"  # unknown field named
    assert body["results"][2]["field"] == "<record>"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing API key"),
        ({"Authorization": "Bearer wrong-key"}, "invalid API key"),
        ({"X-API-Key": "nope"}, "invalid API key"),
        ({"Authorization": "Basic dGVzdDp0ZXN0"}, "missing API key"),
    ],
)
def test_requests_without_a_valid_key_get_401(
    collector: str, headers: dict[str, str], message: str
) -> None:
    response = httpx.post(f"{collector}/v1/events", json=_event(8), headers=headers, timeout=30)

    assert response.status_code == 401
    assert message in response.json()["error"]
    assert "WWW-Authenticate" in response.headers


def test_oversize_body_and_batch_get_413(collector: str) -> None:
    huge = _event(9, text="x" * (70 * 1024))
    too_big = httpx.post(f"{collector}/v1/events", json=huge, headers=AUTH, timeout=30)
    too_many = httpx.post(
        f"{collector}/v1/events", json=[_event(n) for n in range(51)], headers=AUTH, timeout=30
    )
    # A chunked body (no Content-Length) is cut off while it streams in.
    chunks = (b"[" + b" " * 40_000, b" " * 40_000 + b"]")
    streamed = httpx.post(f"{collector}/v1/events", content=iter(chunks), headers=AUTH, timeout=30)

    assert too_big.status_code == 413 and "65536" in too_big.json()["error"]
    assert (
        too_many.status_code == 413
        and "51 events exceeds the limit of 50" in too_many.json()["error"]
    )
    assert streamed.status_code == 413


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty body"),
        (b"42", "expected one event"),
        (b"[]", "empty batch"),
        (b'{"events": {"a": 1}}', "'events' must be a JSON array"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_requests_get_400_naming_the_problem(
    collector: str, content: bytes, message: str
) -> None:
    response = httpx.post(
        f"{collector}/v1/events",
        content=content,
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=30,
    )

    assert response.status_code == 400
    assert message in response.json()["error"]


def test_health_readiness_and_metrics(collector: str) -> None:
    httpx.post(f"{collector}/v1/events", json=_event(10), headers={}, timeout=30)  # a 401

    health = httpx.get(f"{collector}/healthz", timeout=30)
    ready = httpx.get(f"{collector}/readyz", timeout=30)
    metrics = httpx.get(f"{collector}/metrics", timeout=30)

    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert metrics.status_code == 200
    assert 'moments_collector_requests_total{code="401"}' in metrics.text


def test_readiness_reports_an_unreachable_broker() -> None:
    dead = Settings(bootstrap=f"127.0.0.1:{free_port()}")

    ok, detail = BrokerReadiness(dead, timeout_s=1.0)()

    assert not ok
    assert "unreachable" in detail or "not available" in detail


def test_collector_refuses_to_start_without_keys_unless_insecure(settings: Settings) -> None:
    unkeyed = settings.replace(api_keys=[])
    with (
        collector_publisher(unkeyed) as publisher,
        pytest.raises(CollectorConfigError, match="MOMENTS_API_KEYS"),
    ):
        create_app(unkeyed, publisher)
    with (
        collector_publisher(unkeyed) as publisher,
        collector_in_thread(create_app(unkeyed, publisher, insecure=True), port=free_port()) as url,
    ):
        response = httpx.post(f"{url}/v1/events", json=_event(11), timeout=30)
    assert response.status_code == 202


def test_bounded_load_loop_all_acknowledged(collector: str, keyed: Settings) -> None:
    """A small, bounded load: 4 clients × 50 requests of 10 events; every event acknowledged."""
    requests_per_client, clients, batch = 50, 4, 10

    def client(number: int) -> list[str]:
        ids: list[str] = []
        with httpx.Client(base_url=collector, headers=AUTH, timeout=30) as http:
            for r in range(requests_per_client):
                events = [_event(number * 10_000 + r * batch + i) for i in range(batch)]
                response = http.post("/v1/events", content=json.dumps(events))
                assert response.status_code == 202
                ids.extend(e["event_id"] for e in response.json()["results"])
        return ids

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        ids = [i for chunk in pool.map(client, range(clients)) for i in chunk]
    elapsed = time.perf_counter() - started

    total = requests_per_client * clients
    print(f"collector: {total / elapsed:.0f} requests/s, {len(ids) / elapsed:.0f} events/s")
    assert len(ids) == total * batch
    read_back(keyed, ids[:: max(1, len(ids) // 50)], timeout_s=30)


def test_slow_clients_are_cut_off_and_the_collector_keeps_answering(keyed: Settings) -> None:
    """A client that never finishes its headers is closed after the header timeout; one that
    never finishes its body gets 408; /healthz answers all the while."""
    strict = keyed.replace(collector_header_timeout_s=0.5, collector_body_timeout_s=0.5)
    with (
        collector_publisher(strict) as publisher,
        collector_in_thread(create_app(strict, publisher), port=free_port()) as url,
    ):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as silent:
            silent.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")  # never ends
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            assert silent.recv(1024) == b""  # closed by the collector, not by the 10 s timeout
        with socket.create_connection((host, int(port)), timeout=10) as slow:
            slow.sendall(
                b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )  # fmt: skip
            answer = slow.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
