"""Unit tests of the publisher SDK that need no broker: UUIDv7 ids, validation first."""

from __future__ import annotations

import contextlib
import time
import uuid

import pytest

from common.metrics import EVENTS_PUBLISHED, EVENTS_REJECTED
from common.privacy import hashed_id
from common.settings import Settings
from producers.publisher import Publisher, PublishError, new_event_id
from schemas.codec import SchemaValidationError
from schemas.records import InteractionEvent


def test_new_event_id_is_a_uuid7_with_the_current_time() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid.UUID(new_event_id())
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after


def test_new_event_ids_are_unique_and_sorted_in_creation_order() -> None:
    ids = [new_event_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


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
        f"publishing to interactions failed (key sha256:{hashed_id('customer-a')}): "
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
