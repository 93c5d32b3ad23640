"""The consume loop both sinks share (`sinks.consume`), without a broker."""

from __future__ import annotations

import json
import os
import signal
import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from common.metrics import CONSUMER_LAG
from common.settings import Settings
from schemas.codec import DecodeError
from schemas.wire import CONTROL_HEADER, TICK
from sinks.consume import (
    ConsumeLoop,
    Offsets,
    Route,
    consumer_config,
    is_error_event,
    report_lag,
    retry_until,
    stop_on_signals,
)
from tests.support.sinks import FakeLetters, FakeMessage


def _partitions(group: str) -> set[tuple[str, str]]:
    return {
        (s.labels["topic"], s.labels["partition"])
        for metric in CONSUMER_LAG.collect()
        for s in metric.samples
        if s.labels["group"] == group
    }


def test_lag_is_reported_for_the_partitions_a_sink_owns_only() -> None:
    stats = {
        "topics": {
            "a": {"partitions": {"0": {"consumer_lag": 3}, "1": {"consumer_lag": 9}}},
            "b": {"partitions": {"0": {"consumer_lag": 4}, "-1": {"consumer_lag": 1}}},
        }
    }
    report_lag(json.dumps(stats), "g-owned", lambda topic, partition: partition == 0)
    assert _partitions("g-owned") == {("a", "0"), ("b", "0")}
    assert CONSUMER_LAG.labels("g-owned", "b", "0")._value.get() == 4
    report_lag("not json", "g-owned")  # ignored, no exception
    report_lag(json.dumps({"topics": []}), "g-owned")


def test_the_consumer_of_a_sink_commits_nothing_by_itself() -> None:
    settings = Settings(bootstrap="127.0.0.1:1", broker_session_timeout_s=12)
    config = consumer_config(settings, "g", print, **{"max.poll.interval.ms": 99})
    assert config["enable.auto.commit"] is False
    assert (config["group.id"], config["session.timeout.ms"]) == ("g", 12_000)
    assert config["max.poll.interval.ms"] == 99


class _Event:
    def __init__(self, code: int | None) -> None:
        self.code = code

    def error(self) -> KafkaError | None:
        return None if self.code is None else KafkaError(self.code)


def test_error_events_are_not_records() -> None:
    assert is_error_event(_Event(KafkaError._PARTITION_EOF))  # type: ignore[arg-type]
    assert is_error_event(_Event(KafkaError._TRANSPORT))  # type: ignore[arg-type]
    assert not is_error_event(_Event(None))  # type: ignore[arg-type]


def test_sigterm_sets_stop_and_the_previous_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    stop = threading.Event()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    assert signal.getsignal(signal.SIGTERM) is before


# --------------------------------------------------------------------------- the shared loop


def test_offsets_are_committable_up_to_the_first_record_not_durable() -> None:
    offsets = Offsets()
    tp = ("t", 0)
    assert [offsets.take(tp, o) for o in (5, 6, 7, 8)] == [True] * 4
    assert not offsets.take(tp, 6)  # fetched again after a pause: taken already
    offsets.done(tp, [7, 8])  # later records finished first
    assert offsets.committable() == {}
    offsets.done(tp, [5])
    assert offsets.committable() == {tp: 6}
    offsets.committed({tp: 6})
    assert offsets.committable() == {}
    offsets.done(tp, [6])
    assert offsets.committable([tp]) == {tp: 9} and offsets.unfinished(tp) == 0
    offsets.forget([tp])
    offsets.done(tp, [9])  # reported after a revoke: ignored
    assert offsets.committable() == {} and offsets.take(tp, 5)


class _Effect:
    """Takes records and holds the partitions the test names."""

    def __init__(self) -> None:
        self.taken: list[Any] = []
        self.hold: set[tuple[str, int]] = set()

    def take(self, record: Any, message: Any) -> None:
        self.taken.append(record)

    def held(self, assigned: Any, paused: Any) -> set[tuple[str, int]]:
        return self.hold


def _loop(effect: _Effect) -> tuple[ConsumeLoop, FakeLetters]:
    settings = Settings(bootstrap="127.0.0.1:1", max_event_bytes=100)

    def decode(value: bytes) -> str:
        if not value.startswith(b"ok"):
            raise DecodeError("unknown wire format", stage="decode")
        return value.decode()

    routes = {
        "actions.care": Route(decode, "actions.dlq"),
        "interactions": Route(decode, None),  # the worker dead-letters these
    }
    loop = ConsumeLoop(settings, "g-loop", routes, effect, threading.Event())  # type: ignore[arg-type]
    letters = FakeLetters()
    loop._dead_letters = letters  # type: ignore[assignment]
    return loop, letters


