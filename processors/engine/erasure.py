"""Erasing one customer from a partition's engine state (`moments forget`): pure, no Kafka.

`forget_customer(store, customer_id)` drops everything the engine keeps about
the customer: the customer's own state (`c:<id>`: windows, first keys,
cool-downs, the ledger, whatever else lives there) and every partition-level
entry keyed by the customer (pending timers in the timer buckets). Every
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
from typing import Any

from processors.engine.interfaces import StateStore
from processors.engine.state import (
    TIMER_BUCKET_PREFIX,
    TIMER_CUSTOMER,
    TIMER_INDEX_KEY,
    customer_key,
)


def erase_timers(store: StateStore, customer_id: str) -> int:
    """Remove the customer's pending timers from every bucket; empty buckets leave the index."""
    index: list[int] | None = store.get(TIMER_INDEX_KEY)
    if not index:
        return 0
    removed = 0
    kept_buckets: list[int] = []
    for bucket in index:
        bkey = f"{TIMER_BUCKET_PREFIX}{bucket}"
        entries: list[list[Any]] = store.get(bkey) or []
        kept = [e for e in entries if e[TIMER_CUSTOMER] != customer_id]
        if len(kept) != len(entries):
            removed += len(entries) - len(kept)
            if kept:
                store.set(bkey, kept)
            else:
                store.delete(bkey)
        if kept:
            kept_buckets.append(bucket)
    if kept_buckets != index:
        store.set(TIMER_INDEX_KEY, kept_buckets)
    return removed


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
