"""`moments demo`: the whole path on the embedded stack, checked against the offline oracle.

Starts the broker and PostgreSQL (unless configured), the worker and the
PostgreSQL sink as child processes, publishes the seed stories (one customer
per rule, made by the channel adapters), and waits until every action that
`replay` predicts for those events is in PostgreSQL. Everything started is
stopped on the way out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.settings import Settings
from common.topics import ensure_topics
from moments.runtime import Supervisor
from moments.stack import local_stack
from processors.config import engine_config
from processors.engine import load_rule_pack
from processors.replay import replay_events
from producers.publisher import Publisher
from producers.simulator import seed_stories
from sinks.postgres import apply_migrations, fetch_actions

DAY_MS = 86_400_000


class DemoTimeout(RuntimeError):
    """The expected actions did not all reach PostgreSQL in time."""


@dataclass
class DemoResult:
    """What the demo saw: the actions read back from PostgreSQL and how many were predicted."""

    rows: list[dict[str, Any]]
    events: int
    expected: int
    seconds: float


def run_demo(
    base: Settings, *, timeout_s: float, on_status: Callable[[str], None] = lambda _: None
) -> DemoResult:
    """Run the demo end to end; raise `DemoTimeout` if the actions do not all arrive."""
    started = time.monotonic()
    on_status("starting the embedded broker and PostgreSQL")
    with (
        local_stack(base) as settings,
        Supervisor(settings, base.stack.data_dir / "logs") as supervisor,
    ):
        database = settings.database.database_url or ""
        ensure_topics(settings)
        apply_migrations(database)
        on_status("starting the worker and the PostgreSQL sink")
        supervisor.spawn("worker", "worker")
        supervisor.spawn("sink-postgres", "sink", "postgres")

        events = seed_stories(start_ms=int(time.time() * 1000) - 14 * DAY_MS)
        expected, _ = replay_events(
            events,
            pack=load_rule_pack(settings.engine.rules_path),
            partitions=settings.kafka.interactions_partitions,
            config=engine_config(settings),
        )
        on_status(f"publishing {len(events)} events made by the channel adapters")
        with Publisher(settings) as publisher:
            for event in events:
                publisher.publish(event)

        wanted = {action.action_id for action in expected}
        on_status(f"waiting for the {len(wanted)} actions replay predicts to reach PostgreSQL")
        deadline = time.monotonic() + timeout_s
        rows = fetch_actions(database)
        while missing := wanted - {row["action_id"] for row in rows}:
            supervisor.check_alive()
            if time.monotonic() > deadline:
                raise DemoTimeout(
                    f"{len(missing)} of {len(wanted)} expected actions did not arrive within "
                    f"{timeout_s:.0f} s; logs in {supervisor.log_dir}"
                )
            time.sleep(0.5)
            rows = fetch_actions(database)
        on_status("stopping")
    return DemoResult(rows, len(events), len(wanted), time.monotonic() - started)
