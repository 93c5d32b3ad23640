"""Erasure without a broker (docs/design.md 10.1): the registry's rules, the markers' wire form,
the sinks' consume loop handing markers to the effect in order, the PostgreSQL sink's buffer,
the webhook sink's `customer.forgotten`."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from common.erasures import ErasureRegistry, ErasureRegistryError, key_check
from common.privacy import keyed_customer_hash, set_id_hash_key
from common.settings import Settings
from common.topics import DAY_MS, changelog_config, compacted_topics, topic_config
from schemas.wire import (
    CONTROL_HEADER,
    FORGET,
    RecordKind,
    Topics,
    classify,
    erased_at_of,
    erasure_headers,
)
from sinks.consume import ConsumeLoop, Offsets, Progress, Route
from sinks.postgres import PostgresSink
from sinks.webhook import (
    FORGOTTEN_TYPE,
    Forgotten,
    RetryPolicy,
    WebhookSink,
    forgotten_body,
    forgotten_event,
)
from tests.support.sinks import ACTION, DECISION, FakeLetters, FakeMessage


@pytest.fixture(autouse=True)
def hash_key() -> Any:
    set_id_hash_key("unit-erasure-key")
    yield
    set_id_hash_key(None)


class _RegistryRecord:
    """A record of the registry topic as confluent-kafka hands it out."""

    def __init__(self, key: str, value: dict[str, Any] | bytes, offset: int = 0) -> None:
        self._key = key.encode()
        self._value = value if isinstance(value, bytes) else json.dumps(value).encode()
        self._offset = offset

    def error(self) -> None:
        return None

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def offset(self) -> int:
        return self._offset


def _registry(*erased: tuple[str, int]) -> ErasureRegistry:
    registry = ErasureRegistry(Settings(bootstrap="127.0.0.1:1"))
    for customer, at in erased:
        registry._take(
            _RegistryRecord(
                keyed_customer_hash(customer), {"erased_at": at, "key_check": key_check()}
            )
        )
    return registry


def test_the_registry_drops_what_was_dated_before_the_erasure_and_keeps_a_comeback() -> None:
    registry = _registry(("gone", 1_000), ("gone", 500))  # the later erasure counts
    assert registry.erased == {keyed_customer_hash("gone"): 1_000}
    assert registry.drops(b"gone", 999) and registry.drops(b"gone", None)
    assert not registry.drops(b"gone", 1_000)  # the customer came back
    assert not registry.drops(b"kept", 1) and not registry.drops(None, 1)
    assert "gone" not in json.dumps(registry.erased)  # filed under the keyed hash only


def test_a_registry_written_under_another_key_is_refused_not_ignored() -> None:
    registry = _registry()
    record = _RegistryRecord(keyed_customer_hash("gone"), {"erased_at": 1, "key_check": "0" * 16})
    with pytest.raises(ErasureRegistryError, match="MOMENTS_ID_HASH_KEY"):
        registry._take(record)
    registry._take(_RegistryRecord("x", b"not json"))  # not ours: skipped
    assert registry.erased == {}


def test_markers_are_control_records_with_the_erasure_time() -> None:
    headers = erasure_headers(1_767_323_045_123)
    assert headers[0] == (CONTROL_HEADER, FORGET)
    assert erased_at_of(headers) == 1_767_323_045_123
    assert erased_at_of([(CONTROL_HEADER, FORGET)]) is None
    assert classify(headers, None, 100) is RecordKind.FORGET
    topics = Topics("p.")
    assert topics.outputs() == [*topics.actions.values(), "p.decisions", "p.action-status"]


def test_the_registry_is_compacted_and_ages_out_after_the_raw_records() -> None:
    settings = Settings(retention_days=7)
    assert settings.topics.erasures in compacted_topics(settings)
    assert topic_config(settings, settings.topics.erasures) == {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(8 * DAY_MS),
    }
    assert topic_config(settings, settings.topics.erasures_done) == {
        "retention.ms": str(7 * DAY_MS)
    }
    # The worker's changelog: old state and tombstones gone within the retention.
    assert changelog_config(settings) == {
        "max.compaction.lag.ms": str(6 * DAY_MS),
        "delete.retention.ms": str(DAY_MS),
    }


class _Effect:
    """Records what the loop hands over, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def take(self, record: Any, message: Any) -> None:
        self.seen.append(("take", record))

    def forget(self, customer_id: str, erased_at_ms: int, message: Any) -> None:
        self.seen.append(("forget", (customer_id, erased_at_ms, message.topic())))


