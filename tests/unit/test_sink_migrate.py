"""The migrations of the PostgreSQL schema without a database: files, order, columns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sinks.migrate import MigrationError, load_migrations
from sinks.rows import TABLES


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
