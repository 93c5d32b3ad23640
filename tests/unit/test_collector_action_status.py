"""`POST /v1/actions/{action_id}/status` (docs/design.md 12), without a broker: the status
event each request stands for, its content-derived id, the key's scope and the 422 naming
the field it cannot take."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from common.settings import Settings
from producers.collector import create_app
from producers.publisher import PublishError
from schemas.codec import event_content_id
from schemas.records import InteractionEvent

KEY = "status-key"
SCOPED = "scoped-key"
AT = "2026-01-05T10:00:00.000+00:00"


class Recording:
    """An `EventPublisher` whose broker acknowledges every event at once."""

    def __init__(self) -> None:
        self.events: list[InteractionEvent] = []

    def submit(
        self, event: InteractionEvent, report: Callable[[PublishError | None], None]
    ) -> None:
        self.events.append(event)
        report(None)


@pytest.fixture
def sent() -> Recording:
    return Recording()


@pytest.fixture
def client(sent: Recording) -> Iterator[TestClient]:
    settings = Settings(
        bootstrap="127.0.0.1:9",
        api_keys=[SecretStr(KEY), SecretStr(SCOPED)],
        collector_key_channels={_name(SCOPED): ["call"]},
    )
    app = create_app(settings, sent, readiness=lambda: (True, "unit"), named_types={"inquiry"})
    with TestClient(app) as test_client:
        yield test_client


def _name(key: str) -> str:
    from common.privacy import key_name

    return key_name(key.encode())


def post(client: TestClient, body: Any, key: str = KEY, action_id: str = "act-1") -> Any:
    return client.post(f"/v1/actions/{action_id}/status", json=body, headers={"X-API-Key": key})


def test_each_status_is_the_status_event_it_stands_for(client: TestClient, sent: Recording) -> None:
    requests = [
        {"customer_id": "C-1", "status": "acknowledged", "owner": "ana", "occurred_at": AT},
        {"customer_id": "C-1", "status": "reassigned", "owner": "bo", "note": "bo knows them"},
        {"customer_id": "C-1", "status": "done", "resolution": "unreachable"},
    ]
    for body in requests:
        answer = post(client, body)
        assert answer.status_code == 202, answer.text
        result = answer.json()["results"][0]
        assert result["status"] == "accepted" and "warning" not in result
    acknowledged, reassigned, done = sent.events
    assert (acknowledged.type, acknowledged.attributes) == ("action_acknowledged", {"owner": "ana"})
    assert acknowledged.occurred_at == 1_767_607_200_000
    assert (reassigned.type, reassigned.attributes, reassigned.text) == (
        "action_reassigned",
        {"owner": "bo"},
        "bo knows them",
    )
    assert (done.type, done.attributes) == ("action_done", {"resolution": "unreachable"})
    for event in sent.events:
        assert (event.customer_id, event.channel, event.reference) == ("C-1", "other", "act-1")
        assert event.event_id == event_content_id(event)


def test_a_retry_with_its_time_is_the_same_event(client: TestClient, sent: Recording) -> None:
    body = {"customer_id": "C-1", "status": "acknowledged", "owner": "ana", "occurred_at": AT}
    first = post(client, body).json()["results"][0]["event_id"]
    again = post(client, body).json()["results"][0]["event_id"]
    assert first == again == sent.events[0].event_id


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "acknowledged"}, "customer_id"),
        ({"customer_id": "C-1"}, "status"),
        ({"customer_id": "C-1", "status": "closed"}, "status"),
        ({"customer_id": "C-1", "status": "done", "resolution": "fixed"}, "resolution"),
        ({"customer_id": "C-1", "status": "done"}, "resolution"),
        ({"customer_id": "C-1", "status": "acknowledged", "resolution": "completed"}, "resolution"),
        ({"customer_id": "C-1", "status": "acknowledged", "owner": "x" * 257}, "owner"),
        ({"customer_id": "C-1", "status": "reassigned"}, "owner"),
        ({"customer_id": "C-1", "status": "acknowledged", "owner": 7}, "owner"),
        ({"customer_id": "C-1", "status": "acknowledged", "priority": 1}, "priority"),
        ({"customer_id": "C-1", "status": "acknowledged", "occurred_at": "soon"}, "occurred_at"),
        (["not", "an", "object"], "<body>"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(
    client: TestClient, sent: Recording, body: Any, field: str
) -> None:
    answer = post(client, body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["results"][0]["field"] == field
    assert answer.json()["error"].startswith(field)
    assert "x" * 257 not in answer.text  # the value is never quoted back
    assert sent.events == []


def test_keys_and_scopes_hold_as_for_events(client: TestClient, sent: Recording) -> None:
    body = {"customer_id": "C-1", "status": "acknowledged", "owner": "ana"}
    assert client.post("/v1/actions/act-1/status", json=body).status_code == 401
    scoped = post(client, body, key=SCOPED)
    assert scoped.status_code == 403 and "channel 'other'" in scoped.json()["error"]
    assert post(client, body, action_id="a" * 300).json()["results"][0]["field"] == "action_id"
    assert sent.events == []


def test_the_readme_status_curl_works_as_printed(client: TestClient, sent: Recording) -> None:
    import shlex
    from pathlib import Path

    readme = Path(__file__).resolve().parents[2] / "README.md"
    text = readme.read_text(encoding="utf-8").replace("\\\n", " ")
    (line,) = [x for x in text.splitlines() if x.startswith("curl -s") and "/status" in x]
    words = shlex.split(line)
    path = words[2].replace("$MOMENTS_COLLECTOR_URL", "")
    body = words[words.index("-d") + 1]
    answer = client.post(path, content=body, headers={"X-API-Key": KEY})
    assert answer.status_code == 202, answer.text
    assert sent.events[0].type == "action_done"
    assert sent.events[0].attributes == {"owner": "ana", "resolution": "completed"}
