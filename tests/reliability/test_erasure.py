"""Erasure is ordered and confirmed (docs/design.md 10.1): nothing of an erased customer comes
back, through any consumer.

- `moments forget ID --wait` with a worker, a PostgreSQL sink and a webhook sink running:
  it returns once both sinks confirmed, and says what was removed; the customer has no
  row left, the webhook destination got a signed `customer.forgotten`; then a PostgreSQL
  sink and a webhook sink under new groups read every topic from the start and write or
  send nothing of the customer, and a replay from the interactions topic produces nothing
  of them either.
- The race of the issue: many events of one customer, the erasure shortly after while
  the worker is still on them, the sink started only after the erasure (behind
  everything): `forget --wait` returns once it is done and nothing of the customer is left.

The customer's events carry a name, an email address and a phone number in their text
(what came back before).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common.settings import Settings
from processors.backfill import backfill_topic
from schemas.records import InteractionEvent
from sinks.postgres import sink_topics
from sinks.webhook import STATUS_TYPE
from tests.reliability.harness import Figures, Fleet, PacedPublisher, process_settings
from tests.support.erasure import (
    another_database,
    customer_rows,
    erasures_recorded,
    webhook_receiver,
)
from tests.support.stack import EmbeddedPostgres
from tests.support.timing import wait_for
from tests.support.worker_process import TopicReader, actions_in, event

KEY = "reliability-erasure-key"
SECRET = "reliability-webhook-secret"
GONE = "CUST-ERASE-GONE"
KEPT = "CUST-ERASE-KEPT"


def feedback(customer: str, n: int, at: int) -> InteractionEvent:
    """Feedback (routed at once by `route_feedback`, its text in the action's details)."""
    return event(
        customer,
        "feedback_given",
        at,
        channel="email",
        text=f"{customer} feedback {n}: call Jane Roe on +44 7700 900{n % 1000:03d},"
        f" jane.roe.{n}@example.org",
    )


def forget(settings: Settings, customer: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "moments", "forget", customer, *args],
        env={**os.environ, **settings.as_env()},
        capture_output=True,
        timeout=300,
    )


def texts(done: subprocess.CompletedProcess[bytes]) -> str:
    return done.stdout.decode() + done.stderr.decode()


def test_forget_wait_then_new_groups_and_a_replay_bring_nothing_back(
    settings: Settings,
    database: str,
    postgres: EmbeddedPostgres,
    tmp_path: Path,
    figures: Figures,
) -> None:
    n = 15
    t0 = int(time.time() * 1000) - 3_600_000
    with webhook_receiver(SECRET) as receiver:
        settings = process_settings(
            settings,
            tmp_path,
            database_url=database,
            id_hash_key=KEY,
            webhook_urls={"feedback": receiver.url("feedback")},
            webhook_secret=SECRET,
            webhook_allow_http=True,
            webhook_group=f"moments-webhook-{uuid.uuid4().hex[:8]}",
        )
        topics = settings.topics
        events = [feedback(c, i, t0 + i * 1000) for i in range(n) for c in (GONE, KEPT)]
        with Fleet(settings, tmp_path / "logs") as fleet:
            fleet.start("worker", "worker")
            fleet.start("sink", "sink", "postgres")
            fleet.start("webhook", "sink", "webhook")
            PacedPublisher(settings, events, rate=200).start().join()

            def stored(customer: str) -> bool:
                rows = customer_rows(database, customer)
                return rows.get("actions") == rows.get("interaction_events") == n and (
                    rows.get("decisions", 0) >= n
                )

            def sent(customer: str) -> int:
                """The customer's actions the receiver got (not the erasure)."""
                return sum(
                    1
                    for _, e in receiver.seen()
                    if e["subject"] == customer
                    and e["type"].startswith("moments.action.")
                    and e["type"] != STATUS_TYPE  # each action's status changes come too
                )

            wait_for(
                lambda: stored(GONE) and stored(KEPT) and sent(GONE) == n,
                90,
                "the sinks to write and send both customers",
                describe=lambda: (
                    f"{customer_rows(database, GONE)} {sent(GONE)}" + fleet.log_tail("worker-1")
                ),
            )
            kept_before = customer_rows(database, KEPT)
            gone_before = sum(customer_rows(database, GONE).values())

            done = forget(settings, GONE, "--wait", "--timeout", "120")
            output = texts(done)
            assert done.returncode == 0, output + fleet.log_tail("sink-1")
            assert "complete" in output and f"{gone_before} rows removed" in output, output
            assert "acknowledged by 1 destination" in output, output
            assert GONE not in output and "jane.roe" not in output
            assert set(customer_rows(database, GONE).values()) == {0}
            assert customer_rows(database, KEPT) == kept_before
            forgotten = [e for _, e in receiver.seen() if e["type"] == "customer.forgotten"]
            # one for the action topic's marker, one for action-status's (the statuses since)
            assert [e["subject"] for e in forgotten] == [GONE, GONE], forgotten
            assert sum(e["id"].endswith("-statuses") for e in forgotten) == 1
            assert receiver.bad_signatures == 0

            # New groups read every topic from its beginning: nothing of GONE comes back.
            receiver.clear()
            with another_database(postgres.url) as fresh:
                fleet.start(
                    "sink-new",
                    "sink",
                    "postgres",
                    MOMENTS_SINK_GROUP=f"{settings.sinks.sink_group}-new",
                    MOMENTS_DATABASE_URL=fresh,
                )
                fleet.start(
                    "webhook-new",
                    "sink",
                    "webhook",
                    MOMENTS_WEBHOOK_GROUP=f"{settings.sinks.webhook_group}-new",
                )
                wait_for(
                    lambda: (
                        customer_rows(fresh, KEPT) == kept_before
                        # every topic's marker met: the sink is past GONE's records
                        and erasures_recorded(fresh) == len(sink_topics(settings))
                        and sent(KEPT) == n
                        and any(e["type"] == "customer.forgotten" for _, e in receiver.seen())
                    ),
                    90,
                    "the new groups to catch up",
                    describe=lambda: f"{customer_rows(fresh, KEPT)} {erasures_recorded(fresh)}",
                )
                assert set(customer_rows(fresh, GONE).values()) == {0}
            assert sent(GONE) == 0  # the CRM-style resend of the issue: none
            fleet.check_alive()

        # A replay from the topic (the backfill path of `replay --from-topic`).
        summary = backfill_topic(
            settings,
            topics.interactions,
            actions_out=tmp_path / "actions.jsonl",
            decisions_out=tmp_path / "decisions.jsonl",
        )
        replayed = (tmp_path / "actions.jsonl").read_text() + (
            tmp_path / "decisions.jsonl"
        ).read_text()
        assert summary.erased == n and GONE not in replayed
        assert summary.actions == n  # the kept customer's, all of them
    figures.update(
        events=len(events), **{"rows removed": gone_before, "replay dropped": summary.erased}
    )


