"""The project's own rule predicates: the module a pack's `predicate:` may name by default.

A predicate is a pure function `(event: InteractionEvent, customer: CustomerProfile) ->
bool` (processors/engine/rules.py): deterministic, no state of its own, no I/O. Only
modules on the allow-list (`MOMENTS_PREDICATE_MODULES`, default this one) may give
predicates, so a published pack cannot run arbitrary code (docs/design.md 8.2).
"""

from __future__ import annotations

from processors.engine.rule_model import CustomerProfile
from schemas.records import InteractionEvent


def large_payment(event: InteractionEvent, customer: CustomerProfile) -> bool:
    """A payment of 1,000 or more (in the event's currency)."""
    return (event.amount or 0) >= 1000


def holds_several_products(event: InteractionEvent, customer: CustomerProfile) -> bool:
    """The customer holds two products or more."""
    return len(customer.products) >= 2
