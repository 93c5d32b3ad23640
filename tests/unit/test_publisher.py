"""Unit tests of the publisher SDK that need no broker: derived event ids, validation first."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

import producers.publisher as publisher_module
from common.metrics import EVENTS_PUBLISHED, EVENTS_REJECTED
from common.privacy import keyed_customer_hash
from common.settings import Settings
from producers.publisher import Publisher, PublishError
from schemas.codec import SchemaValidationError, codec_for, read_events_jsonl
from schemas.records import InteractionEvent
from tests.support.faults import RefusingProducer

WITHOUT_ID = {
    "customer_id": "c-1",
    "channel": "web",
    "type": "inquiry",
    "occurred_at": "2026-01-05T10:00:00Z",
    "attributes": {"page": "/help"},
}


def test_a_missing_event_id_is_derived_as_file_replay_derives_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made: list[RefusingProducer] = []

    def producer(config: dict[str, Any]) -> RefusingProducer:
        made.append(RefusingProducer(config, lambda key: False, real=False))
        return made[-1]

    monkeypatch.setattr(publisher_module, "Producer", producer)
    sent: list[bytes] = []
    with Publisher(Settings(bootstrap="127.0.0.1:9")) as publisher:
        real_produce = publisher._produce

        def produce(topic: str, value: bytes, key: str, **kwargs: Any) -> None:
            sent.append(value)
            real_produce(topic, value, key, **kwargs)

        publisher._produce = produce
        first = publisher.publish_json(dict(WITHOUT_ID))
        retry = publisher.publish_json({**WITHOUT_ID, "occurred_at": "2026-01-05T11:00:00+01:00"})
    line = tmp_path / "events.jsonl"
    line.write_text(
        '{"customer_id":"c-1","channel":"web","type":"inquiry",'
        '"occurred_at":"2026-01-05T10:00:00.000+00:00","attributes":{"page":"/help"}}\n'
    )
    (replayed,) = read_events_jsonl(line)
    assert first.event_id == retry.event_id == replayed.event_id  # a retry is a duplicate
    decode = codec_for(InteractionEvent).decode
    assert [decode(value).event_id for value in sent] == [first.event_id] * 2
    other = {**WITHOUT_ID, "type": "feedback_given"}
    with Publisher(Settings(bootstrap="127.0.0.1:9")) as publisher:
        assert publisher.publish_json(other).event_id != first.event_id


def test_invalid_events_never_reach_the_client() -> None:
    # Nothing listens on this port: a send would fail at flush, validation fails first.
    publisher = Publisher(Settings(bootstrap="127.0.0.1:9"), config={"message.timeout.ms": 100})
    rejected = EVENTS_REJECTED.labels(stage="validate")._value.get()
    with pytest.raises(SchemaValidationError, match="customer_id: must not be empty"):
        publisher.publish(InteractionEvent("ev-1", "", "call", "inquiry", 0))
    with pytest.raises(SchemaValidationError, match=r"where\.jsonl:2: occurred_at"):
        publisher.publish_json(
            {"customer_id": "c", "channel": "call", "type": "inquiry", "occurred_at": "now"},
            where="where.jsonl:2",
        )
    assert EVENTS_REJECTED.labels(stage="validate")._value.get() == rejected + 2
    publisher.close(timeout_s=1)  # nothing was queued, so nothing fails
    with pytest.raises(RuntimeError, match="closed"):
        publisher.publish(InteractionEvent("ev-2", "c", "call", "inquiry", 0))


def test_publish_error_names_topic_key_and_error_and_pickles() -> None:
    import pickle

    error = PublishError(
        "interactions", "customer-a", "MSG_TIMED_OUT: Local: Message timed out", more=2
    )
    assert str(error) == (
        f"publishing to interactions failed (key hmac:{keyed_customer_hash('customer-a')}): "
        "MSG_TIMED_OUT: Local: Message timed out (and 2 more failed deliveries)"
    )  # the key is a customer id: hashed in the message, itself in `error.key`
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    assert pickle.loads(pickle.dumps(error)).key == "customer-a"


def test_published_count_is_sent_less_failed_by_channel_and_type() -> None:
    publisher = Publisher(Settings(bootstrap="127.0.0.1:9"), config={"message.timeout.ms": 100})
    inquiry = EVENTS_PUBLISHED.labels(channel="call", type="inquiry")
    other = EVENTS_PUBLISHED.labels(channel="web", type="other")
    before = inquiry._value.get(), other._value.get()
    # What publish tallies and what failed delivery reports leave behind, nothing in flight:
    publisher._sent = [("call", "inquiry")] * 3 + [("web", "not-in-the-vocabulary")]
    publisher._failed_labels = [("call", "inquiry")]
    publisher._count_published()
    assert (inquiry._value.get(), other._value.get()) == (before[0] + 2, before[1] + 1)
    assert publisher._sent == [] and publisher._failed_labels == []
    publisher.close(timeout_s=1)


def test_a_client_whose_probes_keep_timing_out_is_replaced() -> None:
    from producers.publisher import PublisherBusy

    publisher = Publisher(
        Settings(bootstrap="127.0.0.1:9"), config={"message.timeout.ms": 100}, confirm=True
    )
    first = publisher._producer
    event = InteractionEvent("probe-1", "customer-a", "call", "inquiry", 1_767_323_045_000, "t")
    deadline = time.monotonic() + 20
    while publisher._producer is first and time.monotonic() < deadline:
        with contextlib.suppress(PublisherBusy):  # a probe is in flight: the rest fail fast
            publisher.submit(event, lambda error: None)
        time.sleep(0.05)
    assert publisher._producer is not first
    publisher.close(timeout_s=1)


def test_the_status_methods_send_the_status_events_of_an_action(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        publisher_module,
        "Producer",
        lambda config: RefusingProducer(config, lambda key: False, real=False),
    )
    at = "2026-01-05T10:00:00Z"
    with Publisher(Settings(bootstrap="127.0.0.1:9")) as publisher:
        acknowledged = publisher.acknowledge("act-1", "c-1", "ana", occurred_at=at)
        reassigned = publisher.reassign("act-1", "c-1", "bo", note="bo knows them")
        done = publisher.complete("act-1", "c-1", "customer_declined", occurred_at=at)
        with pytest.raises(SchemaValidationError) as unknown:
            publisher.complete("act-1", "c-1", "fixed")
        with pytest.raises(SchemaValidationError) as long_owner:
            publisher.acknowledge("act-1", "c-1", "o" * 257)
    assert (unknown.value.field, long_owner.value.field) == ("resolution", "owner")
    assert [e.type for e in (acknowledged, reassigned, done)] == [
        "action_acknowledged",
        "action_reassigned",
        "action_done",
    ]
    assert acknowledged.attributes == {"owner": "ana"}
    assert (reassigned.attributes, reassigned.text) == ({"owner": "bo"}, "bo knows them")
    assert done.attributes == {"resolution": "customer_declined"}
    for event in (acknowledged, reassigned, done):
        assert (event.reference, event.channel, event.customer_id) == ("act-1", "other", "c-1")
        assert event.event_id.startswith("h-")
