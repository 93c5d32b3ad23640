"""The shape of the trigger engine, readable without its machinery.

The engine is a pure function of (state, event or tick) -> (state, actions,
decisions). State lives behind `StateStore`, one store per input partition:
a dict in replay and tests, a Faust table in the worker. Keys are strings;
values are plain JSON-able data (dict, list, str, int, float, bool, None) so
any backend (Faust changelog, RocksDB) can hold them; every key and its version:
`state.py`. This module knows no Kafka and no Faust.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from processors.engine.state import (
    CLOCK_KEY,
    CUSTOMER_PREFIX,
    TIMER_CHUNK_PREFIX,
    TIMER_INDEX_KEY,
    customer_key,
)
from schemas.records import ActionEvent, ActionStatus, Decision

#: The state keys hosts use, here beside the store they live in (the layout: state.py).
__all__ = [
    "CLOCK_KEY",
    "CUSTOMER_PREFIX",
    "TIMER_CHUNK_PREFIX",
    "TIMER_INDEX_KEY",
    "DictStore",
    "EngineConfig",
    "EngineOutput",
    "StateStore",
    "customer_key",
]


class StateStore(Protocol):
    """Per-key state of one partition (quix-streams style: get, set, delete)."""

    def get(self, key: str) -> Any | None: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


class DictStore:
    """A `StateStore` in a plain dict: replay, tests, benchmarks."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any | None:
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Knobs of the engine's semantics (times in milliseconds)."""

    allowed_lateness_ms: int = 300_000
    contact_cap: int = 1
    contact_cap_window_ms: int = 86_400_000
    holdout_percent: float = 0.0
    dedupe_horizon_ms: int = 7 * 86_400_000
    #: History warm-up: candidates triggered before this time build state but emit nothing.
    emit_from_ms: int | None = None
    #: An event older than the partition's watermark minus this is too late: not applied,
    #: reported (`EngineOutput.too_late`) for the host to keep on `interactions.late`. Never
    #: more than the dedupe horizon, so every applied event is deduped exactly.
    max_lateness_ms: int = 7 * 86_400_000
    #: The business's time zone (IANA name): dates in reasons are written in it, and the
    #: working hours of destinations (docs/design.md 12) are counted in it.
    timezone: str = "UTC"
    #: How long an action stays open after its due_by (after it fired, without one) before
    #: it lapses (docs/design.md 12).
    action_horizon_ms: int = 30 * 86_400_000


@dataclass(slots=True)
class EngineOutput:
    """What one step of the engine produced, in a deterministic order."""

    actions: list[ActionEvent] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    #: The event was too late (older than the watermark minus `max_lateness_ms`) and was not
    #: applied: the host keeps it on `interactions.late` (stage `late`).
    too_late: bool = False
    #: Changes of the followed actions' statuses (topic `action-status`, docs/design.md 12).
    statuses: list[ActionStatus] = field(default_factory=list)
    #: Status events that changed nothing, by reason (`unknown`, `done`, `lapsed`,
    #: `unchanged`): the host counts them (moments_action_status_ignored_total).
    ignored: dict[str, int] = field(default_factory=dict)

    def extend(self, other: EngineOutput) -> None:
        self.actions.extend(other.actions)
        self.decisions.extend(other.decisions)
        self.statuses.extend(other.statuses)
        for reason, count in other.ignored.items():
            self.ignored[reason] = self.ignored.get(reason, 0) + count
