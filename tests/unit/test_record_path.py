"""The record path: one verdict per hostile record, and the worker and backfill reach the same."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from datetime import date
from typing import Any, cast

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError, Message

from common.metrics import DLQ_RECORDS, EVENTS_CONSUMED, EVENTS_FUTURE_DATED, EVENTS_TOO_LATE
from common.settings import Settings
from processors.backfill import BackfillSummary, _Run
from processors.config import engine_config
from processors.engine import DictStore, Engine, EngineOutput, load_rule_pack
from processors.faust_host.changelog import StagedTable
from processors.record_path import Applied, DeadLetter, RecordPath, Stage
from processors.replay import OutputWriter
from processors.worker import TriggerWorker
from schemas.codec import codec_for
from schemas.records import ActionEvent, InteractionEvent
from schemas.wire import CONTROL_HEADER, FORGET, TICK, RecordKind
from tests.support.engine import T0, D
from tests.support.worker import FakeTable

MAX_BYTES = 2000
SKEW_MS = 3_600_000
CODEC = codec_for(InteractionEvent)
OPENED = InteractionEvent("e1", "ann", "email", "dispute_opened", T0, "unit", reference="R-1")
LATER = InteractionEvent("e2", "bob", "web", "page_viewed", T0 + 10 * D, "unit")
#: Dated a year past its record's timestamp: the clock may move only to that + the skew.
FUTURE = InteractionEvent("e3", "cid", "email", "inquiry", T0 + 365 * D, "unit")
#: The engine raises on this one (see `failing`).
BOOM = InteractionEvent("boom", "dan", "call", "inquiry", T0 + 60_000, "unit")


@dataclasses.dataclass
class Record:
    """A record of `interactions` as plain values (what every host hands the record path)."""

    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    key: bytes | None = b"ann"
    #: The log time: after every event here but `FUTURE`.
    timestamp_ms: int = T0 + 30 * D


def encoded(event: InteractionEvent, validate: bool = True) -> bytes:
    return CODEC.encode(event, validate=validate)


#: Hostile records and the verdict each gets: (stage, error class) or a control kind.
HOSTILE: dict[str, tuple[Record, tuple[str, str] | RecordKind]] = {
    "tombstone": (Record(None), (Stage.DECODE, "Tombstone")),
    "oversized garbage": (Record(b"x" * (MAX_BYTES + 1)), (Stage.SIZE, "EventTooLarge")),
    "oversized event": (
        Record(encoded(dataclasses.replace(OPENED, text="y" * MAX_BYTES))),
        (Stage.SIZE, "EventTooLarge"),
    ),
    "garbage": (Record(b"\xc3\x01garbage"), (Stage.DECODE, "DecodeError")),
    "empty": (Record(b""), (Stage.DECODE, "DecodeError")),
    "invalid": (
        Record(encoded(dataclasses.replace(OPENED, type=""), validate=False)),
        (Stage.VALIDATE, "InvalidRecordError"),
    ),
    "customer since in the future": (
        Record(
            encoded(dataclasses.replace(OPENED, customer_since=date(2026, 1, 3)), validate=False)
        ),
        (Stage.VALIDATE, "InvalidRecordError"),
    ),
    "opted into a channel no person answers": (
        Record(
            encoded(
                dataclasses.replace(
                    OPENED,
                    type="contact_preferences_changed",
                    attributes={"preferred_channel": "billing"},
                ),
                validate=False,
            )
        ),
        (Stage.VALIDATE, "InvalidRecordError"),
    ),
    "engine raises": (Record(encoded(BOOM)), (Stage.ENGINE, "RuntimeError")),
    "idle tick": (Record(b"", [(CONTROL_HEADER, TICK)]), RecordKind.TICK),
    "erasure": (Record(None, [(CONTROL_HEADER, FORGET)], key=b"ann"), RecordKind.FORGET),
    "erasure without key": (Record(None, [(CONTROL_HEADER, FORGET)], key=None), RecordKind.FORGET),
    "unknown control": (
        Record(b"junk", [(CONTROL_HEADER, b"from-a-newer-version")]),
        RecordKind.CONTROL,
    ),
    "unrelated header": (Record(b"", [("unrelated", b"x")]), (Stage.DECODE, "DecodeError")),
}


def failing(feed: Any) -> Any:
    """`feed`, raising on the event `BOOM` (an engine bug, as far as the hosts can tell)."""

    def feed_or_fail(store: Any, event: InteractionEvent, cap: int | None) -> EngineOutput:
        if event.event_id == BOOM.event_id:
            raise RuntimeError("engine bug")
        result: EngineOutput = feed(store, event, cap)
        return result

    return feed_or_fail


def settings(tmp_path: Any = None) -> Settings:
    return Settings(
        bootstrap="127.0.0.1:9",
        data_dir=tmp_path or ".",
        topic_prefix="unit.",
        max_event_bytes=MAX_BYTES,
        max_future_skew="1h",
    )


def path_over_engine() -> tuple[RecordPath, Engine]:
    engine = Engine(load_rule_pack(), engine_config(settings()))
    path = RecordPath(
        CODEC, failing(engine.process), max_event_bytes=MAX_BYTES, max_future_skew_ms=SKEW_MS
    )
    return path, engine


def handle(path: RecordPath, store: Any, record: Record, offset: int = 0) -> Any:
    return path.handle(
        store, 0, offset, record.headers, record.key, record.value, record.timestamp_ms
    )


@pytest.mark.parametrize("name", HOSTILE)
def test_each_hostile_record_gets_its_verdict_and_leaves_the_state_as_it_was(name: str) -> None:
    record, expected = HOSTILE[name]
    path, _ = path_over_engine()
    store = DictStore()
    before = dict(store.data)
    result = handle(path, store, record)
    if isinstance(expected, RecordKind):
        assert result is expected
    else:
        assert isinstance(result, DeadLetter)
        assert (result.stage, result.error_class) == expected
        assert result.detail
    assert store.data == before


def test_an_event_is_applied_and_an_erasure_forgets_its_customer() -> None:
    path, _ = path_over_engine()
    store = DictStore()
    result = handle(path, store, Record(encoded(OPENED)))
    assert isinstance(result, Applied) and result.event == OPENED
    assert any(key.endswith("ann") for key in store.data)
    assert handle(path, store, HOSTILE["erasure"][0]) is RecordKind.FORGET
    assert not any(key.endswith("ann") for key in store.data)


def test_a_future_dated_event_is_applied_with_the_clock_capped_and_counted() -> None:
    path, engine = path_over_engine()
    store = DictStore()
    result = handle(path, store, Record(encoded(FUTURE)))
    assert isinstance(result, Applied)
    assert path.future_dated == 1
    without_cap = DictStore()
    engine.process(without_cap, FUTURE)
    assert engine.watermark(store) is not None
    assert engine.watermark(store) < engine.watermark(without_cap)  # type: ignore[operator]
    # a record the client has no timestamp for is never capped
    assert isinstance(path.handle(DictStore(), 0, 0, None, b"c", encoded(FUTURE), None), Applied)
    assert path.future_dated == 1


def test_an_engine_failure_discards_the_writes_of_a_store_that_stages_them() -> None:
    class Staging(DictStore):
        discarded = 0

        def discard_engine_writes(self) -> None:
            self.discarded += 1

    path, _ = path_over_engine()
    store = Staging()
    assert isinstance(handle(path, store, HOSTILE["engine raises"][0]), DeadLetter)
    assert store.discarded == 1


# -- both hosts, the same records --------------------------------------------------------


def stream() -> list[Record]:
    """Good events with every hostile record between them; the future-dated one comes last
    (its capped clock would otherwise fire the good events' timers early)."""
    kept = dataclasses.replace(OPENED, event_id="e4", customer_id="cat", reference="R-2")
    opened = [Record(encoded(OPENED)), Record(encoded(kept), key=b"cat")]
    hostile = [record for name, (record, _) in HOSTILE.items() if name != "idle tick"]
    later = Record(encoded(LATER), key=b"bob")
    return [*opened, *hostile, later, Record(encoded(FUTURE), key=b"cid")]


class KeptOutput:
    """The worker's output: every record sent, with its headers."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, Any]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> None:
        self.sent.append((topic, key, value, headers))

    def serve(self) -> None:
        pass


class WorkerMessage:
    """A record as Faust hands it to the agent."""

    def __init__(self, offset: int, record: Record) -> None:
        self.topic, self.partition, self.offset = "unit.interactions", 0, offset
        self.key, self.value, self.headers = record.key, record.value, record.headers or []
        self.timestamp = record.timestamp_ms / 1000


class WorkerEvent:
    def __init__(self, message: WorkerMessage) -> None:
        self.message = message


class CountedTable(StagedTable):
    """Counts the writes to the table (one per event, or one per partition and batch)."""

    writes = 0

    def write(self, partition: int, writes: dict[str, bytes | None]) -> None:
        self.writes += 1
        super().write(partition, writes)


def run_worker(
    tmp_path: Any, records: list[Record], batch: int | None = None
) -> tuple[TriggerWorker, KeptOutput, FakeTable]:
    """A worker (whose engine fails on `BOOM`) after `records`: one by one (`handle`), or
    in batches of `batch` (`handle_batch`); its output and its table."""
    worker = TriggerWorker(settings(tmp_path))
    output = worker.output = KeptOutput()  # type: ignore[assignment]
    table = FakeTable()
    worker.staged_state = CountedTable(table)
    worker.path.feed = failing(worker.path.feed)
    events = [WorkerEvent(WorkerMessage(offset, record)) for offset, record in enumerate(records)]

    async def deliver() -> None:
        if batch is None:
            for event in events:
                await worker.handle(event)  # type: ignore[arg-type]
        else:
            for start in range(0, len(events), batch):
                await worker.handle_batch(events[start : start + batch])  # type: ignore[arg-type]

    asyncio.run(deliver())
    return worker, output, table


def through_worker(tmp_path: Any, records: list[Record]) -> tuple[list[str], list[bytes]]:
    """The dead letters (as the backfill's summary would describe them) and the actions."""
    worker, output, _ = run_worker(tmp_path, records)
    dead: list[str] = []
    actions: list[bytes] = []
    action_codec = codec_for(ActionEvent)
    for topic, _, value, headers in output.sent:
        if topic == "unit.interactions.dlq":
            error = {k[len("moments.error.") :]: v.decode() for k, v in headers if "error" in k}
            dead.append(
                f"interactions[0]@{error['offset']}: {error['stage']}: {error['class']}: "
                f"{error['message'][:200]}"
            )
        elif ".actions." in topic and value is not None:
            actions.append(to_line(action_codec.decode(value)))
    assert worker.path.future_dated == 1
    return dead, actions


def through_backfill(records: list[Record]) -> tuple[list[str], list[bytes]]:
    engine = Engine(load_rule_pack(), engine_config(settings()), decisions=False)
    summary = BackfillSummary(topic="interactions", partitions=1)
    actions = io.BytesIO()
    run = _Run(engine, settings(), summary, OutputWriter(actions), None, [0])
    run.path.feed = failing(run.path.feed)
    messages = [
        Message(
            topic="interactions",
            partition=0,
            offset=offset,
            key=record.key,
            value=record.value,
            headers=record.headers,
            timestamp=(TIMESTAMP_CREATE_TIME, record.timestamp_ms),
        )
        for offset, record in enumerate(records)
    ]
    eof = Message(
        topic="interactions",
        partition=0,
        offset=len(records),
        error=KafkaError(KafkaError._PARTITION_EOF),
    )
    run.run_batch([*messages, eof], {0: len(records)}, {0})
    assert summary.future_dated == 1
    return summary.garbage_samples, actions.getvalue().splitlines()


def to_line(action: ActionEvent) -> bytes:
    out = io.BytesIO()
    OutputWriter(out).write_records([action], [])
    return out.getvalue().rstrip(b"\n")


def test_the_worker_and_the_backfill_reach_the_same_verdict_for_every_record(
    tmp_path: Any,
) -> None:
    records = stream()
    worker_dead, worker_actions = through_worker(tmp_path, records)
    backfill_dead, backfill_actions = through_backfill(records)
    assert worker_dead == backfill_dead
    stages = [line.split(": ")[1] for line in worker_dead]
    assert stages == [
        "decode",  # tombstone
        "size",
        "size",
        "decode",  # garbage
        "decode",  # empty
        "validate",
        "validate",  # customer_since in the future
        "validate",  # a preferred channel no person answers
        "engine",
        "decode",  # a header, but not a control one
    ]
    assert worker_actions == backfill_actions
    fired = [line for line in worker_actions if b"case_unresolved" in line]
    assert len(fired) == 1 and b'"cat"' in fired[0]  # ann was erased before her case fired


def test_batches_reach_what_the_records_one_by_one_reach_though_the_engine_fails(
    tmp_path: Any,
) -> None:
    """A batch is handled with its state kept across records; the engine failing on one of
    them drops that pass whole, and the batch is handled again record by record: the same
    output (each record once, in order), the same state, each metric counted once."""
    records = stream()
    counters = (
        DLQ_RECORDS.labels(Stage.ENGINE),
        DLQ_RECORDS.labels(Stage.DECODE),
        EVENTS_FUTURE_DATED,
        EVENTS_CONSUMED.labels("email", "dispute_opened"),
    )

    def counted() -> list[float]:
        return [counter._value.get() for counter in counters]

    before = counted()
    one, one_by_one, one_table = run_worker(tmp_path / "one", records)
    per_record = [after - was for after, was in zip(counted(), before, strict=True)]
    assert per_record == [1, 4, 1, 2]
    writes: dict[int, int] = {}
    for size in (3, len(records)):  # the failing record in the middle of a batch, or anywhere
        before = counted()
        worker, batched, table = run_worker(tmp_path / f"batch{size}", records, batch=size)
        assert batched.sent == one_by_one.sent
        assert table.data == one_table.data
        assert [after - was for after, was in zip(counted(), before, strict=True)] == per_record
        assert worker.path.future_dated == 1
        writes[size] = cast(CountedTable, worker.staged_state).writes
    # batches without the failing record wrote their state once each; the one with it, at
    # most once per record and once for its applied offset
    assert writes[3] <= -(-len(records) // 3) + 3 < cast(CountedTable, one.staged_state).writes


def test_an_event_too_late_to_apply_is_kept_on_the_late_topic_and_changes_nothing(
    tmp_path: Any,
) -> None:
    worker = TriggerWorker(settings(tmp_path).replace(max_lateness="1h"))
    output = worker.output = KeptOutput()  # type: ignore[assignment]
    table = FakeTable()
    worker.staged_state = StagedTable(table)
    late = dataclasses.replace(OPENED, event_id="e9", customer_id="eve", reference="R-9")
    records = [Record(encoded(LATER), key=b"bob"), Record(encoded(late), key=b"eve")]
    events = [WorkerEvent(WorkerMessage(offset, record)) for offset, record in enumerate(records)]
    before = EVENTS_TOO_LATE._value.get()
    asyncio.run(worker.handle_batch(events))  # type: ignore[arg-type]
    assert EVENTS_TOO_LATE._value.get() - before == 1
    late_records = [sent for sent in output.sent if sent[0] == "unit.interactions.late"]
    assert [key for _, key, _, _ in late_records] == [b"eve"]  # nothing else went there
    _, _, value, headers = late_records[0]
    error = {k[len("moments.error.") :]: v.decode() for k, v in headers if "error" in k}
    assert (value, error["stage"], error["class"], error["offset"]) == (
        records[1].value,
        "late",
        "TooLate",
        "1",
    )
    assert not [sent for sent in output.sent if sent[1] == b"eve" and sent is not late_records[0]]
    assert not any("eve" in key for key in table.data)  # never applied
    assert table.data["0/w/applied"] == b"1"
