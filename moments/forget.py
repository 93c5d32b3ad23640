"""`moments forget CUSTOMER_ID`: erase a customer everywhere moments keeps them.

1. The erasure record goes to `interactions` first (a tombstone keyed by the
   customer id, header `moments.control: forget`; `common.privacy`), and is
   acknowledged by the broker: the worker that owns the customer's partition
   drops their engine state (changelog tombstones) when it reaches the record,
   so nothing is emitted for them from then on, also after a restart. The
   PostgreSQL sink skips it like every control record.
2. Then their rows in PostgreSQL go, every table in one transaction
   (`sinks.erasure`).

Raw events age out of the topics with `MOMENTS_RETENTION_DAYS`
(`common.topics`). Erasure is logged with the customer id hashed, never in
clear. Running it again is harmless.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

from common.privacy import hashed_id
from common.settings import Settings
from producers.publisher import Publisher
from sinks.erasure import erase_customer

log = logging.getLogger(__name__)


class ForgetError(RuntimeError):
    """The erasure could not be completed (safe to run again); names no customer."""


@dataclass(frozen=True)
class Erasure:
    """What `forget_customer` did: the customer's sha256 and the rows deleted per table."""

    customer_hash: str
    tables: dict[str, int]

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


def forget_customer(settings: Settings, customer_id: str, *, timeout_s: float = 30.0) -> Erasure:
    """Send the customer's erasure record, then delete their rows from PostgreSQL."""
    if not customer_id.strip():
        raise ValueError("a customer id is needed")
    if not settings.database.database_url:
        raise RuntimeError("no database configured (set MOMENTS_DATABASE_URL)")
    with Publisher(settings) as publisher:
        publisher.publish_erasure(customer_id)
        publisher.flush(timeout_s)
    try:
        tables = erase_customer(settings.database.database_url, customer_id)
    except psycopg.Error as exc:  # the class and state only: a server message may quote the id
        state = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
        raise ForgetError(
            f"the erasure record was sent, but deleting from PostgreSQL failed: "
            f"{type(exc).__name__}{state}; nothing was deleted, run `moments forget` again"
        ) from None
    erasure = Erasure(hashed_id(customer_id), tables)
    log.info(
        "erased customer sha256:%s: erasure record sent, %d rows deleted",
        erasure.customer_hash,
        erasure.rows,
    )
    return erasure
