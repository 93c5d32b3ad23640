"""Collector keys: each key's scope (channels, event types, sources), refused by name with 403;
collector keys kept apart from the read API's and the desk's; and the port stays usable
while one client holds a thousand idle connections."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from common.privacy import key_name
from common.settings import Settings, SettingsError
from moments.stack import free_port
from producers.collector import CollectorConfigError, collector_in_thread, create_app
from producers.publisher import PublishError
from schemas.records import InteractionEvent

KEY = "collector-key"
WEB_KEY = "web-form-key"
#: What the website's form may send: its own inquiries and feedback, nothing about accounts.
WEB_SCOPE = {
    "channels": ["web"],
    "event_types": ["inquiry", "feedback_given"],
    "sources": ["website"],
}


class AckingPublisher:
    """A broker that acknowledges every event at once; keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[InteractionEvent] = []

    def submit(
        self, event: InteractionEvent, report: Callable[[PublishError | None], None]
    ) -> None:
        self.sent.append(event)
        report(None)


def event(n: int, event_type: str = "inquiry", **fields: Any) -> dict[str, Any]:
    return {
        "customer_id": f"c-{n}",
        "channel": "web",
        "type": event_type,
        "occurred_at": "2026-01-05T10:00:00.000+00:00",
        "source": "website",
        **fields,
    }


def settings(**fields: Any) -> Settings:
    return Settings(
        bootstrap="127.0.0.1:9",
        api_keys=[SecretStr(KEY), SecretStr(WEB_KEY)],
        collector_key_channels={key_name(WEB_KEY.encode()): WEB_SCOPE},
        **fields,
    )


@pytest.fixture
def client() -> Iterator[tuple[TestClient, AckingPublisher]]:
    publisher = AckingPublisher()
    app = create_app(settings(), publisher, readiness=lambda: (True, "unit"))
    with TestClient(app) as test_client:
        yield test_client, publisher


@pytest.mark.parametrize("event_type", ["address_changed", "payment_received", "account_closed"])
def test_a_web_key_cannot_send_account_events_for_any_customer(
    client: tuple[TestClient, AckingPublisher], event_type: str
) -> None:
    http, publisher = client
    answer = http.post("/v1/events", json=event(1, event_type), headers={"X-API-Key": WEB_KEY})
    assert answer.status_code == 403
    error = answer.json()["error"]
    assert f"event type {event_type!r}" in error and "feedback_given, inquiry" in error
    assert publisher.sent == []


def test_scope_parts_are_each_enforced_and_what_is_in_scope_goes_through(
    client: tuple[TestClient, AckingPublisher],
) -> None:
    http, publisher = client
    web = {"X-API-Key": WEB_KEY}
    by_phone = http.post("/v1/events", json=event(1, channel="call"), headers=web)
    from_crm = http.post("/v1/events", json=event(2, source="crm-import"), headers=web)
    allowed = http.post("/v1/events", json=event(3), headers=web)
    unlimited = http.post("/v1/events", json=event(4, "account_closed"), headers={"X-API-Key": KEY})
    assert by_phone.status_code == 403 and "channel 'call'" in by_phone.json()["error"]
    assert from_crm.status_code == 403 and "source 'crm-import'" in from_crm.json()["error"]
    assert (allowed.status_code, unlimited.status_code) == (202, 202)
    assert [e.customer_id for e in publisher.sent] == ["c-3", "c-4"]


def test_a_batch_holding_one_event_beyond_the_scope_sends_none(
    client: tuple[TestClient, AckingPublisher],
) -> None:
    http, publisher = client
    batch = [event(1), event(2, "address_changed"), {"not": "an event"}]
    answer = http.post("/v1/events", json=batch, headers={"X-API-Key": WEB_KEY})
    assert answer.status_code == 403 and "events[1]" in answer.json()["error"]
    assert publisher.sent == []


def test_the_original_list_of_channels_still_works() -> None:
    publisher = AckingPublisher()
    limited = settings().replace(collector_key_channels={key_name(WEB_KEY.encode()): ["web"]})
    with TestClient(create_app(limited, publisher, readiness=lambda: (True, "u"))) as http:
        web = {"X-API-Key": WEB_KEY}
        assert http.post("/v1/events", json=event(1, "account_closed"), headers=web).is_success
        by_phone = http.post("/v1/events", json=event(2, channel="call"), headers=web)
        assert by_phone.status_code == 403
    assert len(publisher.sent) == 1


def test_a_scope_with_an_unknown_part_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match=r"MOMENTS_COLLECTOR_KEY_CHANNELS.*event_type"):
        settings().replace(collector_key_channels={"key-1": {"event_type": ["inquiry"]}})


@pytest.mark.parametrize("role", ["read_api_keys", "desk_keys"])
def test_the_collector_refuses_a_key_that_another_role_also_holds(role: str) -> None:
    shared = settings(**{role: [SecretStr(KEY)]})
    with pytest.raises(CollectorConfigError, match=key_name(KEY.encode())) as refused:
        create_app(shared, AckingPublisher(), readiness=lambda: (True, "u"))
    assert KEY not in str(refused.value)


# --------------------------------------------------------------------------- idle connections


def idle_connections(port: int, count: int, source: str) -> list[socket.socket]:
    """COUNT connections to PORT from the loopback address SOURCE that never send a byte."""
    opened: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((source, 0))
        sock.settimeout(10)
        with contextlib.suppress(OSError):  # the server may already have closed it
            sock.connect(("127.0.0.1", port))
        opened.append(sock)
    return opened


def test_a_thousand_idle_connections_leave_the_collector_answering() -> None:
    publisher = AckingPublisher()
    port = free_port()
    app = create_app(settings(), publisher, readiness=lambda: (True, "unit"))
    with collector_in_thread(app, port=port) as url:
        # Another client address (all of 127.0.0.0/8 is this machine): the probes' and the
        # channels' connections are not the idle client's.
        idle = idle_connections(port, 1000, "127.0.0.2")
        try:
            with httpx.Client(base_url=url, timeout=10) as http:
                ready = http.get("/readyz")
                keyed = http.post("/v1/events", json=event(1), headers={"X-API-Key": KEY})
            # The idle client, reconnecting, is refused at once: it holds no more than its cap.
            (again,) = idle_connections(port, 1, "127.0.0.2")
            refused = again.recv(200)
            again.close()
        finally:
            for sock in idle:
                sock.close()
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert keyed.status_code == 202 and keyed.json()["accepted"] == 1
    assert refused.startswith(b"HTTP/1.1 429")
    assert [e.customer_id for e in publisher.sent] == ["c-1"]


def test_an_idle_connection_is_closed_after_the_header_deadline() -> None:
    app = create_app(
        settings(collector_header_timeout_s=0.2), AckingPublisher(), readiness=lambda: (True, "u")
    )
    port = free_port()
    with collector_in_thread(app, port=port):
        (sock,) = idle_connections(port, 1, "127.0.0.1")
        with sock:
            assert sock.recv(100) == b""  # closed by the server, not by the 10 s client timeout