def test_the_race_of_many_events_and_an_early_forget_leaves_nothing(
    settings: Settings, database: str, tmp_path: Path, figures: Figures
) -> None:
    many = 1000
    t0 = int(time.time() * 1000) - 3_600_000
    settings = process_settings(settings, tmp_path, database_url=database, id_hash_key=KEY)
    topics = settings.topics
    events = [feedback(GONE, i, t0 + i) for i in range(many)]
    events += [feedback(KEPT, i, t0 + i * 50) for i in range(20)]
    reader = TopicReader(settings, [topics.action("feedback")])
    with Fleet(settings, tmp_path / "logs") as fleet:
        fleet.start("worker", "worker")
        started = time.monotonic()
        PacedPublisher(settings, events, rate=20_000).start().join()
        time.sleep(max(0.0, 1.5 - (time.monotonic() - started)))
        waiting = subprocess.Popen(
            [sys.executable, "-m", "moments", "forget", GONE, "--wait", "--timeout", "240"],
            env={**os.environ, **settings.as_env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        fleet.start("sink", "sink", "postgres")  # behind everything, the erasure included
        output, _ = waiting.communicate(timeout=300)
        assert waiting.returncode == 0, output.decode() + fleet.log_tail("sink-1")
        # A later event of the kept customer: once it is stored, the sink is past the rest.
        PacedPublisher(settings, [feedback(KEPT, 99, t0 + 10_000_000)], rate=10).start().join()
        wait_for(
            lambda: customer_rows(database, KEPT).get("actions") == 21,
            60,
            "the kept customer's last action",
            describe=lambda: str(customer_rows(database, KEPT)),
        )
        gone_rows = customer_rows(database, GONE)
        emitted = actions_in(reader.drain(), topics.action("feedback"))
        fleet.check_alive()
    reader.close()
    gone_emitted = sum(1 for a in emitted if a.customer_id == GONE)
    figures.update(
        events=len(events), **{"actions for GONE": gone_emitted, "left": sum(gone_rows.values())}
    )
    assert gone_emitted > 0  # the worker did act for GONE before the erasure: not vacuous
    assert set(gone_rows.values()) == {0}, gone_rows
    assert customer_rows(database, KEPT)["interaction_events"] == 21
