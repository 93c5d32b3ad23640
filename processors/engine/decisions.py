"""What a decision says: its outcome (schemas.records) and its reason, each named once.

A Decision's `reason` is `fired` for a fired candidate, `held_out` for one in the control
group, `contact_cap` for a deferred one, else why it was suppressed (docs/design.md,
section 5). The engine writes only these names; readers (reports, the timeline) may
import them. Constants only: compiled modules inline them.
"""

from __future__ import annotations

from typing import Final

from schemas.records import DEFERRED, FIRED, HELD_OUT, OUTCOMES, SUPPRESSED

__all__ = [
    "ALREADY_RAISED",
    "ALREADY_WAITING",
    "CONTACT_CAP",
    "COOL_DOWN",
    "DEFERRED",
    "DUPLICATE_EVENT",
    "EXPIRED",
    "FIRED",
    "HELD_OUT",
    "NOTHING_TO_UPDATE",
    "NOT_NEW",
    "OPEN_CASE",
    "OPTED_OUT",
    "OUTCOMES",
    "OWNED",
    "REASONS",
    "RULE_CHANGED",
    "RULE_ERROR",
    "RULE_REMOVED",
    "SUPERSEDED",
    "SUPPRESSED",
    "WARM_UP",
]

#: deferred: the contact cap is full; the candidate waits in the customer's queue.
CONTACT_CAP: Final = "contact_cap"
#: suppressed: a `first` rule's key was consumed before.
ALREADY_RAISED: Final = "already_raised"
#: suppressed: the same rule and key wait in the customer's queue already.
ALREADY_WAITING: Final = "already_waiting"
#: suppressed: the rule's cool-down for the key is still running.
COOL_DOWN: Final = "cool_down"
#: suppressed: the event was applied before (within the dedupe horizon).
DUPLICATE_EVENT: Final = "duplicate_event"
#: suppressed: a deferred candidate's due_by or defer_for passed before the cap freed.
EXPIRED: Final = "expired"
#: suppressed: before `emit_from` (history warm-up), the candidate only builds state.
WARM_UP: Final = "warm_up"
#: suppressed: a pack switch to a version saying `pending: cancel` dropped the timer.
RULE_CHANGED: Final = "rule_changed"
#: suppressed: a pack switch removed the rule that set the timer or deferred the candidate.
RULE_REMOVED: Final = "rule_removed"
#: suppressed: the rule's own code (its predicate) raised on the event; only that rule's
#: candidate is lost, the other rules decide as usual.
RULE_ERROR: Final = "rule_error"

#: suppressed: an open escalation of a higher priority owns the customer (docs/design.md 11.2).
OWNED: Final = "owned"
#: suppressed: the customer opted out of engagement contact.
OPTED_OUT: Final = "opted_out"
#: deferred: the customer has an open case; the candidate waits until it closes.
OPEN_CASE: Final = "open_case"
#: suppressed: a `new_within` first rule's product was not opened within that time.
NOT_NEW: Final = "not_new"
#: suppressed: a newer change of the same kind was applied already (`latest_only`).
SUPERSEDED: Final = "superseded"
#: suppressed: the customer holds no product to update (`needs_products`).
NOTHING_TO_UPDATE: Final = "nothing_to_update"

#: Every reason a decision can give (a fired or held-out one gives its outcome).
REASONS: Final = (
    FIRED,
    HELD_OUT,
    CONTACT_CAP,
    ALREADY_RAISED,
    ALREADY_WAITING,
    COOL_DOWN,
    DUPLICATE_EVENT,
    EXPIRED,
    WARM_UP,
    RULE_CHANGED,
    RULE_REMOVED,
    RULE_ERROR,
    OWNED,
    OPTED_OUT,
    OPEN_CASE,
    NOT_NEW,
    SUPERSEDED,
    NOTHING_TO_UPDATE,
)
