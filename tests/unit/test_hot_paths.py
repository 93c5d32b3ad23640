"""The fast paths of replay and backfill give exactly what the general paths give."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas._native as native_package
from processors.engine import Engine, load_rule_pack
from processors.replay import Replayer, replay_file
from producers.simulator import simulate
from schemas.codec import (
    AvroCodec,
    DecodeError,
    SchemaValidationError,
    event_from_json,
    read_events_jsonl,
    to_json_bytes,
    to_json_line,
    to_json_lines,
)
from schemas.native import native_modules
from schemas.records import ActionEvent, Decision, InteractionEvent
from schemas.validation import event_problem

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
MS = st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999)


@settings(max_examples=300, deadline=None)
@given(
    ids=st.lists(TEXT, max_size=4),
    text=TEXT,
    details=st.dictionaries(TEXT, TEXT, max_size=4),
    at=MS,
    due=st.none() | MS,
)
def test_action_and_decision_bytes_are_the_json_lines(
    ids: list[str], text: str, details: dict[str, str], at: int, due: int | None
) -> None:
    action = ActionEvent(text, "c1", "r", "a", 1, "care", 50, text, ids, "web", at, due, details)
    decision = Decision(text, "c1", "r", 1, "fired", text, None, ids, at)
    assert to_json_bytes(action) == to_json_line(action).encode("utf-8")
    assert to_json_bytes(decision) == to_json_line(decision).encode("utf-8")
    both: list[ActionEvent | Decision] = [action, decision, action]
    assert to_json_lines(both) == "".join(to_json_line(r) + "\n" for r in both).encode("utf-8")


@pytest.mark.parametrize(
    "ms", [-62_135_596_800_000, -1, 0, 59_999, 60_000, 1_767_225_599_999, 253_402_300_799_999]
)
def test_fast_timestamps_are_the_general_text(ms: int) -> None:
    from schemas.json_form import _fast_ms_to_iso, _ms_to_iso

    assert _fast_ms_to_iso(ms) == _fast_ms_to_iso(ms) == _ms_to_iso(ms)


def test_out_of_range_timestamps_fail_like_the_general_path() -> None:
    from schemas.json_form import _fast_ms_to_iso, _ms_to_iso

    for ms in (-62_135_596_800_001, 253_402_300_800_000):
        with pytest.raises(OverflowError):
            _ms_to_iso(ms)
        with pytest.raises(OverflowError):
            _fast_ms_to_iso(ms)


def test_a_lone_surrogate_fails_like_the_general_path() -> None:
    action = ActionEvent("x", "c1", "r", "a", 1, "care", 50, "bad \ud800", [], "web", 0)
    with pytest.raises(UnicodeEncodeError):
        to_json_line(action).encode("utf-8")
    with pytest.raises(UnicodeEncodeError):
        to_json_bytes(action)


BASE = {
    "event_id": "e1",
    "customer_id": "c1",
    "channel": "web",
    "type": "inquiry",
    "occurred_at": "2026-01-05T10:00:00.000+00:00",
}
VARIANTS = [
    {},
    {"occurred_at": "2026-01-05T12:00:00+02:00"},
    {"occurred_at": "2026-01-05T10:00:00Z"},
    {"occurred_at": "20260105T100000Z"},
    {"amount": 42},
    {"amount": 42.125, "currency": "EUR"},
    {"amount": 18446744073709551616},
    {"due_date": "2026-02-01", "customer_since": "2015-02-28"},
    {"source": None, "product": None, "text": None, "attributes": None},
    {"attributes": {"topic": "app", "plan": "gold"}},
    {"event_id": None},
]
BAD = [
    {"amount": True},
    {"amount": "12"},
    {"unknown": 1},
    {"channel": "fax"},
    {"customer_id": ""},
    {"occurred_at": "2026-01-05T10:00:00"},
    {"occurred_at": "2026-01-05T10:00:60.000+00:00"},
    {"due_date": "2026-2-1"},
    {"attributes": {"n": 1}},
]


def test_well_formed_lines_read_fast_give_the_general_events(tmp_path: Path) -> None:
    lines = [json.dumps({**BASE, **v}) for v in VARIANTS] + ["   "]
    path = tmp_path / "events.jsonl"
    path.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    expected = [event_from_json({**BASE, **v}) for v in VARIANTS]
    assert list(read_events_jsonl(path)) == expected


@pytest.mark.parametrize("variant", BAD)
def test_bad_lines_give_the_general_error(tmp_path: Path, variant: dict[str, object]) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(BASE) + "\n" + json.dumps({**BASE, **variant}) + "\n")
    with pytest.raises(SchemaValidationError) as general:
        event_from_json({**BASE, **variant}, where=f"{path}:2")
    with pytest.raises(SchemaValidationError) as fast:
        list(read_events_jsonl(path))
    assert str(fast.value) == str(general.value)


def test_nan_literal_is_judged_by_the_general_path(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(BASE)[:-1] + ', "amount": NaN}\n')
    with pytest.raises(SchemaValidationError, match="amount"):
        list(read_events_jsonl(path))


#: Every field, in the order the JSON form writes them (the fast path's first branch).
FULL = {
    **BASE,
    "source": "web-portal",
    "product": "gas",
    "reference": "R-1",
    "amount": 12.5,
    "currency": "EUR",
    "due_date": "2026-02-01",
    "customer_since": "2015-02-28",
    "text": "hello",
    "attributes": {"topic": "app"},
}


def _read_like_the_general_path(tmp_path: Path, obj: dict[str, object]) -> None:
    """The file path gives what `event_from_json` gives: the same event or the same error."""
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(FULL) + "\n" + json.dumps(obj) + "\n")
    try:
        expected: object = event_from_json(obj, where=f"{path}:2")
    except SchemaValidationError as exc:
        expected = str(exc)
    try:
        got: object = list(read_events_jsonl(path))[1]
    except SchemaValidationError as exc:
        got = str(exc)
    assert got == expected


@pytest.mark.parametrize("variant", VARIANTS + BAD)
def test_full_lines_in_schema_order_read_like_the_general_path(
    tmp_path: Path, variant: dict[str, object]
) -> None:
    _read_like_the_general_path(tmp_path, {**FULL, **variant})


def test_full_lines_in_another_order_read_like_the_general_path(tmp_path: Path) -> None:
    shuffled = dict(reversed(list(FULL.items())))
    _read_like_the_general_path(tmp_path, shuffled)
    _read_like_the_general_path(tmp_path, {**shuffled, "customer_id": 7})


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(list(FULL)),
    odd=st.sampled_from(
        [None, 1, True, 2.5, "", "x", "x" * 257, [], {}, {"k": 1}, {"k" * 257: "v"}, 1e308 * 10]
    ),
)
def test_any_odd_field_in_a_full_line_gives_the_general_event_or_error(
    tmp_path_factory: pytest.TempPathFactory, name: str, odd: object
) -> None:
    _read_like_the_general_path(tmp_path_factory.mktemp("odd"), {**FULL, name: odd})


def test_events_read_fast_do_not_share_their_attributes(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(FULL) + "\n" + json.dumps(FULL) + "\n")
    first, second = read_events_jsonl(path)
    first.attributes["topic"] = "changed"
    assert second.attributes == {"topic": "app"}


def test_engine_without_decisions_gives_the_same_actions_and_count() -> None:
    events = list(simulate(300, 40, seed=11, story_rate=0.5))
    pack = load_rule_pack()
    full, lean = Replayer(Engine(pack), 3), Replayer(Engine(pack, decisions=False), 3)
    full_actions, lean_actions, decisions = [], [], 0
    for event in events:
        out = full.feed(event)
        full_actions += out.actions
        decisions += len(out.decisions)
        lean_out = lean.feed(event)
        assert lean_out.decisions == []
        lean_actions += lean_out.actions
    assert lean_actions == full_actions
    assert lean.engine.decided == full.engine.decided == decisions > 0
    assert lean.stores[0].data == full.stores[0].data


def test_replay_counts_decisions_it_does_not_write(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(to_json_line(e) + "\n" for e in simulate(200, 30, seed=3)))
    with_file = replay_file(
        path, actions_out=tmp_path / "a1.jsonl", decisions_out=tmp_path / "d.jsonl"
    )
    without = replay_file(path, actions_out=tmp_path / "a2.jsonl")
    assert (tmp_path / "a1.jsonl").read_bytes() == (tmp_path / "a2.jsonl").read_bytes()
    assert (
        without.decisions
        == with_file.decisions
        == len((tmp_path / "d.jsonl").read_text().splitlines())
    )


# -- the generated Avro reader ---------------------------------------------------------------

OPTIONAL_TEXT = st.none() | TEXT
DAYS = st.none() | st.dates()


@st.composite
def events(draw: st.DrawFn) -> InteractionEvent:
    return InteractionEvent(
        draw(TEXT.filter(bool)),
        draw(TEXT.filter(bool)),
        draw(st.sampled_from(("call", "email", "billing", "web", "other"))),
        draw(TEXT.filter(bool)),
        draw(MS),
        draw(TEXT),
        draw(OPTIONAL_TEXT),
        draw(OPTIONAL_TEXT),
        draw(st.none() | st.floats(allow_nan=False, allow_infinity=False)),
        draw(OPTIONAL_TEXT),
        draw(DAYS),
        draw(DAYS),
        draw(OPTIONAL_TEXT),
        draw(st.dictionaries(TEXT, TEXT, max_size=5)),
    )


def _fastavro_only(record_type: type) -> AvroCodec[Any]:
    codec: AvroCodec[Any] = AvroCodec(record_type)
    codec._fast_reader = None
    codec._fast_writer = None
    codec._checked_writer = None
    codec._fast_decoder = None
    return codec


@functools.cache
def _event_codecs() -> tuple[AvroCodec[InteractionEvent], AvroCodec[InteractionEvent]]:
    """The generated paths and fastavro alone, built once for every example: building a
    codec compiles its readers and writers (most of a property's time), and a codec keeps
    nothing between calls."""
    return AvroCodec(InteractionEvent), _fastavro_only(InteractionEvent)


def _outcome(decode: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "ok", decode(data)
    except DecodeError as exc:
        return type(exc).__name__, (str(exc), exc.stage)


@settings(max_examples=300, deadline=None)
@given(event=events(), cut=st.integers(min_value=0, max_value=400), flip=st.integers(0, 255))
def test_generated_reader_gives_fastavros_records_and_errors(
    event: InteractionEvent, cut: int, flip: int
) -> None:
    fast, reference = _event_codecs()
    assert fast._fast_reader is not None and fast._fast_decoder is not None
    data = reference.encode(event, validate=False)
    assert fast._fast_decoder(data) == event
    assert _outcome(fast.decode, data) == _outcome(reference.decode, data)
    if event_problem(event) is None:  # else both name the rule between fields it breaks
        assert fast.decode(data) == event
    assert fast.decode_dict(data) == reference.decode_dict(data)
    position = 10 + cut % max(1, len(data) - 10)
    for damaged in (
        data[:position],
        data[:position] + bytes([flip]) + data[position + 1 :],
        data + bytes([flip]),
    ):
        assert _outcome(fast.decode, damaged) == _outcome(reference.decode, damaged)


def test_generated_readers_cover_actions_and_decisions() -> None:
    action = ActionEvent("a1", "c1", "r", "a", 1, "care", 50, "why", ["e1"], "web", 5, None, {})
    full = ActionEvent(
        "a2", "c1", "r", "a", 1, "care", 50, "why", ["e1", "e2", "e3"], "web", 5, 9,
        {"products": "gas,power", "relationship_balance": "-2", "x" * 70: "y" * 300},
    )  # fmt: skip
    decision = Decision("d1", "c1", "r", 1, "held_out", "held_out", None, ["e1", "e2"], 7)
    for record in (action, full, decision):
        codec = AvroCodec(type(record))
        assert codec._fast_reader is not None and codec._fast_decoder is not None
        data = codec.encode(record)
        assert codec._fast_decoder(data) == codec.decode(data) == record


def test_native_modules_are_current() -> None:
    """schemas/_native/ holds what the generator writes now (python -m schemas.native
    --write-native), so the compiled decoders and writers run the very code the codec
    would exec."""
    directory = Path(native_package.__file__).parent
    assert {p.name for p in directory.glob("*.py")} - {"__init__.py"} == set(native_modules())
    for name, source in native_modules().items():
        assert (directory / name).read_text() == source, f"{name} is stale: regenerate it"


def test_a_native_decoder_generated_from_another_source_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = importlib.import_module("schemas._native.interaction_event")
    assert AvroCodec(InteractionEvent)._fast_decoder is module.decode
    monkeypatch.setattr(module, "SOURCE_DIGEST", "0" * 64)
    codec = AvroCodec(InteractionEvent)
    assert codec._fast_decoder is not None and codec._fast_decoder is not module.decode
    assert codec._fast_decoder.__code__.co_filename == "<avro decoder InteractionEvent>"
    event = InteractionEvent("e1", "c1", "web", "inquiry", 1_700_000_000_000, "ivr")
    assert codec._fast_decoder(codec.encode(event)) == event


def _encoded(codec: AvroCodec[Any], record: Any) -> tuple[str, Any]:
    try:
        return "ok", codec.encode(record, validate=False)
    except Exception as exc:
        return "error", type(exc).__name__


@settings(max_examples=300, deadline=None)
@given(event=events(), odd=st.sampled_from([None, 1, True, 2.5, "x", 2**70, -(2**64), b"b"]))
def test_generated_writer_writes_fastavros_bytes(event: InteractionEvent, odd: object) -> None:
    fast, reference = _event_codecs()
    assert fast._fast_writer is not None
    assert fast.encode(event, validate=False) == reference.encode(event, validate=False)
    for name in ("occurred_at", "source", "product", "amount", "due_date", "attributes"):
        strange = dataclasses.replace(event, **{name: odd})
        assert _encoded(fast, strange) == _encoded(reference, strange)


def _validated(codec: AvroCodec[Any], record: Any) -> tuple[str, Any]:
    try:
        return "ok", codec.encode(record)
    except SchemaValidationError as exc:
        return "invalid", str(exc)
    except Exception as exc:
        return "error", type(exc).__name__


@settings(max_examples=300, deadline=None)
@given(
    event=events(),
    odd=st.sampled_from([None, 1, True, 2.5, "", "x", float("nan"), 2**70, {"k": 1}, b"b"]),
)
def test_checked_writer_validates_like_validate_then_fastavro(
    event: InteractionEvent, odd: object
) -> None:
    fast, reference = _event_codecs()
    assert fast._checked_writer is not None
    assert _validated(fast, event) == _validated(reference, event)
    for name in ("event_id", "channel", "type", "occurred_at", "source", "amount", "due_date"):
        strange = dataclasses.replace(event, **{name: odd})
        assert _validated(fast, strange) == _validated(reference, strange)


def test_generated_writers_cover_actions_and_decisions() -> None:
    action = ActionEvent(
        "a1", "c1", "r", "a", 1, "care", 50, "why", ["e1"], "web", 5, 9, {"k": "v"}
    )
    decision = Decision("d1", "c1", "r", 1, "held_out", "held_out", "a1", ["e1", "e2"], 7)
    for record in (action, decision):
        fast, reference = AvroCodec(type(record)), _fastavro_only(type(record))
        assert fast._fast_writer is not None
        assert fast.encode(record) == reference.encode(record)
        unchecked = fast.encode(record, validate=False)  # the native writer, where built
        assert unchecked == reference.encode(record, validate=False)
    odd = dataclasses.replace(action, rule_version=True, triggered_at=2**70, details={"k": 1})
    for field, value in dataclasses.asdict(odd).items():
        record = dataclasses.replace(action, **{field: value})
        assert _encoded(AvroCodec(ActionEvent), record) == _encoded(
            _fastavro_only(ActionEvent), record
        ), field


def test_the_checked_writer_refuses_a_bool_where_an_int_belongs() -> None:
    """A compiled writer's int variable takes a bool (and says its type is int): the field's
    own type is what it checks, so validation still names the field."""
    event = InteractionEvent("e1", "c1", "web", "inquiry", 1, "s")
    codec = AvroCodec(InteractionEvent)
    with pytest.raises(SchemaValidationError, match=r"occurred_at: .*boolean"):
        codec.encode(dataclasses.replace(event, occurred_at=True))
    # unchecked, a bool is written as the int it equals, as fastavro writes it
    assert codec.encode(dataclasses.replace(event, occurred_at=True), validate=False) == (
        codec.encode(event, validate=False)
    )


@pytest.mark.parametrize(
    ("module_name", "writer"),
    [("action_event_writer", "_fast_writer"), ("action_event_checked_writer", "_checked_writer")],
)
def test_a_native_writer_generated_from_another_source_is_not_used(
    monkeypatch: pytest.MonkeyPatch, module_name: str, writer: str
) -> None:
    module = importlib.import_module(f"schemas._native.{module_name}")
    assert getattr(AvroCodec(ActionEvent), writer) is module.write
    monkeypatch.setattr(module, "SOURCE_DIGEST", "0" * 64)
    generated = getattr(AvroCodec(ActionEvent), writer)
    assert generated is not None and generated is not module.write
    assert generated.__code__.co_filename == "<avro writer ActionEvent>"


@settings(max_examples=300, deadline=None)
@given(event=events(), odd=st.sampled_from([None, 1, True, 2.5, "", float("nan"), {"k": 1}]))
def test_plainly_valid_events_pass_every_check(event: InteractionEvent, odd: object) -> None:
    from schemas.validation import CHECKS, plainly_valid_event

    for name in ("event_id", "channel", "occurred_at", "amount", "due_date", "attributes"):
        candidate = dataclasses.replace(event, **{name: odd})
        problems = [n for n, check in CHECKS[InteractionEvent] if check(getattr(candidate, n))]
        if plainly_valid_event(candidate):
            assert problems == [] and event_problem(candidate) is None
    finite = event.amount is None or event.amount == event.amount
    assert plainly_valid_event(event) == (finite and event_problem(event) is None)
