"""The PostgreSQL sink without a database: migrations, SQL generation, record → row mapping."""

from __future__ import annotations

import json
import re
import struct
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from psycopg import sql

from moments.metrics import CONSUMER_LAG
from moments.settings import Settings
from schemas.records import ActionEvent, Decision, InteractionEvent
from sinks.postgres import (
    ACTIONS,
    DECISIONS,
    INTERACTION_EVENTS,
    TABLES,
    MigrationError,
    PostgresSink,
    SinkConfigError,
    _SinkLoop,
    action_row,
    decision_row,
    event_row,
    load_migrations,
    record_row,
    run_postgres_sink,
    sink_topics,
    table_of,
    text_array_binary,
    timestamptz_wire,
    without_nul,
)

ACTION = ActionEvent(
    action_id="a-1",
    customer_id="c-1",
    rule="life_event_check_in",
    action="life_event_check_in",
    rule_version=3,
    destination="care",
    priority=80,
    reason="The customer asked to cancel by phone.",
    evidence=["e-1", "e-2"],
    channel_hint="call",
    triggered_at=1_767_323_045_123,
    due_by=None,
    details={"relationship_balance": "-2"},
)
DECISION = Decision(
    decision_id="d-1",
    customer_id="c-1",
    rule="life_event_check_in",
    rule_version=3,
    outcome="suppressed",
    reason="cool_down",
    action_id=None,
    evidence=["e-1"],
    decided_at=1_767_323_045_123,
)
EVENT = InteractionEvent(
    event_id="e-1",
    customer_id="c-1",
    channel="call",
    type="cancellation_requested",
    occurred_at=1_767_323_045_000,
    source="ivr",
    product="gas",
    amount=12.5,
    currency="EUR",
    due_date=date(2026, 1, 31),
    attributes={"queue": "retention"},
)


def _sql(composed: sql.Composable) -> str:
    return composed.as_string(None)


def test_migrations_are_ordered_by_version_and_named_in_schema_version_form() -> None:
    migrations = load_migrations()
    versions = [m.version for m in migrations]
    assert versions == sorted(versions) and versions[:2] == [1, 2]
    assert migrations[0].name == "001_tables.sql"
    assert all(len(m.checksum) == 64 for m in migrations)


def test_a_misnamed_migration_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "001_ok.sql").write_text("SELECT 1;")
    (tmp_path / "second.sql").write_text("SELECT 2;")
    with pytest.raises(MigrationError, match=r"second\.sql"):
        load_migrations(tmp_path)


def test_a_version_used_twice_is_an_error_naming_both_files(tmp_path: Path) -> None:
    (tmp_path / "001_one.sql").write_text("SELECT 1;")
    (tmp_path / "1_other.sql").write_text("SELECT 2;")
    with pytest.raises(MigrationError, match=r"version 1 .*(001_one|1_other)\.sql"):
        load_migrations(tmp_path)


def _created_columns(ddl: str, table: str) -> set[str]:
    body = re.search(rf"CREATE TABLE {table} \((.*?)\n\);", ddl, re.S)
    assert body is not None, f"no CREATE TABLE {table}"
    names = {line.split()[0] for line in body.group(1).splitlines() if line.strip()}
    return names - {"PRIMARY"}


@pytest.mark.parametrize("spec", TABLES, ids=lambda s: s.name)
def test_every_column_the_sink_writes_exists_in_the_migration(spec) -> None:  # type: ignore[no-untyped-def]
    migrations = load_migrations()
    created = _created_columns(migrations[0].sql, spec.name)
    for later in migrations[1:]:  # columns added since (e.g. 004: decisions.blocked_by)
        created |= set(re.findall(rf"ALTER TABLE {spec.name} ADD COLUMN (\w+)", later.sql))
    assert set(spec.column_names) == created - {"inserted_at"}
    assert set(spec.key) <= created


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


def test_a_batch_keeps_one_row_per_key_and_connects_only_to_flush() -> None:
    sink = PostgresSink("postgresql://nobody@127.0.0.1:1/none")
    sink.add(ACTION, topic="t", partition=0, offset=1)
    sink.add(ACTION, topic="t", partition=0, offset=2)  # redelivered within the batch
    sink.add(DECISION)
    sink.add(EVENT)
    assert sink.pending == 3
    sink.clear()
    assert sink.pending == 0
    assert sink.flush() == {}  # nothing to write: no connection attempted


def test_the_sink_reads_every_action_topic_decisions_and_interactions() -> None:
    settings = Settings(topic_prefix="p.")
    assert sink_topics(settings) == [
        "p.actions.care",
        "p.actions.billing",
        "p.actions.crm",
        "p.actions.feedback",
        "p.actions.recognition",
        "p.decisions",
        "p.interactions",
    ]


def test_running_without_a_database_or_with_an_unknown_topic_is_a_clear_error() -> None:
    with pytest.raises(SinkConfigError, match="MOMENTS_DATABASE_URL"):
        run_postgres_sink(Settings(bootstrap="127.0.0.1:1"))
    settings = Settings(bootstrap="127.0.0.1:1", database_url="postgresql://x@127.0.0.1:1/x")
    with pytest.raises(SinkConfigError, match="'orders'"):
        run_postgres_sink(settings, topics=["orders"])


def test_broker_statistics_set_the_consumer_lag_gauge() -> None:
    import threading

    settings = Settings(
        bootstrap="127.0.0.1:1", database_url="postgresql://x@127.0.0.1:1/x", sink_group="g-lag"
    )
    loop = _SinkLoop(settings, "postgresql://x@127.0.0.1:1/x", threading.Event(), None, 1.0)
    stats = {
        "topics": {
            "actions.care": {
                "partitions": {
                    "0": {"consumer_lag": 17},
                    "1": {"consumer_lag": -1},
                    "-1": {"consumer_lag": 5},
                }
            }
        }
    }
    loop._on_stats(json.dumps(stats))
    assert CONSUMER_LAG.labels("g-lag", "actions.care", "0")._value.get() == 17
    families = {
        s.labels["partition"]
        for metric in CONSUMER_LAG.collect()
        for s in metric.samples
        if s.labels["group"] == "g-lag"
    }
    assert families == {"0"}
