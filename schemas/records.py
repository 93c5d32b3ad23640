"""The four records moments moves around, as plain Python values.

These dataclasses mirror the Avro contracts in this folder field for field
(`interaction_event.avsc`, `action_event.avsc`, `decision.avsc`,
`action_status.avsc`). Timestamps
are integers in epoch milliseconds (UTC), exactly Avro's `timestamp-millis`
physical value, so the engine does arithmetic on them without conversions;
dates are `datetime.date`. This module imports nothing of ours and knows no
Kafka.

They are slotted but not frozen: a frozen dataclass pays `object.__setattr__`
for every field, which is most of the cost of decoding an event. Treat them as
values all the same: never mutate a record you did not just build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Final

CHANNELS: Final = ("call", "email", "billing", "web", "other")
#: A decision's outcomes (decision.avsc `outcome`), named once for every reader and writer.
FIRED: Final = "fired"
DEFERRED: Final = "deferred"
SUPPRESSED: Final = "suppressed"
HELD_OUT: Final = "held_out"
OUTCOMES: Final = (FIRED, DEFERRED, SUPPRESSED, HELD_OUT)
DESTINATIONS: Final = ("care", "billing", "crm", "feedback", "recognition")
#: The operational status events of actions (docs/design.md 12): on `interactions`, with
#: `reference` = the action_id; never contacts, never in the ledger.
ACTION_ACKNOWLEDGED: Final = "action_acknowledged"
ACTION_REASSIGNED: Final = "action_reassigned"
ACTION_DONE: Final = "action_done"
STATUS_EVENT_TYPES: Final = (ACTION_ACKNOWLEDGED, ACTION_REASSIGNED, ACTION_DONE)
#: What an `action_done` may give as `attributes.resolution`.
RESOLUTIONS: Final = ("completed", "customer_declined", "unreachable", "not_appropriate")
#: An action's statuses (action_status.avsc `status`), named once for every reader and writer.
STATUS_OPEN: Final = "open"
STATUS_ACKNOWLEDGED: Final = "acknowledged"
STATUS_REASSIGNED: Final = "reassigned"
STATUS_OVERDUE: Final = "overdue"
STATUS_DONE: Final = "done"
STATUS_LAPSED: Final = "lapsed"
ACTION_STATUSES: Final = (
    STATUS_OPEN,
    STATUS_ACKNOWLEDGED,
    STATUS_REASSIGNED,
    STATUS_OVERDUE,
    STATUS_DONE,
    STATUS_LAPSED,
)

#: The event types every channel shares (docs/design.md 3.2), consent and the operational
#: status of actions (`action_*`) last. Unknown types are kept.
EVENT_TYPES: Final = (
    "account_opened",
    "account_closed",
    "cancellation_requested",
    "invoice_issued",
    "payment_received",
    "payment_failed",
    "payment_demand_issued",
    "meter_reading_submitted",
    "dispute_opened",
    "dispute_resolved",
    "complaint_filed",
    "complaint_resolved",
    "feedback_given",
    "address_changed",
    "inquiry",
    "contact_preferences_changed",
    "action_acknowledged",
    "action_reassigned",
    "action_done",
)


@dataclass(slots=True)
class InteractionEvent:
    """One customer interaction on any channel (topic `interactions`, key customer_id)."""

    event_id: str
    customer_id: str
    channel: str
    type: str
    occurred_at: int
    source: str = ""
    product: str | None = None
    reference: str | None = None
    amount: float | None = None
    currency: str | None = None
    due_date: date | None = None
    customer_since: date | None = None
    text: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ActionEvent:
    """What a downstream tool should do, why, and the evidence (topic `actions.<destination>`)."""

    action_id: str
    customer_id: str
    rule: str
    action: str
    rule_version: int
    destination: str
    priority: int
    reason: str
    evidence: list[str]
    #: Where a person can reach the customer, or None when no such channel is known
    #: (docs/design.md 4.1).
    channel_hint: str | None
    triggered_at: int
    due_by: int | None = None
    details: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Decision:
    """The engine's verdict on one candidate action (topic `decisions`)."""

    decision_id: str
    customer_id: str
    rule: str
    rule_version: int
    outcome: str
    reason: str
    action_id: str | None
    evidence: list[str]
    decided_at: int
    #: The action that caused a cool_down, contact_cap, already_raised or already_waiting.
    blocked_by: str | None = None


@dataclass(slots=True)
class ActionStatus:
    """One change of an action's status (topic `action-status`, key customer_id;
    docs/design.md 12)."""

    action_id: str
    customer_id: str
    rule: str
    destination: str
    status: str
    owner: str | None
    resolution: str | None
    #: Event time of the change.
    at: int
    #: The status event that made the change; None for open, overdue and lapsed.
    event_id: str | None = None
