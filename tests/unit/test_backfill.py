"""The backfill loop without a broker: decode, engine per partition, garbage counted."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError

from common.settings import Settings
from processors.backfill import BackfillSummary, _Run
from processors.config import engine_config
from processors.engine import Engine, load_rule_pack
from processors.replay import OutputWriter, Replayer
from producers.simulator import simulate
from schemas.codec import AvroCodec, to_json_bytes
from schemas.records import InteractionEvent
from schemas.wire import CONTROL_HEADER, TICK


class FakeMessage:
    """What `_Run` reads of a confluent-kafka Message."""

    def __init__(
        self,
        partition: int,
        offset: int,
        value: bytes | None,
        eof: bool = False,
        timestamp_ms: int = 2**62,
        headers: list[tuple[str, bytes]] | None = None,
    ):
        self._partition, self._offset, self._value, self._eof = partition, offset, value, eof
        self._headers = headers
        self._timestamp_ms = timestamp_ms  # far future by default: no event is capped

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, self._timestamp_ms

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def topic(self) -> str:
        return "interactions"

    def error(self) -> Any:
        return KafkaError(KafkaError._PARTITION_EOF) if self._eof else None

    def key(self) -> bytes | None:
        return b"CUST-1"

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers


class FakeConsumer:
    """Hands out the messages in batches, then nothing."""

    def __init__(self, messages: list[FakeMessage]) -> None:
        self.messages = messages

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        batch, self.messages = self.messages[:num_messages], self.messages[num_messages:]
        return batch

    def poll(self, timeout: float) -> FakeMessage | None:
        batch = self.consume(1, timeout)
        return batch[0] if batch else None


def _run(settings: Settings, partitions: int) -> tuple[_Run, io.BytesIO]:
    engine = Engine(load_rule_pack(), engine_config(settings), decisions=False)
    actions = io.BytesIO()
    summary = BackfillSummary(topic="interactions", partitions=partitions)
    run = _Run(engine, settings, summary, OutputWriter(actions), None, list(range(partitions)))
    return run, actions


def test_engine_config_of_settings_in_milliseconds() -> None:
    config = engine_config(Settings(allowed_lateness_s=1.5, contact_cap=3))
    assert (config.allowed_lateness_ms, config.contact_cap) == (1500, 3)


def test_each_partition_has_its_own_state_and_garbage_is_counted() -> None:
    settings = Settings(max_event_bytes=2000)
    codec = AvroCodec(InteractionEvent)
    events = list(simulate(60, 40, seed=5, story_rate=0.5))
    by_partition: dict[int, list[InteractionEvent]] = {0: [], 1: []}
    messages: list[FakeMessage] = []
    for event in events:
        partition = int(event.customer_id[-1]) % 2
        by_partition[partition].append(event)
        messages.append(FakeMessage(partition, len(by_partition[partition]), codec.encode(event)))
    big = dataclasses.replace(events[0], text="y" * 3000)  # decodable, but too large
    invalid = dataclasses.replace(events[0], type="")
    messages[3:3] = [
        FakeMessage(0, 10_000, None),
        FakeMessage(1, 10_001, b"\xc3\x01garbage"),
        FakeMessage(1, 10_002, b"x" * 3000),
        FakeMessage(1, 10_003, codec.encode(big)),
        FakeMessage(1, 10_004, codec.encode(invalid, validate=False)),
    ]
    ends = {0: 10_001, 1: 10_005}
    messages += [FakeMessage(0, 10_001, None, eof=True), FakeMessage(1, 10_005, None, eof=True)]
    run, actions = _run(settings, 2)
    run.consume(FakeConsumer(messages), ends, max_events=None, stop_at_end=True, stop=None)  # type: ignore[arg-type]
    assert run.summary.events == len(events)
    assert run.summary.garbage == 5
    stages = [s.split(": ")[1] for s in run.summary.garbage_samples]
    assert stages == ["decode", "decode", "size", "size", "validate"]
    assert "type: must not be empty" in run.summary.garbage_samples[-1]
    last = {m.partition(): m.offset() + 1 for m in messages if m.error() is None}
    assert run.positions == last
    # The same engine per partition, fed the partition's events alone, gives the same actions.
    expected: list[bytes] = []
    for partition in (0, 1):
        replayer = Replayer(Engine(load_rule_pack(), engine_config(settings)), 1)
        for event in by_partition[partition]:
            expected += [to_json_bytes(a) + b"\n" for a in replayer.feed(event).actions]
    assert sorted(actions.getvalue().splitlines(keepends=True)) == sorted(expected)
    assert len(expected) > 0


def test_the_workers_idle_ticks_and_other_control_records_are_neither_events_nor_garbage() -> None:
    codec = AvroCodec(InteractionEvent)
    events = list(simulate(10, 10, seed=2))
    messages = [FakeMessage(0, i, codec.encode(e)) for i, e in enumerate(events)]
    offset = len(messages)
    messages[2:2] = [  # as the worker writes them (`schemas.wire`): empty value, control header
        FakeMessage(0, offset, b"", headers=[(CONTROL_HEADER, TICK)]),
        FakeMessage(0, offset + 1, b"", headers=[(CONTROL_HEADER, b"from-a-newer-version")]),
        FakeMessage(0, offset + 2, b"", headers=[("unrelated", b"x")]),  # no control: garbage
    ]
    messages.append(FakeMessage(0, offset + 3, None, eof=True))
    run, _ = _run(Settings(), 1)
    run.consume(
        FakeConsumer(messages), {0: offset + 3}, max_events=None, stop_at_end=True, stop=None
    )  # type: ignore[arg-type]
    assert run.summary.events == len(events)
    assert run.summary.garbage == 1
    assert f"@{offset + 2}:" in run.summary.garbage_samples[0]


def test_max_events_stops_the_loop() -> None:
    codec = AvroCodec(InteractionEvent)
    events = list(simulate(20, 10, seed=1))
    messages = [FakeMessage(0, i, codec.encode(e)) for i, e in enumerate(events)]
    run, _ = _run(Settings(), 1)
    run.consume(FakeConsumer(messages), {0: len(events)}, max_events=7, stop_at_end=True, stop=None)  # type: ignore[arg-type]
    assert run.summary.events == 7
    assert run.positions == {0: 7}


class LaggingConsumer(FakeConsumer):
    """Has nothing fetched at every other look: the loop must wait (poll), not give up."""

    def __init__(self, messages: list[FakeMessage]) -> None:
        super().__init__(messages)
        self.looks = 0
        self.polls = 0

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        self.looks += 1
        return [] if self.looks % 2 else super().consume(min(num_messages, 3), timeout)

    def poll(self, timeout: float) -> FakeMessage | None:
        self.polls += 1
        return super().poll(timeout)


def test_records_fetched_late_are_waited_for_until_every_partition_ended() -> None:
    codec = AvroCodec(InteractionEvent)
    events = list(simulate(20, 10, seed=3))
    messages = [FakeMessage(0, i, codec.encode(e)) for i, e in enumerate(events)]
    messages.append(FakeMessage(0, len(events), None, eof=True))
    run, _ = _run(Settings(), 1)
    consumer = LaggingConsumer(messages)
    run.consume(consumer, {0: len(events)}, max_events=None, stop_at_end=True, stop=None)  # type: ignore[arg-type]
    assert run.summary.events == len(events)
    assert consumer.polls > 0


def test_a_future_dated_record_moves_the_watermark_only_to_its_timestamp_plus_skew() -> None:
    settings = Settings(max_future_skew="1h")
    codec = AvroCodec(InteractionEvent)
    t0 = 1_767_225_600_000
    opened = InteractionEvent(
        "e1", "c1", "email", "dispute_opened", t0, "helpdesk", reference="R-1"
    )
    bogus = InteractionEvent("e2", "c2", "email", "inquiry", 253_402_214_400_000, "helpdesk")
    messages = [
        FakeMessage(0, 0, codec.encode(opened), timestamp_ms=t0),
        FakeMessage(0, 1, codec.encode(bogus), timestamp_ms=t0 + 60_000),
        FakeMessage(0, 2, None, eof=True),
    ]
    run, actions = _run(settings, 1)
    run.consume(FakeConsumer(messages), {0: 2}, max_events=None, stop_at_end=True, stop=None)  # type: ignore[arg-type]
    assert (run.summary.events, run.summary.future_dated) == (2, 1)
    assert b"case_unresolved" not in actions.getvalue()
    assert run.engine.watermark(run.stores[0]) == t0 + 60_000 + 3_600_000 - 300_000
