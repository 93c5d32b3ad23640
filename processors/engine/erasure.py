"""Erasing one customer from a partition's engine state (`moments forget`): pure, no Kafka.

`forget_customer(store, customer_id)` drops everything the engine keeps about
the customer: the customer's own state (`c:<id>`: windows, first keys,
cool-downs, the ledger, whatever else lives there) and every partition-level
entry keyed by the customer (pending timers in the timer chunks). Every
removal goes through `StateStore.delete` / `set`, so a changelog-backed store
writes tombstones and updated values, and a restarted worker recovers
nothing about the customer.

State that lives outside the customer's own key registers an eraser in
`PARTITION_ERASERS`: a function `(store, customer_id) -> removed entries`.
A new partition-level collection keyed by customer (e.g. a queue of deferred
candidates kept beside the timers) adds one function there.
"""

from __future__ import annotations

from collections.abc import Callable

from processors.engine.interfaces import StateStore
from processors.engine.state import TIMER_CUSTOMER, customer_key
from processors.engine.timers import remove_timers


def erase_timers(store: StateStore, customer_id: str) -> int:
    """Remove the customer's pending timers; emptied chunks leave the index."""
    return remove_timers(store, lambda entry: entry[TIMER_CUSTOMER] == customer_id)


#: Erasers of partition-level state keyed by customer (the customer's own key is always dropped).
PARTITION_ERASERS: list[Callable[[StateStore, str], int]] = [erase_timers]


def forget_customer(store: StateStore, customer_id: str) -> int:
    """Drop every entry of this partition's state about CUSTOMER_ID; return how many went.

    Idempotent: forgetting a customer the store does not know removes nothing.
    """
    removed = 0
    key = customer_key(customer_id)
    if store.get(key) is not None:
        store.delete(key)
        removed += 1
    for eraser in PARTITION_ERASERS:
        removed += eraser(store, customer_id)
    return removed
