"""Records as PostgreSQL rows: SQL generation, COPY wire form, record → row (`sinks.rows`)."""

from __future__ import annotations

import struct
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest
from psycopg import sql

from sinks.rows import (
    ACTIONS,
    DECISIONS,
    INTERACTION_EVENTS,
    action_row,
    decision_row,
    event_row,
    record_row,
    table_of,
    text_array_binary,
    timestamptz_wire,
    without_nul,
)
from tests.support.sinks import ACTION, DECISION, EVENT


def _sql(composed: sql.Composable) -> str:
    return composed.as_string(None)


def test_rows_are_copied_into_the_table_and_only_duplicates_go_through_staging() -> None:
    copy = _sql(ACTIONS.copy_sql())
    assert copy.startswith('COPY "actions" ("action_id", "customer_id", ')
    assert copy.endswith("FROM STDIN (FORMAT BINARY)")
    assert _sql(DECISIONS.copy_sql(staged=True)).startswith('COPY "_stage_decisions" (')
    insert = _sql(ACTIONS.insert_sql())
    assert insert.startswith('INSERT INTO "actions" ("action_id", "customer_id"')
    assert 'SELECT "action_id", "customer_id"' in insert
    assert insert.endswith('FROM "_stage_actions" ON CONFLICT ("action_id") DO NOTHING')
    assert 'ON CONFLICT ("customer_id", "event_id") DO NOTHING' in _sql(
        INTERACTION_EVENTS.insert_sql()
    )
    assert "ON COMMIT DELETE ROWS" in _sql(ACTIONS.stage_ddl())


def test_the_staging_table_has_the_tables_types_and_values_travel_in_wire_form() -> None:
    ddl = _sql(ACTIONS.stage_ddl())
    assert '"evidence" text[]' in ddl and '"triggered_at" timestamptz' in ddl
    assert '"details" jsonb' in ddl
    types = dict(zip(ACTIONS.column_names, ACTIONS.copy_types, strict=True))
    assert (types["evidence"], types["triggered_at"], types["details"]) == (
        "bytea",
        "int8",
        "bytea",
    )
    assert types["action_id"] == "text" and types["priority"] == "int4"


def test_a_timestamp_travels_as_microseconds_since_2000() -> None:
    assert timestamptz_wire(None) is None
    assert timestamptz_wire(946_684_800_000) == 0
    ms = 1_767_323_045_123
    since_2000 = datetime.fromtimestamp(ms / 1000, UTC) - datetime(2000, 1, 1, tzinfo=UTC)
    assert timestamptz_wire(ms) == since_2000 // _MICROSECOND


_MICROSECOND = datetime(2000, 1, 1, 0, 0, 0, 1) - datetime(2000, 1, 1)


def _text_array_from_wire(data: bytes) -> list[str]:
    ndim, has_nulls, element_oid = struct.unpack_from(">iii", data)
    assert (has_nulls, element_oid) == (0, 25)
    if ndim == 0:
        assert len(data) == 12
        return []
    length, lower_bound = struct.unpack_from(">ii", data, 12)
    assert (ndim, lower_bound) == (1, 1)
    values, at = [], 20
    for _ in range(length):
        (size,) = struct.unpack_from(">i", data, at)
        values.append(data[at + 4 : at + 4 + size].decode())
        at += 4 + size
    assert at == len(data)
    return values


@pytest.mark.parametrize(
    "values", [[], ["e-1"], ["e-1", "e-2"], ['a"b', "c\\d", "NULL", "{x, y}", "", "é"]]
)
def test_text_arrays_travel_in_postgres_binary_array_form(values: list[str]) -> None:
    assert _text_array_from_wire(text_array_binary(values)) == values


def test_an_action_maps_to_its_row_in_column_order() -> None:
    row = action_row(ACTION, "actions.care", 1, 42)
    assert len(row) == len(ACTIONS.columns)
    by_name = dict(zip(ACTIONS.column_names, row, strict=True))
    assert by_name["action_id"] == "a-1"
    assert _text_array_from_wire(by_name["evidence"]) == ["e-1", "e-2"]
    assert by_name["triggered_at"] == timestamptz_wire(1_767_323_045_123)
    assert by_name["due_by"] is None
    assert by_name["details"] == b'\x01{"relationship_balance":"-2"}'
    assert (by_name["kafka_topic"], by_name["kafka_partition"], by_name["kafka_offset"]) == (
        "actions.care",
        1,
        42,
    )


def test_an_action_without_a_channel_hint_maps_to_null() -> None:
    row = dict(
        zip(
            ACTIONS.column_names,
            action_row(replace(ACTION, channel_hint=None), None, None, None),
            strict=True,
        )
    )
    assert row["channel_hint"] is None
    assert row["action_id"] == "a-1"


def test_decisions_and_events_map_to_their_rows() -> None:
    decision = dict(
        zip(DECISIONS.column_names, decision_row(DECISION, None, None, None), strict=True)
    )
    assert decision["action_id"] is None and decision["outcome"] == "suppressed"
    event = dict(zip(INTERACTION_EVENTS.column_names, event_row(EVENT, "t", 0, 7), strict=True))
    assert event["due_date"] == date(2026, 1, 31)
    assert event["customer_since"] is None
    assert event["amount"] == 12.5
    assert event["attributes"] == b'\x01{"queue":"retention"}'


def test_nul_characters_postgres_cannot_store_are_replaced_not_dropped() -> None:
    action = replace(ACTION, reason="a\x00b", evidence=["e\x00", "f"], details={"k\x00": "v\x00"})
    clean = without_nul(action)
    assert clean.reason == "a\ufffdb"
    assert clean.evidence == ["e\ufffd", "f"]
    assert clean.details == {"k\ufffd": "v\ufffd"}
    assert (clean.action_id, clean.triggered_at) == (ACTION.action_id, ACTION.triggered_at)
    assert without_nul(ACTION) is ACTION  # nothing to replace: the record itself


def test_each_record_goes_to_its_table_under_its_key() -> None:
    assert table_of(ACTION) == (ACTIONS, ("c-1", "a-1"))
    assert table_of(DECISION) == (DECISIONS, ("c-1", "d-1"))
    assert table_of(EVENT) == (INTERACTION_EVENTS, ("c-1", "e-1"))
    assert record_row(ACTION) == (ACTIONS, ("c-1", "a-1"), action_row(ACTION, None, None, None))
    with pytest.raises(TypeError, match="str"):
        table_of("not a record")  # type: ignore[arg-type]


def test_a_status_change_is_a_history_row_keyed_by_action_status_time_and_event() -> None:
    from schemas.records import ActionStatus
    from sinks.rows import ACTION_STATUS_HISTORY

    done = ActionStatus(
        "a-1", "c-1", "case_follow_up", "care", "done", "bo", "completed", at=1000, event_id="e"
    )
    overdue = replace(done, status="overdue", resolution=None, event_id=None)
    spec, key, row = record_row(done, "action-status", 0, 7)
    assert spec is ACTION_STATUS_HISTORY
    assert key == ("a-1", "done", "1000", "e")
    assert row[:7] == ("a-1", "c-1", "case_follow_up", "care", "done", "bo", "completed")
    assert row[7] == timestamptz_wire(1000)
    assert row[8:] == ("e", "e", "action-status", 0, 7)
    assert table_of(overdue)[1] == ("a-1", "overdue", "1000", "")
    assert record_row(overdue)[2][8:10] == (None, "")  # no event: the key's part is ''
    assert list(ACTION_STATUS_HISTORY.key) == ["action_id", "status", "at", "event_key"]
