"""`moments forget` end to end: a customer with pending timers is erased from PostgreSQL and
from the worker's state, and nothing is emitted for them afterwards, also after a restart.

One interactions partition, so one watermark moves every customer's timers. The customer
to forget and a customer to keep each open a case (a `case_unresolved` timer 48 h later)
and a second one (60 h later: a timer that would still be pending at the restart); the
customer to forget also has two engagement candidates, one held back until their cases
close (deferred, open_case). A worker and a PostgreSQL sink run as child processes;
`moments forget --wait` runs as the CLI and returns once the sink deleted the customer.
Follow-ups and engagement candidates are decided once the watermark passes their event
(docs/design.md 11.1), so a payment of the kept customer 13 h on settles them before the
erasure. Then the kept customer's events move the watermark past every deadline, before
and after a worker restart (state recovered from the changelog alone, `memory://`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from common.privacy import keyed_customer_hash, set_id_hash_key
from common.settings import Settings
from common.topics import ensure_topics
from moments.runtime import Supervisor
from producers.publisher import Publisher
from sinks.erasure import customer_tables
from sinks.postgres import apply_migrations
from tests.support.timing import wait_for
from tests.support.worker_process import (
    WAIT_S,
    TopicReader,
    actions_in,
    clock_event,
    decisions_in,
    event,
    running_worker,
)
from tests.support.worker_state import read_worker_state

GONE = "CUST-FORGET-GONE"
HASH_KEY = "integration-forget-key"
KEPT = "CUST-FORGET-KEPT"
H = 3_600_000


def rows_of(conninfo: str, customer: str) -> dict[str, int]:
    """CUSTOMER's rows in actions, decisions and events, and in any other table with a
    customer_id column (under its own name)."""
    from psycopg import sql

    with psycopg.connect(conninfo) as conn:
        found = {
            table: conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE customer_id = %s").format(
                    sql.Identifier(table)
                ),
                (customer,),
            ).fetchone()[0]  # type: ignore[index]
            for table in customer_tables(conn)
        }
    found["events"] = found.pop("interaction_events")
    return found


def test_a_forgotten_customer_leaves_nothing_and_gets_nothing(
    settings: Settings, database: str, tmp_path: Path
) -> None:
    settings = settings.replace(
        topic_prefix="f" + settings.kafka.topic_prefix,
        interactions_partitions=1,
        database_url=database,
        idle_tick_s=3600.0,  # the test's events move the clock, nothing else
        worker_store="memory://",
        data_dir=tmp_path / "data",
        id_hash_key=HASH_KEY,
    )
    ensure_topics(settings)
    apply_migrations(database)
    topics = settings.topics
    t0 = int(time.time() * 1000) - 30 * 24 * H
    reader = TopicReader(settings, [topics.action("care"), topics.decisions])
    log = tmp_path / "worker.log"

    def decisions_for(customer: str) -> list[str]:
        found = decisions_in(reader.messages, topics.decisions)
        return [d.decision_id for d in found if d.customer_id == customer]

    with Supervisor(settings, tmp_path / "logs") as supervisor:
        supervisor.spawn("sink", "sink", "postgres")
        with running_worker(settings, log) as worker:
            with Publisher(settings) as publisher:
                for customer in (GONE, KEPT):
                    publisher.publish(
                        event(customer, "complaint_filed", t0, reference=f"{customer}-1")
                    )
                    publisher.publish(
                        event(customer, "dispute_opened", t0 + 12 * H, reference=f"{customer}-2")
                    )
                # An engagement candidate while the cases are open waits for them to close
                # (deferred, open_case); the invoice of a product not opened lately is
                # suppressed (not_new): four decisions, two actions.
                publisher.publish(event(GONE, "meter_reading_submitted", t0 + H, channel="web"))
                publisher.publish(
                    event(GONE, "invoice_issued", t0 + 2 * H, channel="billing", product="gas")
                )
                # Past every event so far (the second follow-ups, the held engagement
                # candidates), short of the first case_unresolved deadline (t0 + 48 h).
                publisher.publish(clock_event(KEPT, t0 + 13 * H))
            reader.poll_until(lambda ms: len(decisions_for(GONE)) == 4, worker, WAIT_S)
            wait_for(
                lambda: (
                    [
                        rows_of(database, GONE)[t]
                        for t in ("actions", "decisions", "events", "action_status_history")
                    ]
                    == [2, 4, 4, 2]  # and each action's `open` (docs/design.md 12)
                ),
                WAIT_S,
                "the sink to write GONE",
            )
            gone_before = sorted(decisions_for(GONE))

            forget = subprocess.run(
                [sys.executable, "-m", "moments", "forget", GONE, "--wait"],
                env={**os.environ, **settings.as_env()},
                capture_output=True,
                timeout=180,
            )
            output = forget.stdout.decode() + forget.stderr.decode()
            assert forget.returncode == 0, output
            set_id_hash_key(HASH_KEY)
            assert GONE not in output and keyed_customer_hash(GONE)[:16] in output
            assert "complete" in output and "12 rows removed" in output, output
            assert set(rows_of(database, GONE).values()) == {0}  # confirmed: gone already

            erased = f"erased customer hmac:{keyed_customer_hash(GONE)}"
            wait_for(
                lambda: erased in log.read_text(errors="replace"), WAIT_S, "the worker's erasure"
            )
            # The kept customer's event moves the watermark past the first deadlines.
            with Publisher(settings) as publisher:
                publisher.publish(event(KEPT, "inquiry", t0 + 50 * H, channel="web"))
            reader.poll_until(
                lambda ms: (
                    any(a.customer_id == KEPT for a in actions_in(ms, topics.action("care")))
                    and len(decisions_for(KEPT)) >= 3
                ),
                worker,
                WAIT_S,
            )
            assert worker.stop() == 0, worker.log_tail()

        # Restarted: the state comes back from the changelog, without GONE.
        with running_worker(settings, log) as worker:
            with Publisher(settings) as publisher:
                publisher.publish(event(KEPT, "inquiry", t0 + 80 * H, channel="web"))
            reader.poll_until(
                lambda ms: (
                    len(
                        [
                            a
                            for a in actions_in(ms, topics.action("care"))
                            if a.customer_id == KEPT and a.rule == "case_unresolved"
                        ]
                    )
                    == 2
                ),
                worker,
                WAIT_S,
            )
            messages = reader.drain()
            assert worker.stop() == 0, worker.log_tail()
        supervisor.check_alive()  # the sink took the erasure record in its stride
        sink_log = supervisor.log_path("sink").read_text(errors="replace")

    state = read_worker_state(settings)
    gone_decisions = [d for d in decisions_in(messages, topics.decisions) if d.customer_id == GONE]
    gone_actions = [a for a in actions_in(messages, topics.action("care")) if a.customer_id == GONE]
    kept_escalations = [
        a.rule for a in actions_in(messages, topics.action("care")) if a.customer_id == KEPT
    ]
    assert set(rows_of(database, GONE).values()) == {0}
    assert rows_of(database, KEPT)["events"] == 5  # only GONE was erased
    # Nothing after the erasure: no decision (a held-back candidate firing or expiring would
    # make one), no escalation for the cases they left open.
    assert sorted(d.decision_id for d in gone_decisions) == gone_before
    assert sorted(a.rule for a in gone_actions) == ["case_follow_up", "case_follow_up"]
    assert kept_escalations.count("case_unresolved") == 2  # the timers still work for others
    assert GONE not in repr(state.engine) and state.engine, "GONE is back in the worker state"
    logs = log.read_text(errors="replace") + sink_log
    assert GONE not in logs and KEPT not in logs
    assert "dead-letter" not in logs  # the erasure record is no poison


def test_forget_with_the_database_away_is_one_clear_line(settings: Settings) -> None:
    from moments.stack import free_port

    env = {
        **os.environ,
        **settings.as_env(),
        "MOMENTS_DATABASE_URL": f"postgresql://moments@127.0.0.1:{free_port()}/moments",
        "MOMENTS_ID_HASH_KEY": HASH_KEY,
    }
    forget = subprocess.run(
        [sys.executable, "-m", "moments", "forget", GONE, "--wait"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    output = forget.stdout.decode() + forget.stderr.decode()
    assert forget.returncode == 2, output
    assert "reading its confirmation from PostgreSQL failed: OperationalError" in output
    assert "run `moments forget --wait` again" in output
    assert "Traceback" not in output and GONE not in output
