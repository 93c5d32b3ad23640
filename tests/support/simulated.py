"""One mid-sized simulated population shared by the simulator's tests, and how its records
arrived (first deliveries, copies, how far behind the stream each one came)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

from producers.simulator import simulate
from schemas.records import InteractionEvent

START = datetime(2026, 1, 5, tzinfo=UTC)
START_MS = int(START.timestamp() * 1000)
CUSTOMERS, DAYS, SEED = 1500, 120, 11


@cache
def population() -> tuple[InteractionEvent, ...]:
    """Every record of 1,500 customers over 120 days (seed 11), in arrival order."""
    return tuple(simulate(CUSTOMERS, DAYS, seed=SEED, start=START))


@dataclass(frozen=True)
class Arrival:
    """A record as it arrived: its position, whether it repeats an earlier record (same
    event_id), and how far (ms) its occurred_at lies behind the latest one before it."""

    position: int
    event: InteractionEvent
    copy: bool
    behind_ms: int


@cache
def arrivals() -> tuple[Arrival, ...]:
    """`population()` record by record, as `Arrival`s."""
    seen: set[str] = set()
    latest = -(1 << 62)
    out: list[Arrival] = []
    for position, event in enumerate(population()):
        copy = event.event_id in seen
        seen.add(event.event_id)
        out.append(Arrival(position, event, copy, max(0, latest - event.occurred_at)))
        latest = max(latest, event.occurred_at)
    return tuple(out)


@cache
def events() -> tuple[InteractionEvent, ...]:
    """`population()` without the repeated deliveries: every event once, in arrival order."""
    return tuple(a.event for a in arrivals() if not a.copy)
