"""A customer's story across channels as records in PostgreSQL, for the timeline and its views."""

from __future__ import annotations

from schemas.records import ActionEvent, Decision, InteractionEvent
from sinks.postgres import PostgresSink

T0 = 1_767_323_045_000  # 2026-01-02T03:04:05Z
HOUR = 3_600_000


def event(event_id: str, customer: str, channel: str, type_: str, at: int) -> InteractionEvent:
    """An interaction event with only the fields the timeline needs."""
    return InteractionEvent(
        event_id=event_id, customer_id=customer, channel=channel, type=type_, occurred_at=at
    )


def story(customer: str) -> list[InteractionEvent | ActionEvent | Decision]:
    """A cross-channel story: a web inquiry, a complaint by email, a cancellation by phone."""
    return [
        # Added out of time order on purpose: the timeline orders, not the sink.
        ActionEvent(
            action_id=f"{customer}-act",
            customer_id=customer,
            rule="life_event_check_in",
            action="life_event_check_in",
            rule_version=1,
            destination="care",
            priority=80,
            reason="Asked to cancel by phone after a complaint.",
            evidence=[f"{customer}-e3"],
            channel_hint="call",
            triggered_at=T0 + 2 * HOUR,
            details={"relationship_balance": "-2"},
        ),
        event(f"{customer}-e3", customer, "call", "cancellation_requested", T0 + 2 * HOUR),
        event(f"{customer}-e1", customer, "web", "inquiry", T0),
        InteractionEvent(
            event_id=f"{customer}-e2",
            customer_id=customer,
            channel="email",
            type="complaint_filed",
            occurred_at=T0 + HOUR,
            reference="CASE-9",
            text="Billed twice",
        ),
        Decision(
            decision_id=f"{customer}-dec",
            customer_id=customer,
            rule="life_event_check_in",
            rule_version=1,
            outcome="fired",
            reason="fired",
            action_id=f"{customer}-act",
            evidence=[f"{customer}-e3"],
            decided_at=T0 + 2 * HOUR,
        ),
        Decision(
            decision_id=f"{customer}-dec-2",
            customer_id=customer,
            rule="recognize_tenure",
            rule_version=1,
            outcome="suppressed",
            reason="contact_cap",
            action_id=None,
            evidence=[f"{customer}-e1"],
            decided_at=T0,
        ),
    ]


def write(conninfo: str, records: list[InteractionEvent | ActionEvent | Decision]) -> None:
    """Writes `records` to the database at `conninfo` through the PostgreSQL sink."""
    with PostgresSink(conninfo) as sink:
        for record in records:
            sink.add(record)
        sink.flush()
