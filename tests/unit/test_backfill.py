"""The backfill loop without a broker: decode, engine per partition, garbage counted."""

from __future__ import annotations

import dataclasses
import io
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError

from common.settings import Settings
from processors import backfill as backfill_module
from processors.backfill import (
    BackfillSummary,
    _Run,
    backfill_topic,
    process_count,
    share_partitions,
)
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
    writer = OutputWriter(actions)  # every partition's actions to one buffer
    run = _Run(
        engine,
        settings,
        summary,
        dict.fromkeys(range(partitions), writer),
        None,
        list(range(partitions)),
    )
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
    consumer: Any = FakeConsumer(messages)
    run.consume(consumer, {0: offset + 3}, max_events=None, stop_at_end=True, stop=None)
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


def test_partitions_are_shared_whole_disjoint_and_by_size() -> None:
    ends = {0: 50, 1: 10, 2: 40, 3: 0, 4: 30, 5: 20}
    shares = share_partitions(ends, 3)
    assert sorted(p for share in shares for p in share) == sorted(ends)
    assert [sum(ends[p] for p in share) for share in shares] == [50, 50, 50]
    assert all(share == sorted(share) for share in shares)
    assert share_partitions({0: 5, 1: 5}, 4) == [[0], [1]]  # no process without partitions


def test_the_process_count_is_capped_by_the_partitions_holding_records() -> None:
    ends = {0: 10, 1: 0, 2: 7}
    assert process_count(8, ends) == 2
    assert process_count(1, ends) == 1
    assert 1 <= process_count(0, ends) <= 2  # one per usable CPU
    assert process_count(3, {0: 0}) == 1


TOPIC_ENDS = {0: 3, 1: 0, 2: 5, 3: 2, 4: 4}


def _fake_ends(
    settings: Settings, topic: str, group: str
) -> tuple[list[int], dict[int, int], bool]:
    return sorted(TOPIC_ENDS), dict(TOPIC_ENDS), True


def _fake_part(job: Any, partitions: list[int], ends: dict[int, int], **_: Any) -> dict[str, Any]:
    """Writes lines naming the partition to its part files, as `_backfill_part` would."""
    for partition in partitions:
        for kind in job.kinds:
            with open(job.work / f"{partition}.{kind}", "wb") as part:
                part.write(
                    b"".join(
                        b"%s %d.%d\n" % (kind.encode(), partition, i)
                        for i in range(ends[partition])
                    )
                )
    events = sum(ends[p] for p in partitions)
    return {
        "events": events,
        "actions": events,
        "decisions": events,
        "garbage": len(partitions),
        "too_late": 0,
        "future_dated": 0,
        "erased": 0,
        "samples": [(p, 7, f"t[{p}]@7: decode") for p in partitions],
    }


def _failing_part(
    job: Any, partitions: list[int], ends: dict[int, int], **kw: Any
) -> dict[str, Any]:
    if 2 in partitions:
        raise backfill_module.BackfillError("the broker went away")
    time.sleep(30)  # stopped by the parent long before
    return _fake_part(job, partitions, ends, **kw)


def _outputs(tmp_path: Path, name: str) -> dict[str, Path]:
    return {kind: tmp_path / f"{name}-{kind}.jsonl" for kind in ("actions", "decisions", "late")}


def test_n_processes_write_the_bytes_of_one_in_partition_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backfill_module, "_partitions_and_ends", _fake_ends)
    monkeypatch.setattr(backfill_module, "_backfill_part", _fake_part)
    summaries, texts = [], []
    for processes in (1, 3):
        paths = _outputs(tmp_path, str(processes))
        summaries.append(
            backfill_topic(
                Settings(),
                "interactions",
                actions_out=paths["actions"],
                decisions_out=paths["decisions"],
                late_out=paths["late"],
                processes=processes,
            )
        )
        texts.append({kind: path.read_bytes() for kind, path in paths.items()})
    one, three = summaries
    assert (one.processes, three.processes) == (1, 3)
    assert texts[0] == texts[1]
    assert texts[0]["actions"].splitlines()[:4] == [
        b"actions 0.0",
        b"actions 0.1",
        b"actions 0.2",
        b"actions 2.0",
    ]
    assert one.events == three.events == sum(TOPIC_ENDS.values())
    assert (
        one.garbage_samples
        == three.garbage_samples
        == [f"t[{p}]@7: decode" for p in sorted(TOPIC_ENDS)]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for n in ("1", "3") for p in _outputs(tmp_path, n).values()
    )  # the part files went with the run


def test_a_failing_process_names_its_partitions_stops_the_others_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backfill_module, "_partitions_and_ends", _fake_ends)
    monkeypatch.setattr(backfill_module, "_backfill_part", _failing_part)
    paths = _outputs(tmp_path, "failed")
    with pytest.raises(backfill_module.BackfillError) as failed:
        backfill_topic(Settings(), "interactions", actions_out=paths["actions"], processes=3)
    assert "partition 2 of interactions failed" in str(failed.value)
    assert "the broker went away" in str(failed.value)
    assert multiprocessing.active_children() == []
    assert list(tmp_path.iterdir()) == []