def test_the_loop_hands_markers_over_in_order_and_drops_what_the_registry_erased() -> None:
    effect = _Effect()
    settings = Settings(bootstrap="127.0.0.1:1")
    routes = {"actions.care": Route(bytes.decode, "actions.dlq")}
    loop = ConsumeLoop(settings, "g", routes, effect, threading.Event())  # type: ignore[arg-type]
    loop._dead_letters = FakeLetters()  # type: ignore[assignment]
    loop.registry = _registry(("gone", 1_000))
    marker = erasure_headers(1_000)
    for message in [
        FakeMessage("actions.care", 0, b"before", key=b"gone", timestamp_ms=999),  # dropped
        FakeMessage("actions.care", 1, b"late", key=b"gone", timestamp_ms=1_001),  # kept
        FakeMessage("actions.care", 2, None, marker, key=b"gone", timestamp_ms=900),
        FakeMessage("actions.care", 3, b"other", key=b"kept", timestamp_ms=5),
    ]:
        loop._read(message)  # type: ignore[arg-type]
    assert effect.seen == [
        ("take", "late"),
        ("forget", ("gone", 1_000, "actions.care")),
        ("take", "other"),
    ]
    assert loop.offsets.committable() == {("actions.care", 0): 1}  # only the dropped one


def test_the_postgres_sink_drops_the_customers_buffered_records_of_the_markers_topic() -> None:
    sink = PostgresSink("postgresql://nowhere/x", migrate=False)
    sink.add(ACTION, topic="actions.care", partition=0, offset=1)
    sink.add(DECISION, topic="decisions", partition=0, offset=1)
    sink.erase(ACTION.customer_id, 1_000, "actions.care", ["actions"])
    assert sink.pending == 2  # the decision (its marker comes on its own topic) and the erasure
    (erasure,) = sink.detach_erasures()
    assert erasure.customer_hash == keyed_customer_hash(ACTION.customer_id)
    assert ACTION.customer_id not in repr(erasure)
    batch = sink.detach()
    assert batch["actions"] == {} and len(batch["decisions"]) == 1


def test_customer_forgotten_is_a_cloud_event_with_a_stable_id() -> None:
    forgotten = Forgotten("gone", 1_767_323_045_123, "crm")
    event = forgotten_event(forgotten)
    assert event["type"] == FORGOTTEN_TYPE == "customer.forgotten"
    assert event["subject"] == "gone" and event["specversion"] == "1.0"
    assert event["id"] == forgotten_event(forgotten)["id"]  # a redelivery repeats it
    assert "gone" not in event["id"] and "gone" not in repr(forgotten)
    assert json.loads(forgotten_body(forgotten)) == event


class _Confirmations:
    """Confirmations as the webhook sink sends them; acknowledged when the test says so."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, str, bool, Any]] = []

    def send(
        self, customer_id: str, erased_at: int, topic: str, delivered: bool, acked: Any
    ) -> None:
        self.sent.append((customer_id, erased_at, topic, delivered, acked))


def test_the_webhook_sink_forwards_an_erasure_and_is_done_once_it_is_confirmed() -> None:
    settings = Settings(
        bootstrap="127.0.0.1:1",
        webhook_secret="unit-secret",
        webhook_urls={"crm": "https://hooks.test/crm"},
    )
    sink = WebhookSink(settings, policy=RetryPolicy(max_attempts=1))
    posted: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(204 if len(posted) == 1 else 400)

    sink.delivery.client = httpx.Client(transport=httpx.MockTransport(answer))
    progress, offsets, letters = Progress(), Offsets(), FakeLetters()
    sink._progress, sink._dead_letters = progress, letters  # type: ignore[assignment]
    confirmations = _Confirmations()
    sink._confirmations = confirmations  # type: ignore[assignment]
    tp = ("actions.crm", 0)
    for offset in (1, 2):  # delivered, then refused (dead-lettered)
        offsets.take(tp, offset)
        marker = FakeMessage(tp[0], offset, None, erasure_headers(1_000), key=b"gone")
        sink.handle(Forgotten("gone", 1_000, "crm"), marker, threading.Event())  # type: ignore[arg-type]
    assert [e["type"] for e in posted] == [FORGOTTEN_TYPE, FORGOTTEN_TYPE]
    assert posted[0]["subject"] == "gone"
    assert [c[:4] for c in confirmations.sent] == [("gone", 1_000, "actions.crm", True)]
    progress.drain(offsets)
    assert offsets.committable() == {}  # not before the confirmation is acknowledged
    confirmations.sent[0][4]()
    letters.sent[0]["ack"]()  # the refused one: dead letter, then a confirmation (not delivered)
    assert confirmations.sent[1][:4] == ("gone", 1_000, "actions.crm", False)
    confirmations.sent[1][4]()
    progress.drain(offsets)
    assert offsets.committable() == {tp: 3}
    sink.delivery.close()