def test_the_loop_skips_control_records_and_what_the_worker_refuses() -> None:
    effect = _Effect()
    loop, letters = _loop(effect)
    tick = [(CONTROL_HEADER, TICK)]
    for message in [
        FakeMessage("interactions", 0, b"", tick),
        FakeMessage("interactions", 1, None),  # tombstone: the worker's poison
        FakeMessage("interactions", 2, b"x" * 101),  # oversized: the worker's poison
        FakeMessage("interactions", 3, b"garbage"),  # undecodable: the worker's poison
        FakeMessage("actions.care", 0, b"", tick),  # a control record is never an action
        FakeMessage("interactions", 4, b"ok-event"),
        FakeMessage("actions.care", 1, b"ok-action"),
    ]:
        loop._read(message)  # type: ignore[arg-type]
    assert effect.taken == ["ok-event", "ok-action"] and letters.sent == []
    # The skipped records are done; the taken ones wait for their effect.
    assert loop.offsets.committable() == {("interactions", 0): 4, ("actions.care", 0): 1}


def test_an_undecodable_record_is_done_only_once_its_dead_letter_is_acknowledged() -> None:
    effect = _Effect()
    loop, letters = _loop(effect)
    loop._read(FakeMessage("actions.care", 7, b"not avro"))  # type: ignore[arg-type]
    (letter,) = letters.sent
    assert letter["dlq"] == "actions.dlq" and letter["value"] == b"not avro"
    assert letter["error"] == ("decode", "DecodeError", "unknown wire format")
    assert letter["source"] == ("actions.care", 0, 7)
    loop._settle()
    assert loop.offsets.committable() == {}
    letter["ack"]()
    loop._settle()
    assert loop.offsets.committable() == {("actions.care", 0): 8}


def test_a_bug_reported_by_an_effect_stops_the_loop() -> None:
    loop, _ = _loop(_Effect())
    loop.progress.failed(RuntimeError("bug in a lane"))
    with pytest.raises(RuntimeError, match="bug in a lane"):
        loop._settle()


class _Consumer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, int]]]] = []

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("pause", [(p.topic, p.partition) for p in partitions]))

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("resume", [(p.topic, p.partition) for p in partitions]))


def test_the_loop_pauses_what_the_effect_holds_and_resumes_the_rest() -> None:
    effect = _Effect()
    loop, _ = _loop(effect)
    consumer = _Consumer()
    loop._consumer = consumer  # type: ignore[assignment]
    loop._on_assign(
        consumer, [TopicPartition("actions.care", 0), TopicPartition("actions.care", 1)]
    )  # type: ignore[arg-type]
    effect.hold = {("actions.care", 1), ("actions.crm", 0)}  # crm is not assigned
    loop._hold()
    effect.hold = set()
    loop._hold()
    assert consumer.calls == [("pause", [("actions.care", 1)]), ("resume", [("actions.care", 1)])]


def test_the_loop_reports_the_lag_of_its_assigned_partitions() -> None:
    loop, _ = _loop(_Effect())
    loop._on_assign(None, [TopicPartition("actions.care", 0)])  # type: ignore[arg-type]
    stats = {
        "topics": {
            "actions.care": {"partitions": {"0": {"consumer_lag": 17}, "1": {"consumer_lag": 3}}}
        }
    }
    loop._on_stats(json.dumps(stats))
    assert _partitions("g-loop") == {("actions.care", "0")}
    assert CONSUMER_LAG.labels("g-loop", "actions.care", "0")._value.get() == 17


def test_retry_until_retries_outages_and_gives_up_when_told() -> None:
    failures = [OSError("down"), OSError("still down")]

    def attempt() -> None:
        if failures:
            raise failures.pop(0)

    assert retry_until("reach it", attempt, lambda: False, (OSError,), max_backoff_s=0.2)
    assert failures == []

    def never() -> None:
        raise OSError("down for good")

    assert not retry_until("reach it", never, lambda: True, (OSError,))
    with pytest.raises(ValueError):  # not an outage: a bug
        retry_until("reach it", lambda: int("x"), lambda: False, (OSError,))
