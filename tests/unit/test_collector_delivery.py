"""The collector answers for each event from that event's own delivery report (no broker).

The broker is played by `RefusingProducer`: it refuses the records of some customers
(as a broker refuses a record larger than the topic takes) and acknowledges the rest.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

import producers.collector as collector_module
import producers.publisher as publisher_module
from common.privacy import key_name
from common.settings import Settings
from producers.collector import collector_publisher, create_app
from schemas.codec import event_content_id, read_events_jsonl
from tests.support.faults import RefusingProducer

KEY = "unit-key"


def event(n: int, refused: bool) -> dict[str, Any]:
    return {
        "event_id": f"ev-{n}",
        "customer_id": f"{'refuse' if refused else 'ok'}-{n}",
        "channel": "web",
        "type": "inquiry",
        "occurred_at": "2026-01-05T10:00:00.000+00:00",
        "source": "unit",
    }


@pytest.fixture
def refusing(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[RefusingProducer]]:
    made: list[RefusingProducer] = []

    def producer(config: dict[str, Any]) -> RefusingProducer:
        made.append(RefusingProducer(config, lambda key: key.startswith("refuse"), real=False))
        return made[-1]

    monkeypatch.setattr(publisher_module, "Producer", producer)
    yield made


def test_each_request_gets_its_own_events_delivery_reports(
    refusing: list[RefusingProducer],
) -> None:
    settings = Settings(bootstrap="127.0.0.1:9", api_keys=[SecretStr(KEY)])
    publisher = collector_publisher(settings)
    app = create_app(settings, publisher, readiness=lambda: (True, "unit"))

    async def post_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
            return await asyncio.gather(
                *(
                    client.post("/v1/events", json=event(n, n % 3 == 0), headers={"X-API-Key": KEY})
                    for n in range(60)
                )
            )

    try:
        responses = asyncio.run(post_all())
    finally:
        publisher.close()
    # A request whose only event the broker refused took nothing: 422, with its result.
    assert [r.status_code for r in responses] == [422 if n % 3 == 0 else 202 for n in range(60)]
    statuses = [r.json()["results"][0]["status"] for r in responses]
    assert statuses == ["rejected" if n % 3 == 0 else "accepted" for n in range(60)]
    refused = responses[0].json()["results"][0]
    assert (refused["field"], "MSG_SIZE_TOO_LARGE" in refused["error"]) == ("<event>", True)
    assert refusing[0].refused == 20


def test_a_batch_reports_each_event_by_its_own_report(refusing: list[RefusingProducer]) -> None:
    settings = Settings(bootstrap="127.0.0.1:9", api_keys=[SecretStr(KEY)])
    with collector_publisher(settings) as publisher:
        app = create_app(settings, publisher, readiness=lambda: (True, "unit"))
        batch = [event(n, n in (1, 4)) for n in range(6)]
        with TestClient(app) as client:
            response = client.post("/v1/events", json=batch, headers={"X-API-Key": KEY})
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (4, 2)
    assert [r["status"] for r in body["results"]] == [
        "accepted",
        "rejected",
        "accepted",
        "accepted",
        "rejected",
        "accepted",
    ]


def test_per_key_rate_limit_channels_and_future_dates(
    refusing: list[RefusingProducer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The clock stands still: a slow machine must not refill the bucket between requests.
    monkeypatch.setattr(collector_module.time, "monotonic", lambda: 1000.0)
    web_only = key_name(b"web-key")
    settings = Settings(
        bootstrap="127.0.0.1:9",
        api_keys=[SecretStr(KEY), SecretStr("web-key")],
        collector_rate_limit=5,
        collector_key_channels={web_only: ["web"]},
    )
    with collector_publisher(settings) as publisher:
        app = create_app(settings, publisher, readiness=lambda: (True, "unit"))
        with TestClient(app) as client:
            call = {**event(1, False), "channel": "call"}
            future = {**event(2, False), "occurred_at": "9999-01-01T00:00:00+00:00"}
            policed = client.post(
                "/v1/events", json=[call, future], headers={"X-API-Key": "web-key"}
            )
            dated = client.post("/v1/events", json=[future], headers={"X-API-Key": "web-key"})
            answers = [
                client.post("/v1/events", json=event(n, False), headers={"X-API-Key": KEY})
                for n in range(10)
            ]
    # A channel beyond the key's scope refuses the whole request, naming it (test_collector_keys).
    assert policed.status_code == 403 and "channel 'call'" in policed.json()["error"]
    assert dated.status_code == 422  # its only event rejected
    assert [(r["status"], r["field"]) for r in dated.json()["results"]] == [
        ("rejected", "occurred_at")
    ]
    codes = [a.status_code for a in answers]
    assert codes[:5] == [202] * 5 and 429 in codes[5:]
    limited = next(a for a in answers if a.status_code == 429)
    assert int(limited.headers["Retry-After"]) >= 1


def test_an_event_without_id_gets_its_content_id_so_a_retry_is_a_duplicate(
    refusing: list[RefusingProducer], tmp_path: Path
) -> None:
    settings = Settings(bootstrap="127.0.0.1:9", api_keys=[SecretStr(KEY)])
    without_id = {k: v for k, v in event(7, False).items() if k != "event_id"}
    with collector_publisher(settings) as publisher:
        app = create_app(settings, publisher, readiness=lambda: (True, "unit"))
        with TestClient(app) as client:
            answers = [
                client.post("/v1/events", json=without_id, headers={"X-API-Key": KEY})
                for _ in range(2)
            ]
    ids = [answer.json()["results"][0]["event_id"] for answer in answers]
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(without_id) + "\n", encoding="utf-8")
    (replayed,) = read_events_jsonl(path)
    assert ids == [replayed.event_id] * 2
    assert ids[0] == event_content_id(replayed)


def test_events_breaking_a_rule_between_fields_are_rejected_naming_the_field(
    refusing: list[RefusingProducer],
) -> None:
    settings = Settings(bootstrap="127.0.0.1:9", api_keys=[SecretStr(KEY)])
    preferences = {**event(3, False), "type": "contact_preferences_changed"}
    batch = [
        {**event(1, False), "customer_since": "2026-01-07"},  # occurred 2026-01-05
        {**event(2, False), "customer_since": "1899-12-31"},
        {**preferences, "attributes": {"engagement": "unsubscribe"}},
        {**preferences, "attributes": {"preferred_channel": "billing"}},
        {**preferences, "attributes": {"engagement": "opt_out", "preferred_channel": "web"}},
        {**event(4, False), "customer_since": "2026-01-06"},
    ]
    with collector_publisher(settings) as publisher:
        app = create_app(settings, publisher, readiness=lambda: (True, "unit"))
        with TestClient(app) as client:
            response = client.post("/v1/events", json=batch, headers={"X-API-Key": KEY})
    assert response.status_code == 202
    results = response.json()["results"]
    assert [(r["status"], r.get("field")) for r in results] == [
        ("rejected", "customer_since"),
        ("rejected", "customer_since"),
        ("rejected", "attributes.engagement"),
        ("rejected", "attributes.preferred_channel"),
        ("accepted", None),
        ("accepted", None),
    ]
    assert "in the future" in results[0]["error"]
