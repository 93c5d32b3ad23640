"""The migrations of the PostgreSQL schema without a database: files, order, columns."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from schemas.records import ActionEvent, Decision, InteractionEvent
from sinks.migrate import MigrationError, load_migrations
from sinks.rows import TABLES, record_row
from tests.support.sinks import ACTION, DECISION


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
    first = next(  # 001 for the first tables, later ones for the others (008: statuses)
        i for i, m in enumerate(migrations) if f"CREATE TABLE {spec.name} (" in m.sql
    )
    created = _created_columns(migrations[first].sql, spec.name)
    for later in migrations[first + 1 :]:  # columns added since (e.g. 004: decisions.blocked_by)
        created |= set(re.findall(rf"ALTER TABLE {spec.name} ADD COLUMN (\w+)", later.sql))
    assert set(spec.column_names) == created - {"inserted_at"}
    assert set(spec.key) <= created


def _nullable_columns(table: str) -> set[str]:
    """The columns of `table` that may hold NULL once every migration has run."""
    migrations = load_migrations()
    body = re.search(rf"CREATE TABLE {table} \((.*?)\n\);", migrations[0].sql, re.S)
    assert body is not None, f"no CREATE TABLE {table}"
    nullable: set[str] = set()
    for line in body.group(1).splitlines():
        words = line.split()
        if words and words[0] != "PRIMARY" and "NOT NULL" not in line and "PRIMARY KEY" not in line:
            nullable.add(words[0])
    for later in migrations[1:]:
        for column, definition in re.findall(
            rf"ALTER TABLE {table} ADD COLUMN (\w+)([^;]*);", later.sql
        ):
            if "NOT NULL" not in definition:
                nullable.add(column)
        alters = re.findall(
            rf"ALTER TABLE {table} ALTER COLUMN (\w+) (DROP|SET) NOT NULL", later.sql
        )
        for column, change in alters:
            (nullable.add if change == "DROP" else nullable.discard)(column)
    return nullable


def test_every_column_a_record_may_leave_empty_takes_null() -> None:
    """An action with no channel a person can reach the customer on (migration 006), a
    decision without an action, an event with only its required fields: each lands."""
    records: list[ActionEvent | Decision | InteractionEvent] = [
        replace(ACTION, channel_hint=None, due_by=None),
        replace(DECISION, action_id=None, blocked_by=None),
        InteractionEvent("e-1", "c-1", "call", "inquiry", 0),
    ]
    for record in records:
        spec, _, values = record_row(record)
        row = dict(zip(spec.column_names, values, strict=True))
        empty = {name for name, value in row.items() if value is None}
        assert "kafka_topic" in empty  # the row builder really left columns NULL
        assert empty <= _nullable_columns(spec.name), spec.name
    assert "channel_hint" in _nullable_columns("actions")
