"""The wire contract of `schemas.wire`: control records, dead-letter headers, topic names."""

from __future__ import annotations

import pytest

from schemas.wire import (
    CONTROL_HEADER,
    FORGET,
    TICK,
    RecordKind,
    Topics,
    classify,
    control_value,
    dead_letter_headers,
    error_headers,
)


@pytest.mark.parametrize(
    ("headers", "value", "kind"),
    [
        ([(CONTROL_HEADER, TICK)], b"", RecordKind.TICK),
        ({CONTROL_HEADER: TICK}, b"", RecordKind.TICK),  # Faust hands headers as a mapping
        ([("other", b"x"), (CONTROL_HEADER, FORGET)], None, RecordKind.FORGET),
        ([(CONTROL_HEADER, b"later")], b"", RecordKind.CONTROL),
        ([(CONTROL_HEADER, TICK)], b"x" * 100, RecordKind.TICK),  # the header decides
        (None, None, RecordKind.TOMBSTONE),
        ([("other", b"x")], None, RecordKind.TOMBSTONE),
        (None, b"x" * 11, RecordKind.OVERSIZED),
        (None, b"x" * 10, RecordKind.EVENT),
        ([], b"", RecordKind.EVENT),  # an empty value is an event that will not decode
    ],
)
def test_classify_tells_control_records_and_poison_from_events(
    headers: object, value: bytes | None, kind: RecordKind
) -> None:
    assert classify(headers, value, max_event_bytes=10) is kind


def test_control_value_of_headers_without_one_is_none() -> None:
    assert control_value(None) is None
    assert control_value([("moments.controlx", TICK)]) is None
    assert control_value([(CONTROL_HEADER, "tick")]) == TICK


def test_error_headers_name_the_failure_and_the_source_cut_to_1000_characters() -> None:
    headers = dict(
        error_headers("decode", "DecodeError", "m" * 2000, ("t", 3, 42), http_status="400")
    )
    assert headers == {
        "moments.error.stage": b"decode",
        "moments.error.class": b"DecodeError",
        "moments.error.message": b"m" * 1000,
        "moments.error.topic": b"t",
        "moments.error.partition": b"3",
        "moments.error.offset": b"42",
        "moments.error.http_status": b"400",
    }


def test_a_redriven_dead_letter_carries_its_own_headers_and_only_the_latest_error() -> None:
    original = [("trace", b"abc"), ("moments.error.stage", b"old"), ("moments.error.x", b"1")]
    headers = dead_letter_headers(original, "webhook", "HTTPError", "refused", ("a", 0, 7))
    names = [name for name, _ in headers]
    assert headers[0] == ("trace", b"abc")
    assert names.count("moments.error.stage") == 1
    assert "moments.error.x" not in names
    assert dict(headers)["moments.error.stage"] == b"webhook"
    assert dead_letter_headers({"k": None}, "s", "c", "m", (None, None, None))[0] == ("k", b"")


def test_topic_names_carry_the_prefix() -> None:
    topics = Topics("p-")
    assert topics.action("care") == "p-actions.care"
    assert topics.all()[:6] == [
        "p-interactions",
        "p-interactions.dlq",
        "p-interactions.late",
        "p-decisions",
        "p-action-status",
        "p-actions.dlq",
    ]
