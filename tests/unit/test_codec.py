"""Unit tests of the codec: Avro wire formats, JSON form, validation, JSONL reading."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import (
    MAX_IDENTIFIER_CHARS,
    AvroCodec,
    DecodeError,
    SchemaValidationError,
    action_from_json,
    action_status_from_json,
    codec_for,
    decision_from_json,
    event_content_id,
    event_from_json,
    read_events_jsonl,
    schema_fingerprint,
    to_json_bytes,
    to_json_dict,
    to_json_line,
    validate,
)
from schemas.records import CHANNELS, ActionEvent, ActionStatus, Decision, InteractionEvent
from schemas.validation import event_problem, plainly_valid_event

EVENT = InteractionEvent(
    event_id="0190a1b2-c3d4-7e5f-8a9b-0123456789ab",
    customer_id="customer-42",
    channel="billing",
    type="invoice_issued",
    occurred_at=1_767_323_045_123,
    source="billing-core",
    product="gas",
    reference="INV-1234",
    amount=42.5,
    currency="EUR",
    due_date=date(2026, 1, 20),
    customer_since=date(2015, 3, 1),
    text="first invoice — ünïcode",
    attributes={"region": "north", "plan": "basic"},
)
MINIMAL_EVENT = InteractionEvent(
    event_id="e-1",
    customer_id="c-1",
    channel="call",
    type="cancellation_requested",
    occurred_at=0,
)
ACTION = ActionEvent(
    action_id="a-1",
    customer_id="customer-42",
    rule="life_event_check_in",
    action="life_event_check_in",
    rule_version=1,
    destination="care",
    priority=80,
    reason="The customer asked to cancel by phone; ask whether a life event is behind it.",
    evidence=["e-1", "e-2"],
    channel_hint="call",
    triggered_at=1_767_323_045_000,
    due_by=1_767_409_445_000,
    details={"products": "gas,power"},
)
DECISION = Decision(
    decision_id="d-1",
    customer_id="customer-42",
    rule="life_event_check_in",
    rule_version=1,
    outcome="suppressed",
    reason="cool_down",
    action_id=None,
    evidence=["e-1"],
    decided_at=1_767_323_045_000,
)
STATUS = ActionStatus(
    action_id="a-1",
    customer_id="customer-42",
    rule="case_follow_up",
    destination="care",
    status="done",
    owner="team-lead-7",
    resolution="completed",
    at=1_767_323_045_000,
    event_id="e-9",
)
RECORDS = [EVENT, MINIMAL_EVENT, ACTION, DECISION, STATUS]
FROM_JSON: dict[type, Any] = {
    ActionStatus: action_status_from_json,
    InteractionEvent: event_from_json,
    ActionEvent: action_from_json,
    Decision: decision_from_json,
}


# --- Avro wire formats


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_single_object_round_trip(record: Any) -> None:
    codec = AvroCodec(type(record))
    data = codec.encode(record)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == schema_fingerprint(type(record))
    assert codec.decode(data) == record


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_confluent_round_trip_through_mock_registry(record: Any) -> None:
    codec = AvroCodec(type(record), registry_url="mock://codec-test", topic="t.interactions")
    data = codec.encode(record)
    assert data[0] == 0  # Confluent magic byte, then a 4-byte schema id
    assert codec.decode(data) == record


def test_decoded_timestamps_are_ints_and_dates_are_dates() -> None:
    for codec in (
        AvroCodec(InteractionEvent),
        AvroCodec(InteractionEvent, registry_url="mock://t"),
    ):
        decoded = codec.decode(codec.encode(EVENT))
        assert type(decoded.occurred_at) is int
        assert type(decoded.due_date) is date


def test_registry_codec_reads_single_object_encoding_too() -> None:
    plain = AvroCodec(InteractionEvent)
    framed = AvroCodec(InteractionEvent, registry_url="mock://both")
    assert framed.decode(plain.encode(EVENT)) == EVENT


def test_confluent_frame_without_registry_is_a_decode_error() -> None:
    framed = AvroCodec(InteractionEvent, registry_url="mock://frame").encode(EVENT)
    with pytest.raises(DecodeError, match="no schema registry"):
        AvroCodec(InteractionEvent).decode(framed)


def test_fingerprint_is_little_endian_crc64_avro() -> None:
    from fastavro.schema import fingerprint

    # Avro spec test vector: CRC-64-AVRO of the canonical form "null" is 0x63dd24e7cc258f8a,
    # written little-endian after C3 01.
    assert bytes.fromhex(fingerprint('"null"', "CRC-64-AVRO")) == (0x63DD24E7CC258F8A).to_bytes(
        8, "little"
    )
    assert len({schema_fingerprint(t) for t in (InteractionEvent, ActionEvent, Decision)}) == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"garbage bytes", "unknown wire format"),
        (b"\xc3\x01" + bytes(8) + b"\x02", "unknown schema fingerprint"),
        (b"\x00\x00\x00\x03\xe7\x02", "schema id 999"),
    ],
)
def test_garbage_bytes_are_decode_errors(data: bytes, message: str) -> None:
    codec = AvroCodec(InteractionEvent, registry_url="mock://garbage")
    with pytest.raises(DecodeError, match=message) as info:
        codec.decode(data)
    assert info.value.stage == "decode"


def test_truncated_and_padded_bodies_are_decode_errors() -> None:
    codec = AvroCodec(InteractionEvent)
    data = codec.encode(EVENT)
    for bad in (data[:-3], data + b"\x00", data[:10] + b"\xff" * 12):
        with pytest.raises(DecodeError, match="bad Avro body"):
            codec.decode(bad)


def test_other_record_type_is_named() -> None:
    data = AvroCodec(ActionEvent).encode(ACTION)
    with pytest.raises(DecodeError, match="holds a ActionEvent, expected InteractionEvent"):
        AvroCodec(InteractionEvent).decode(data)


def test_decoded_invalid_record_is_a_validate_stage_error() -> None:
    codec = AvroCodec(InteractionEvent)
    data = codec.encode(replace(EVENT, customer_id=""), validate=False)
    with pytest.raises(SchemaValidationError) as info:
        codec.decode(data)
    assert isinstance(info.value, DecodeError)
    assert info.value.stage == "validate"
    assert info.value.field == "customer_id"
    assert codec.decode(data, validate=False).customer_id == ""


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event_id": ""}, "event_id"),
        ({"type": ""}, "type"),
        ({"occurred_at": 2**62}, "occurred_at"),
        ({"amount": float("nan")}, "amount"),
        ({"amount": float("-inf")}, "amount"),
    ],
)
def test_fast_decoder_leaves_invalid_records_to_the_named_error(
    change: dict[str, Any], field: str
) -> None:
    codec = AvroCodec(InteractionEvent)
    data = codec.encode(replace(EVENT, **change), validate=False)
    with pytest.raises(Exception):  # noqa: B017 - any exception: the caller asks decode
        codec.fast_decode(data)
    with pytest.raises(SchemaValidationError) as info:
        codec.decode(data)
    assert info.value.field == field
    assert codec.fast_decode(codec.encode(EVENT)) == EVENT


LONG = "x" * (MAX_IDENTIFIER_CHARS + 1)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event_id": LONG}, "event_id"),
        ({"customer_id": LONG}, "customer_id"),
        ({"type": LONG}, "type"),
        ({"source": LONG}, "source"),
        ({"product": LONG}, "product"),
        ({"reference": LONG}, "reference"),
        ({"currency": LONG}, "currency"),
        ({"attributes": {LONG: "v"}}, "attributes"),
    ],
)
def test_identifiers_over_the_limit_are_invalid_everywhere(
    change: dict[str, Any], field: str, tmp_path: Path
) -> None:
    codec = AvroCodec(InteractionEvent)
    event = replace(EVENT, **change)
    with pytest.raises(SchemaValidationError) as info:
        codec.encode(event)
    assert (info.value.field, info.value.message.endswith("exceed the limit of 256")) == (
        field,
        True,
    )
    assert LONG not in str(info.value)  # the value itself is never echoed
    data = codec.encode(event, validate=False)
    with pytest.raises(SchemaValidationError) as decoded:
        codec.decode(data)
    assert decoded.value.field == field
    with pytest.raises(SchemaValidationError) as from_json:
        event_from_json(to_json_dict(event))
    assert from_json.value.field == field
    lines = tmp_path / "events.jsonl"
    lines.write_text(to_json_line(event) + "\n")
    with pytest.raises(SchemaValidationError) as from_file:
        list(read_events_jsonl(lines))
    assert (from_file.value.field, from_file.value.where) == (field, f"{lines}:1")


def test_identifiers_at_the_limit_are_valid() -> None:
    codec = AvroCodec(InteractionEvent)
    most = "x" * MAX_IDENTIFIER_CHARS
    event = replace(EVENT, customer_id=most, source=most, attributes={most: "v"})
    assert codec.decode(codec.encode(event)) == event
    assert event_from_json(to_json_dict(event)) == event


def test_decode_dict_gives_int_timestamps() -> None:
    fields = AvroCodec(ActionEvent).decode_dict(AvroCodec(ActionEvent).encode(ACTION))
    assert fields["triggered_at"] == ACTION.triggered_at
    assert fields["due_by"] == ACTION.due_by


def test_codec_for_is_cached() -> None:
    assert codec_for(InteractionEvent) is codec_for(InteractionEvent)
    assert codec_for(InteractionEvent) is not codec_for(InteractionEvent, "mock://cached")
    assert codec_for(Decision).decode(codec_for(Decision).encode(DECISION)) == DECISION


# --- validation


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (replace(EVENT, channel="fax"), "channel"),
        (replace(EVENT, event_id=""), "event_id"),
        (replace(EVENT, customer_id=""), "customer_id"),
        (replace(EVENT, type=""), "type"),
        (replace(EVENT, occurred_at="2026-01-01"), "occurred_at"),
        (replace(EVENT, occurred_at=1.5), "occurred_at"),
        (replace(EVENT, occurred_at=True), "occurred_at"),
        (replace(EVENT, amount=float("nan")), "amount"),
        (replace(EVENT, due_date="2026-01-01"), "due_date"),
        (replace(EVENT, attributes={"plan": 3}), "attributes.plan"),
        (replace(ACTION, priority=101), "priority"),
        (replace(ACTION, priority=-1), "priority"),
        (replace(ACTION, destination="nowhere"), "destination"),
        (replace(ACTION, evidence=["e-1", 2]), "evidence[1]"),
        (replace(DECISION, outcome="maybe"), "outcome"),
        (replace(DECISION, decided_at=None), "decided_at"),
    ],
)
def test_validation_names_the_field(record: Any, field: str) -> None:
    with pytest.raises(SchemaValidationError) as info:
        validate(record)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    with pytest.raises(SchemaValidationError):
        AvroCodec(type(record)).encode(record)


def test_valid_records_pass() -> None:
    for record in RECORDS:
        validate(record)


# EVENT occurred on 2026-01-02 (UTC): its customer_since may lie up to 2026-01-03.
PREFERENCES = replace(
    EVENT,
    type="contact_preferences_changed",
    attributes={"engagement": "opt_out", "preferred_channel": "email"},
)


@pytest.mark.parametrize(
    ("event", "field", "message"),
    [
        (replace(EVENT, customer_since=date(1899, 12, 31)), "customer_since", "before 1900-01-01"),
        (replace(EVENT, customer_since=date(2026, 1, 4)), "customer_since", "in the future"),
        (replace(EVENT, customer_since=date(2999, 1, 1)), "customer_since", "in the future"),
        (
            replace(PREFERENCES, attributes={"engagement": "maybe"}),
            "attributes.engagement",
            "must be opt_out or opt_in",
        ),
        (
            replace(
                PREFERENCES, attributes={"engagement": "opt_in", "preferred_channel": "billing"}
            ),
            "attributes.preferred_channel",
            "call, email, web",
        ),
        (
            replace(PREFERENCES, attributes={"preferred_channel": "Email"}),
            "attributes.preferred_channel",
            "call, email, web",
        ),
        (
            replace(EVENT, type="action_done", attributes={"resolution": "fixed"}),
            "attributes.resolution",
            "completed, customer_declined, unreachable",
        ),
        (
            replace(EVENT, type="action_acknowledged", attributes={"owner": "o" * 257}),
            "attributes.owner",
            "exceed the limit of 256",
        ),
        (
            replace(EVENT, type="action_reassigned", attributes={"owner": "o" * 300}),
            "attributes.owner",
            "exceed the limit of 256",
        ),
    ],
)
def test_rules_between_fields_name_the_field_on_every_reading_path(
    event: InteractionEvent, field: str, message: str, tmp_path: Path
) -> None:
    assert event_problem(event) is not None
    assert not plainly_valid_event(event)  # the full check must run
    with pytest.raises(SchemaValidationError) as info:
        validate(event)
    assert (info.value.field, message in info.value.message) == (field, True)
    with pytest.raises(SchemaValidationError) as from_json:
        event_from_json(to_json_dict(event))
    assert (from_json.value.field, from_json.value.message) == (field, info.value.message)
    lines = tmp_path / "events.jsonl"
    lines.write_text(to_json_line(MINIMAL_EVENT) + "\n" + to_json_line(event) + "\n")
    with pytest.raises(SchemaValidationError) as from_file:
        list(read_events_jsonl(lines))  # the fast path leaves the line to the named error
    assert (from_file.value.field, from_file.value.where) == (field, f"{lines}:2")
    for value in event.attributes.values():
        assert value not in str(info.value)  # no attribute value is echoed
    for codec in (codec_for(InteractionEvent), codec_for(InteractionEvent, "mock://rules")):
        with pytest.raises(SchemaValidationError) as encoded:
            codec.encode(event)
        assert encoded.value.field == field
        data = codec.encode(event, validate=False)
        with pytest.raises(DecodeError) as decoded:  # the worker's dead letter, stage validate
            codec.decode(data)
        assert (decoded.value.stage, getattr(decoded.value, "field", None)) == ("validate", field)
        with pytest.raises(Exception):  # noqa: B017 - any exception: the caller asks decode
            codec.fast_decode(data)
        assert codec.decode(data, validate=False) == event
    plain = codec_for(InteractionEvent)
    assert plain._fast_decoder is not None
    assert plain._fast_decoder(plain.encode(event, validate=False)) == event  # fields are fine


@pytest.mark.parametrize(
    "event",
    [
        replace(EVENT, customer_since=date(1900, 1, 1)),
        replace(EVENT, customer_since=date(2026, 1, 3)),  # the day after: zones differ
        replace(EVENT, customer_since=None),
        # no wall clock: an event of 2100 may say its customer joined in 2099
        replace(EVENT, occurred_at=4_102_444_800_000, customer_since=date(2099, 6, 1)),
        PREFERENCES,
        replace(PREFERENCES, attributes={"engagement": "opt_in"}),
        replace(PREFERENCES, attributes={"preferred_channel": "call"}),
        replace(PREFERENCES, attributes={"preferred_channel": "web", "note": "x"}),
        replace(PREFERENCES, attributes={}),
        # only the consent event's attributes are judged
        replace(EVENT, attributes={"engagement": "maybe", "preferred_channel": "billing"}),
    ],
)
def test_events_within_the_rules_between_fields_pass_every_path(
    event: InteractionEvent, tmp_path: Path
) -> None:
    assert event_problem(event) is None
    assert plainly_valid_event(event)
    validate(event)
    for codec in (codec_for(InteractionEvent), codec_for(InteractionEvent, "mock://rules")):
        assert codec.decode(codec.encode(event)) == event
    plain = codec_for(InteractionEvent)
    assert plain.fast_decode(plain.encode(event)) == event
    assert event_from_json(to_json_dict(event)) == event
    lines = tmp_path / "events.jsonl"
    lines.write_text(to_json_line(event) + "\n")
    assert list(read_events_jsonl(lines)) == [event]


# --- JSON form


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_json_round_trip(record: Any) -> None:
    line = to_json_line(record)
    assert "\n" not in line
    assert FROM_JSON[type(record)](json.loads(line)) == record


def test_json_form_shape() -> None:
    form = to_json_dict(EVENT)
    assert list(form) == [
        "event_id", "customer_id", "channel", "type", "occurred_at", "source", "product",
        "reference", "amount", "currency", "due_date", "customer_since", "text", "attributes",
    ]  # fmt: skip
    assert form["occurred_at"] == "2026-01-02T03:04:05.123+00:00"
    assert form["due_date"] == "2026-01-20"
    assert to_json_dict(ACTION)["due_by"] == "2026-01-03T03:04:05.000+00:00"


def test_json_line_is_deterministic() -> None:
    reordered = replace(EVENT, attributes=dict(reversed(list(EVENT.attributes.items()))))
    assert to_json_line(reordered) == to_json_line(EVENT)
    assert to_json_line(EVENT) == to_json_line(event_from_json(json.loads(to_json_line(EVENT))))


def test_json_accepts_any_offset_and_z() -> None:
    base = {"event_id": "x", "customer_id": "c", "channel": "web", "type": "inquiry"}
    z = event_from_json({**base, "occurred_at": "2026-01-02T03:04:05Z"})
    plus = event_from_json({**base, "occurred_at": "2026-01-02T05:04:05.000+02:00"})
    assert z.occurred_at == plus.occurred_at == 1_767_323_045_000
    assert to_json_dict(plus)["occurred_at"] == "2026-01-02T03:04:05.000+00:00"


def test_json_absent_optional_fields_take_defaults() -> None:
    event = event_from_json(
        {"customer_id": "c", "channel": "email", "type": "inquiry",
         "occurred_at": "2026-01-02T03:04:05Z", "product": None}
    )  # fmt: skip
    assert (event.source, event.product, event.attributes) == ("", None, {})


def test_event_id_from_content_is_deterministic() -> None:
    obj = json.loads(to_json_line(EVENT))
    del obj["event_id"]
    first = event_from_json(obj)
    assert first.event_id.startswith("h-") and len(first.event_id) == 34
    assert event_from_json(dict(reversed(list(obj.items())))).event_id == first.event_id
    other = event_from_json({**obj, "amount": 43.0})
    assert other.event_id != first.event_id
    assert first.event_id == event_content_id(replace(EVENT, event_id="anything"))
    # two spellings of one time are one content, so one id
    shifted = {**obj, "occurred_at": "2026-01-02T05:04:05.123+02:00"}
    assert event_from_json(shifted).event_id == first.event_id


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"channel": "fax"}, "channel", "not one of"),
        ({"customer_id": ""}, "customer_id", "empty"),
        ({"occurred_at": 1767323045000}, "occurred_at", "ISO-8601"),
        ({"occurred_at": "2026-01-02T03:04:05"}, "occurred_at", "no UTC offset"),
        ({"occurred_at": "yesterday"}, "occurred_at", "not an ISO-8601"),
        ({"due_date": "20/01/2026"}, "due_date", "YYYY-MM-DD"),
        ({"amount": "12"}, "amount", "number"),
        ({"amount": 10**400}, "amount", "not a finite double"),
        ({"amount": float("inf")}, "amount", "not a finite double"),
        ({"attributes": {"plan": 1}}, "attributes.plan", "string"),
        ({"attributes": ["x"]}, "attributes", "map"),
        ({"colour": "red"}, "colour", "unknown field"),
        ({"type": None}, "type", "must not be null"),
    ],
)
def test_json_errors_name_the_field(change: dict[str, Any], field: str, message: str) -> None:
    obj = {**json.loads(to_json_line(EVENT)), **change}
    with pytest.raises(SchemaValidationError, match=message) as info:
        event_from_json(obj, where="in.jsonl:3")
    assert info.value.field == field
    assert str(info.value).startswith(f"in.jsonl:3: {field}: ")


def test_action_json_requires_its_fields() -> None:
    obj = json.loads(to_json_line(ACTION))
    del obj["reason"]
    with pytest.raises(SchemaValidationError, match="reason: missing"):
        action_from_json(obj)
    with pytest.raises(SchemaValidationError, match="priority"):
        action_from_json({**json.loads(to_json_line(ACTION)), "priority": 200})


# --- JSON lines files


def test_read_events_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(to_json_line(EVENT) + "\n\n   \n" + to_json_line(MINIMAL_EVENT) + "\n")
    assert list(read_events_jsonl(path)) == [EVENT, MINIMAL_EVENT]


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("{not json", "<line>: not valid JSON"),
        ("[1, 2]", "<record>: expected a JSON object, got list"),
        ('{"customer_id": "c"}', "channel: missing required field"),
        (
            '{"customer_id": "c", "channel": "web", "type": "x", "occurred_at": 5}',
            "occurred_at: expected an ISO-8601",
        ),
    ],
)
def test_bad_jsonl_line_names_file_and_line(tmp_path: Path, bad_line: str, expected: str) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(f"{to_json_line(EVENT)}\n\n{bad_line}\n{to_json_line(EVENT)}\n")
    with pytest.raises(SchemaValidationError) as info:
        list(read_events_jsonl(path))
    message = str(info.value)
    assert message.startswith(f"{path}:3: {expected}")
    assert "\n" not in message
    assert info.value.where == f"{path}:3"


# --- property: any valid event survives every representation

_text = st.text(max_size=20)
_ms = st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999)
_DAY_MS = 86_400_000


@st.composite
def _valid_since(draw: st.DrawFn, occurred_at: int) -> date | None:
    """None, or a customer_since from 1900-01-01 to the day after occurred_at (UTC)."""
    latest = date(1970, 1, 1).toordinal() + occurred_at // _DAY_MS + 1
    if latest < date(1900, 1, 1).toordinal() or draw(st.booleans()):
        return None
    latest_day = date.fromordinal(min(latest, date.max.toordinal()))
    return draw(st.dates(min_value=date(1900, 1, 1), max_value=latest_day))


_events = _ms.flatmap(
    lambda occurred_at: st.builds(
        InteractionEvent,
        event_id=st.text(min_size=1, max_size=40),
        customer_id=st.text(min_size=1, max_size=40),
        channel=st.sampled_from(CHANNELS),
        type=st.text(min_size=1, max_size=30),
        occurred_at=st.just(occurred_at),
        source=_text,
        product=st.none() | _text,
        reference=st.none() | _text,
        amount=st.none() | st.floats(allow_nan=False, allow_infinity=False),
        currency=st.none() | _text,
        due_date=st.none() | st.dates(),
        customer_since=_valid_since(occurred_at),
        text=st.none() | st.text(max_size=200),
        attributes=st.dictionaries(_text, _text, max_size=5),
    )
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_events)
def test_valid_events_round_trip(event: InteractionEvent) -> None:
    validate(event)
    plain = codec_for(InteractionEvent)
    assert plain.decode(plain.encode(event)) == event
    framed = codec_for(InteractionEvent, "mock://property")
    assert framed.decode(framed.encode(event)) == event
    line = to_json_line(event)
    assert event_from_json(json.loads(line)) == event
    assert to_json_line(event_from_json(json.loads(line))) == line


def test_errors_survive_pickling() -> None:
    import pickle

    codec = AvroCodec(InteractionEvent)
    errors: list[Exception] = [SchemaValidationError("channel", "bad", "f.jsonl:1")]
    for data in (b"junk", codec.encode(replace(EVENT, customer_id=""), validate=False)):
        try:
            codec.decode(data)
        except DecodeError as exc:
            errors.append(exc)
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), str(copy)) == (type(error), str(error))
        assert getattr(copy, "stage", None) == getattr(error, "stage", None)
        assert getattr(copy, "field", None) == getattr(error, "field", None)


def _old_decision_schema() -> dict[str, Any]:
    """decision.avsc before revision 2 (no blocked_by, no `deferred` outcome)."""
    return json.loads((Path(__file__).parents[2] / "schemas/previous/decision.v1.avsc").read_text())


def _old_decision_body(decision: Decision) -> bytes:
    """The Avro body of `decision` as a writer with the old schema wrote it."""
    import io

    from fastavro import parse_schema, schemaless_writer

    record = to_json_dict(decision) | {"decided_at": decision.decided_at}
    del record["blocked_by"]
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(_old_decision_schema()), record)
    return body.getvalue()


def test_a_decision_written_with_the_old_schema_still_decodes() -> None:
    from fastavro import parse_schema
    from fastavro.schema import fingerprint, to_parsing_canonical_form

    pcf = to_parsing_canonical_form(parse_schema(_old_decision_schema()))
    header = b"\xc3\x01" + bytes.fromhex(fingerprint(pcf, "CRC-64-AVRO"))
    assert header[2:] != schema_fingerprint(Decision)  # really the old version
    data = header + _old_decision_body(DECISION)
    assert codec_for(Decision).decode(data) == replace(DECISION, blocked_by=None)
    assert AvroCodec(Decision).decode_dict(data)["blocked_by"] is None


@pytest.mark.parametrize("outcome", ["fired", "suppressed", "held_out"])
def test_the_decision_schema_is_backward_compatible(outcome: str) -> None:
    """What a Schema Registry's BACKWARD check asks: the new schema reads every old record
    (Avro schema resolution: blocked_by takes its default, the enum only gained a symbol)."""
    import io

    from fastavro import parse_schema, schemaless_reader

    new = json.loads((Path(__file__).parents[2] / "schemas/decision.avsc").read_text())
    body = io.BytesIO(_old_decision_body(replace(DECISION, outcome=outcome)))
    read = schemaless_reader(body, parse_schema(_old_decision_schema()), parse_schema(new))
    assert read["blocked_by"] is None and read["outcome"] == outcome


# --- an action with no channel a person can reach the customer on (channel_hint null)

NO_CHANNEL_ACTION = replace(ACTION, channel_hint=None)


def test_an_action_without_a_channel_hint_round_trips_on_every_path() -> None:
    import io

    from fastavro import parse_schema, schemaless_writer

    codec = AvroCodec(ActionEvent)
    body = io.BytesIO()
    schemaless_writer(
        body, parse_schema(codec.read_schema_json), codec.to_avro_dict(NO_CHANNEL_ACTION)
    )
    general = b"\xc3\x01" + schema_fingerprint(ActionEvent) + body.getvalue()
    for data in (codec.encode(NO_CHANNEL_ACTION), codec.encode(NO_CHANNEL_ACTION, validate=False)):
        assert data == general  # the generated writers write the null branch as fastavro does
        assert codec.decode(data) == NO_CHANNEL_ACTION
        assert codec.fast_decode(data) == NO_CHANNEL_ACTION
        assert codec.decode(data, validate=False) == NO_CHANNEL_ACTION
        assert codec.decode_dict(data)["channel_hint"] is None
    registry = AvroCodec(ActionEvent, registry_url="mock://no-channel", topic="actions.care")
    assert registry.decode(registry.encode(NO_CHANNEL_ACTION)) == NO_CHANNEL_ACTION
    validate(NO_CHANNEL_ACTION)


def test_an_action_without_a_channel_hint_has_a_null_in_its_json_form() -> None:
    line = to_json_line(NO_CHANNEL_ACTION)
    assert json.loads(line)["channel_hint"] is None
    assert to_json_bytes(NO_CHANNEL_ACTION).decode() == line  # the orjson path writes it too
    assert action_from_json(json.loads(line)) == NO_CHANNEL_ACTION


def test_a_channel_hint_is_a_string_or_null() -> None:
    with pytest.raises(SchemaValidationError, match="expected a string or null") as info:
        validate(replace(ACTION, channel_hint=3))
    assert info.value.field == "channel_hint"
    with pytest.raises(SchemaValidationError) as info:
        action_from_json({**json.loads(to_json_line(ACTION)), "channel_hint": ["call"]})
    assert info.value.field == "channel_hint"


def _old_action_schema() -> dict[str, Any]:
    """action_event.avsc before revision 3 (channel_hint a string, never null)."""
    path = Path(__file__).parents[2] / "schemas/previous/action_event.v1.avsc"
    return json.loads(path.read_text())


def _old_action_body(action: ActionEvent) -> bytes:
    """The Avro body of `action` as a writer with the old schema wrote it."""
    import io

    from fastavro import parse_schema, schemaless_writer

    record = to_json_dict(action) | {"triggered_at": action.triggered_at, "due_by": action.due_by}
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(_old_action_schema()), record)
    return body.getvalue()


def test_an_action_written_with_the_old_schema_still_decodes() -> None:
    from fastavro import parse_schema
    from fastavro.schema import fingerprint, to_parsing_canonical_form

    pcf = to_parsing_canonical_form(parse_schema(_old_action_schema()))
    header = b"\xc3\x01" + bytes.fromhex(fingerprint(pcf, "CRC-64-AVRO"))
    assert header[2:] != schema_fingerprint(ActionEvent)  # really the old version
    data = header + _old_action_body(ACTION)
    assert codec_for(ActionEvent).decode(data) == ACTION
    assert AvroCodec(ActionEvent).decode_dict(data)["channel_hint"] == "call"


def test_the_action_schema_is_backward_compatible() -> None:
    """What a Schema Registry's BACKWARD check asks: the new schema reads every old record
    (Avro schema resolution: the old string is the union's string branch)."""
    import io

    from fastavro import parse_schema, schemaless_reader

    new = json.loads((Path(__file__).parents[2] / "schemas/action_event.avsc").read_text())
    old = _old_action_schema()
    body = io.BytesIO(_old_action_body(ACTION))
    read = schemaless_reader(body, parse_schema(old), parse_schema(new))
    assert read["channel_hint"] == "call"
    # only channel_hint changed: every other field is as it was, in the same position
    assert [f["name"] for f in new["fields"]] == [f["name"] for f in old["fields"]]
    changed = [f["name"] for f, g in zip(new["fields"], old["fields"], strict=True) if f != g]
    assert changed == ["channel_hint"]


@pytest.mark.parametrize(
    "event",
    [
        replace(EVENT, type="action_done", attributes={"resolution": "customer_declined"}),
        replace(EVENT, type="action_done", attributes={}),
        replace(EVENT, type="action_acknowledged", attributes={"owner": "o" * 256}),
        replace(EVENT, type="inquiry", attributes={"resolution": "anything"}),
    ],
)
def test_status_events_within_the_contract_pass(event: InteractionEvent) -> None:
    assert event_problem(event) is None
    assert plainly_valid_event(event)
    validate(event)
    assert codec_for(InteractionEvent).decode(codec_for(InteractionEvent).encode(event)) == event


def test_an_action_status_names_a_known_status() -> None:
    with pytest.raises(SchemaValidationError) as info:
        validate(replace(STATUS, status="closed"))
    assert info.value.field == "status"
    with pytest.raises(SchemaValidationError):
        action_status_from_json(to_json_dict(STATUS) | {"status": "closed"})
