"""The PostgreSQL schema: versioned SQL files applied once each, in order.

`apply_migrations(conninfo)` applies the files in `sinks/migrations/`
(`NNN_snake_name.sql`) that table `schema_version` does not list yet, each in
its own transaction with its `schema_version` row, under an advisory lock so
that sinks starting together do not race. It never edits an applied file's
effect: a file changed after it was applied is reported, not applied again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import psycopg

log = logging.getLogger(__name__)

# "moments" in ASCII: the advisory lock every migrating process takes.
MIGRATION_LOCK_KEY = 0x6D6F6D656E7473
_MIGRATION_FILE = re.compile(r"^(\d+)_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """A migration file is misnamed or duplicated, or its SQL failed (names the file)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One versioned SQL file: applied once, in one transaction, in version order."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Traversable | None = None) -> list[Migration]:
    """The migrations in `directory` (default: the package's `sinks/migrations/`), by version.

    File names are `NNN_name.sql`; any other `.sql` file or a version used twice
    is a `MigrationError` naming the file.
    """
    folder = directory if directory is not None else resources.files("sinks") / "migrations"
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _MIGRATION_FILE.match(entry.name)
        if match is None:
            raise MigrationError(f"{entry.name}: migration files are named NNN_snake_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"{entry.name}: version {version} is also used by {found[version].name}"
            )
        found[version] = Migration(version, entry.name, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


_SCHEMA_VERSION_DDL = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def apply_migrations(conninfo: str, migrations: Sequence[Migration] | None = None) -> list[int]:
    """Apply every migration not yet recorded in `schema_version`; return the versions applied.

    Each migration runs in its own transaction together with its
    `schema_version` row. A session-level advisory lock serialises concurrent
    callers: the second waits, then finds nothing left to do.
    """
    pending = list(migrations) if migrations is not None else load_migrations()
    applied_now: list[int] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            conn.execute(_SCHEMA_VERSION_DDL)
            rows = conn.execute("SELECT version, checksum FROM schema_version").fetchall()
            done: dict[int, str] = {int(v): str(c) for v, c in rows}
            for migration in pending:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        log.warning(
                            "migration %s changed after it was applied; not applied again",
                            migration.name,
                        )
                    continue
                try:
                    with conn.transaction():
                        conn.execute(migration.sql.encode())
                        conn.execute(
                            "INSERT INTO schema_version (version, name, checksum)"
                            " VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum),
                        )
                except psycopg.errors.OperationalError:
                    raise
                except psycopg.Error as exc:
                    raise MigrationError(f"{migration.name}: {exc}".strip()) from exc
                log.info("applied migration %s", migration.name)
                applied_now.append(migration.version)
        finally:
            if not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied_now
