"""`moments forget CUSTOMER_ID [--wait]`: erase a customer everywhere moments keeps them.

Erasure is ordered and confirmed (docs/design.md 10.1):

1. `request_erasure` writes the customer's record to the erasure registry
   (`common.erasures`: key = the keyed hash of the id, value = the erasure
   time), then the erasure record to `interactions` (a tombstone keyed by the
   customer id, headers `moments.control: forget` and `moments.erased_at`),
   both acknowledged by the broker. From then on every consumer that follows
   the registry (the sinks under any group, the backfill of `replay
   --from-topic` and `rules diff --from-topic`) drops the customer's records
   dated before the erasure.
2. The worker that owns the customer's partition drops their engine state
   (changelog tombstones) when it reaches the erasure record, then writes an
   erasure marker to every output topic, behind everything it emitted for the
   customer before.
3. Each sink deletes when it meets the erasure record (PostgreSQL:
   `interaction_events`) and each marker (its topic's rows), in the transaction
   of its batch, and records the erasure: the PostgreSQL sink in its
   `erasures` table (rows removed per table), the webhook sink, once its
   destination acknowledged the `customer.forgotten` CloudEvent, on the
   `erasures.done` topic.

`wait_for_erasure` (`--wait`) returns when every sink this configuration runs
confirmed every topic it reads: the PostgreSQL sink (when
`MOMENTS_DATABASE_URL` is set) for each action topic, `decisions` and
`interactions`; the webhook sink (when `MOMENTS_WEBHOOK_URLS` names
destinations) for each of their action topics. It is as honest as that list:
a sink that runs under other settings is not waited for.

Nothing is deleted from PostgreSQL here: rows deleted ahead of the sink came
back when the sink was behind. Raw events age out of the topics with
`MOMENTS_RETENTION_DAYS` (`common.topics`). Erasure is logged with the keyed
hash of the customer id, never in clear. Running it again is harmless.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from common.erasures import (
    confirmations_reader,
    now_ms,
    read_confirmations,
    register_erasure,
)
from common.settings import Settings
from producers.publisher import Publisher
from schemas.wire import DESTINATIONS
from sinks.erasure import erasure_records
from sinks.postgres import sink_topics

log = logging.getLogger(__name__)


class ForgetError(RuntimeError):
    """The erasure could not be requested or confirmed (safe to run again); names no customer."""


@dataclass(frozen=True)
class ErasureRequest:
    """An erasure sent: the keyed hash of the customer's id and the erasure time (ms)."""

    customer_hash: str
    erased_at_ms: int


@dataclass
class ErasureReport:
    """What the sinks confirmed of one erasure (`wait_for_erasure`)."""

    request: ErasureRequest
    #: PostgreSQL sink: topic -> rows removed per table, for each topic it recorded.
    postgres: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Webhook sink: topic -> whether the destination acknowledged the CloudEvent.
    webhook: dict[str, bool] = field(default_factory=dict)
    #: The topics each sink is expected to confirm (sink -> topics).
    expected: dict[str, list[str]] = field(default_factory=dict)

    @property
    def missing(self) -> dict[str, list[str]]:
        """Sink -> the topics it has not confirmed yet."""
        seen: dict[str, set[str]] = {"postgres": set(self.postgres), "webhook": set(self.webhook)}
        gaps = {
            sink: [t for t in topics if t not in seen[sink]]
            for sink, topics in self.expected.items()
        }
        return {sink: topics for sink, topics in gaps.items() if topics}

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def removed(self) -> dict[str, int]:
        """Rows the PostgreSQL sink removed, per table."""
        total: dict[str, int] = {}
        for tables in self.postgres.values():
            for table, rows in tables.items():
                total[table] = total.get(table, 0) + rows
        return total


def request_erasure(
    settings: Settings, customer_id: str, *, timeout_s: float = 30.0
) -> ErasureRequest:
    """Register the erasure, then send the erasure record to the workers; both acknowledged."""
    if not customer_id.strip():
        raise ValueError("a customer id is needed")
    erased_at = now_ms()
    customer_hash = register_erasure(settings, customer_id, erased_at, timeout_s)
    with Publisher(settings) as publisher:
        publisher.publish_erasure(customer_id, erased_at)
        publisher.flush(timeout_s)
    log.info(
        "erasure of customer %s… requested (registry and erasure record sent)", customer_hash[:16]
    )
    return ErasureRequest(customer_hash, erased_at)


def expected_confirmations(settings: Settings) -> dict[str, list[str]]:
    """The sinks this configuration runs and the topics each must confirm."""
    expected: dict[str, list[str]] = {}
    if settings.database.database_url:
        expected["postgres"] = sink_topics(settings)
    urls = settings.sinks.webhook_urls
    webhook = [settings.topics.action(d) for d in DESTINATIONS if d in urls]
    if webhook:  # the sink also follows action-status, whose marker it forwards too
        expected["webhook"] = [*webhook, settings.topics.action_status]
    return expected


def wait_for_erasure(
    settings: Settings, request: ErasureRequest, *, timeout_s: float = 120.0, poll_s: float = 0.5
) -> ErasureReport:
    """Wait until every expected sink confirmed the erasure on every topic it reads, or until
    `timeout_s` passed; the report says what was confirmed and removed, and what is missing."""
    report = ErasureReport(request, expected=expected_confirmations(settings))
    deadline = time.monotonic() + timeout_s
    reader = confirmations_reader(settings) if "webhook" in report.expected else None
    confirmations: list[dict[str, Any]] = []
    try:
        while True:
            if "postgres" in report.expected:
                report.postgres = _postgres_records(settings, request)
            if reader is not None:
                read_confirmations(
                    reader, request.customer_hash, request.erased_at_ms, confirmations
                )
                for found in confirmations:
                    if found.get("sink") == "webhook":
                        topic = str(found.get("topic"))
                        report.webhook[topic] = report.webhook.get(topic, False) or bool(
                            found.get("delivered")
                        )
            if report.complete or time.monotonic() >= deadline:
                return report
            time.sleep(poll_s)
    finally:
        if reader is not None:
            reader.close()


def _postgres_records(settings: Settings, request: ErasureRequest) -> dict[str, dict[str, int]]:
    conninfo = settings.database.database_url
    assert conninfo is not None
    try:
        return erasure_records(conninfo, request.customer_hash, request.erased_at_ms)
    except psycopg.errors.UndefinedTable:
        return {}  # the sink has not migrated yet: nothing recorded
    except psycopg.Error as exc:  # the class and state only: a server message may quote data
        state = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
        raise ForgetError(
            f"the erasure was requested, but reading its confirmation from PostgreSQL failed: "
            f"{type(exc).__name__}{state}; the sinks still complete it, run `moments forget"
            " --wait` again to see them confirm"
        ) from None
