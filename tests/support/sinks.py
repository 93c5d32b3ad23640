"""Stand-ins and sample records for the sinks: consumed records, dead letters, rows, timelines."""

from __future__ import annotations

from datetime import date
from typing import Any

from schemas.records import ActionEvent, Decision, InteractionEvent
from sinks.api import DatabaseUnavailable
from sinks.timeline import TIMELINE_COLUMNS

#: One record of each kind, every optional field filled where the sinks map it.
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


class FakeMessage:
    """A consumed record of partition 0, as confluent-kafka hands it out."""

    def __init__(
        self,
        topic: str,
        offset: int,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        key: bytes = b"cust-1",
        timestamp_ms: int | None = None,
    ) -> None:
        self._topic, self._offset, self._value, self._headers = topic, offset, value, headers
        self._key, self._timestamp_ms = key, timestamp_ms

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes:
        return self._key

    def timestamp(self) -> tuple[int, int]:
        """(1 = create time, ms), or (0, -1): no timestamp."""
        return (0, -1) if self._timestamp_ms is None else (1, self._timestamp_ms)

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers


class FakeLetters:
    """Dead letters as they are sent; acknowledged when the test says so (`ack`)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(
        self,
        dlq: str,
        key: Any,
        value: Any,
        headers: Any,
        error: Any,
        source: Any,
        on_acked: Any,
        **extra: str,
    ) -> None:
        self.sent.append(
            {
                "dlq": dlq,
                "value": value,
                "error": error,
                "source": source,
                "ack": on_acked,
                "extra": extra,
            }
        )

    def poll(self) -> None:
        return None


def entry(kind: str, at: str, summary: str, **extra: Any) -> dict[str, Any]:
    """A timeline row of customer c-7 with every column, `extra` as given."""
    row: dict[str, Any] = dict.fromkeys(TIMELINE_COLUMNS)
    row.update(customer_id="c-7", kind=kind, at=at, id=f"{kind}-{at}", summary=summary, **extra)
    return row


ROWS = [
    entry("event", "2026-01-02T03:04:05.000+00:00", "cancellation_requested", channel="call"),
    entry("decision", "2026-01-02T03:04:05.000+00:00", "life_event_check_in fired"),
    entry(
        "action",
        "2026-01-02T03:04:05.000+00:00",
        "life_event_check_in → care (priority 80): asked to cancel",
        channel="call",
        relationship_balance=-2,
    ),
]


class FakeTimelines:
    """A `CustomerSource` over a list of timeline rows (and decisions), no database."""

    def __init__(
        self,
        rows: list[dict[str, Any]],
        *,
        down: bool = False,
        decisions: list[dict[str, Any]] | None = None,
        actions: list[dict[str, Any]] | None = None,
    ) -> None:
        self.rows = rows
        self.decision_rows = decisions or []
        self.action_rows = actions or []
        self.down = down
        self.calls: list[tuple[str, int]] = []
        self.befores: list[Any] = []
        self.opened = self.closed = False

    def timeline(self, customer_id: str, limit: int, before: Any = None) -> list[dict[str, Any]]:
        self.calls.append((customer_id, limit))
        self.befores.append(before)
        if self.down:
            raise DatabaseUnavailable("connection refused")
        return [r for r in self.rows if r["customer_id"] == customer_id][-limit:]

    def decisions(self, customer_id: str, limit: int, before: Any = None) -> list[dict[str, Any]]:
        self.calls.append((customer_id, limit))
        if self.down:
            raise DatabaseUnavailable("connection refused")
        return [d for d in self.decision_rows if d["customer_id"] == customer_id][-limit:]

    def actions(
        self, customer_id: str, limit: int, before: Any = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        self.calls.append((customer_id, limit))
        if self.down:
            raise DatabaseUnavailable("connection refused")
        found = [r for r in self.action_rows if r["customer_id"] == customer_id]
        return [r for r in found if status is None or r["status"] == status][-limit:]

    def relationship(self, customer_id: str, limit: int) -> dict[str, Any] | None:
        return None

    def healthy(self) -> bool:
        return not self.down

    def open(self) -> None:
        self.opened = True

    def close(self) -> None:
        self.closed = True
