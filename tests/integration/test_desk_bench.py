"""The bench's desk section on a small table: it fills, measures, and leaves nothing behind."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from common.settings import Settings
from moments.bench import desk as desk_section
from sinks.desk import queries
from sinks.migrate import apply_migrations


class _Figures:
    """The part of `Bench` the desk section uses."""

    def __init__(self, database: str) -> None:
        self.settings = Settings(database_url=database)
        self.details: dict[str, Any] = {}
        self.figures: dict[str, Any] = {}


def test_the_desk_section_measures_queue_pages_and_removes_its_rows(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(desk_section, "OPEN_ACTIONS", 3_000)
    monkeypatch.setattr(desk_section, "REQUESTS", 9)
    bench = _Figures(database)
    desk_section.desk(bench)  # type: ignore[arg-type]
    assert set(bench.figures) == {"desk_queue_p50_ms", "desk_queue_p95_ms"}
    assert bench.figures["desk_queue_p95_ms"] >= bench.figures["desk_queue_p50_ms"] > 0
    assert bench.details["desk"]["open_actions"] == 3_000
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM actions").fetchone() == (0,)


def test_the_queue_query_is_an_index_scan_of_migration_009(database: str) -> None:
    apply_migrations(database)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(desk_section._FILL, {"prefix": "plan-", "count": 20_000})
        conn.execute("ANALYZE actions")
        plans = {}
        for name, owner in (("all", None), ("mine", "agent-3")):
            explained = conn.execute(
                "EXPLAIN " + queries._QUEUE,
                {"destination": "care", "owner": owner, "limit": 51, "offset": 0},
            )
            plans[name] = "\n".join(row[0] for row in explained)
    assert "actions_desk_queue" in plans["all"] and "Sort" not in plans["all"], plans["all"]
    assert "actions_desk_mine" in plans["mine"], plans["mine"]
