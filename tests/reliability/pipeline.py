"""The whole live path in child processes, for the fault tests that involve the worker.

`Pipeline` runs `moments worker` (one or more) and `moments sink postgres` as
children of the test (`Fleet`), publishes events through the publisher SDK,
waits until the worker group has committed past every published event, and
reads back what the worker left: its final engine state from the changelog
of its state table. `expected_outputs` turns the oracle into the exact
expectation for a run (see its docstring).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.settings import Settings
from processors.engine import EngineOutput
from processors.engine.state import LINE_KEY, PACK_KEY, TEXTS_KEY
from processors.replay import Replayer
from schemas.records import ActionEvent, ActionStatus, Decision, InteractionEvent
from tests.reliability.harness import (
    Fleet,
    committed_offsets,
    db_count,
)
from tests.reliability.verifier import new_engine
from tests.support.timing import wait_for
from tests.support.worker_state import WorkerState

#: Partition keys only a live worker writes: the packs a partition ran, and its last switch
#: (replay records the switch too, without the offset and pack id the worker adds).
LIVE_ONLY = frozenset({LINE_KEY, TEXTS_KEY, PACK_KEY})


@dataclass
class Expected:
    """What the database and the worker's state must hold at the end of a run."""

    actions: list[ActionEvent]
    decisions: list[Decision]
    state: dict[int, dict[str, Any]]
    #: Timer actions fired because the live watermark passed the events' (idle ticks).
    tick_actions: int
    #: The decisions the events give, in the replay's order (those the final advance to the
    #: worker's watermarks adds are left out: ticks may give them in several steps).
    in_order: list[Decision]
    #: The changes of the actions' statuses (action-status), all of them.
    statuses: list[ActionStatus] = field(default_factory=list)

    @property
    def decisions_count(self) -> int:
        """Distinct decision ids (what the decisions table can hold)."""
        return len({d.decision_id for d in self.decisions})


def expected_outputs(
    settings: Settings, events: Sequence[InteractionEvent], final: WorkerState
) -> Expected:
    """The oracle for a live run: replay, then each partition's clock where the worker left it.

    replay_events over EVENTS with one store per partition gives what the
    events alone decide. The live worker also moves a quiet partition's
    watermark by the wall clock (idle ticks), which can fire timers the
    replay leaves pending at the end of the input; so each replayed
    partition is then advanced to the final watermark the worker's changelog
    holds (`Engine.advance_watermark`, what `replay --until` does per
    partition). Within the stream a tick can raise a watermark only by the
    wall time between two publishes (milliseconds of event time, far below
    the 5-minute lateness), and events arrive in occurred_at order, so no
    event decides differently: the result must equal the live run exactly,
    actions, decisions and the engine state of every partition.
    """
    engine = new_engine(settings)
    replayer = Replayer(engine, settings.kafka.interactions_partitions)
    out = EngineOutput()
    for event in events:
        out.extend(replayer.feed(event))
    before = len(out.actions)
    in_order = list(out.decisions)
    for partition, store in enumerate(replayer.stores):
        watermark = final.watermark(partition)
        if watermark is not None:
            out.extend(engine.advance_watermark(store, watermark))
    state = {
        p: json.loads(json.dumps(store.data, sort_keys=True))
        for p, store in enumerate(replayer.stores)
        if store.data
    }
    return Expected(
        out.actions, out.decisions, state, len(out.actions) - before, in_order, out.statuses
    )


def state_differences(
    expected: dict[int, dict[str, Any]], live: dict[int, dict[str, Any]]
) -> list[str]:
    """Keys whose value differs between the oracle's stores and the worker's final state
    (but for the worker's record of the rule packs a partition ran: `LIVE_ONLY`)."""
    problems: list[str] = []
    for partition in sorted(set(expected) | set(live)):
        want, have = expected.get(partition, {}), live.get(partition, {})
        for key in sorted((set(want) | set(have)) - LIVE_ONLY):
            if want.get(key) != have.get(key):
                problems.append(f"partition {partition} key {key!r}")
    return problems


class Pipeline:
    """Worker(s) and the PostgreSQL sink as child processes of one test."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.fleet = Fleet(settings, log_dir)

    def start_worker(self, role: str = "worker") -> None:
        self.fleet.start(role, "worker")

    def start_sink(self) -> None:
        self.fleet.start("sink", "sink", "postgres")

    def worker_committed(self) -> dict[int, int]:
        return committed_offsets(
            self.settings, self.settings.worker.worker_app_id, self.settings.topics.interactions
        )

    def wait_worker_past(self, ends: dict[int, int], timeout_s: float) -> None:
        """Wait until the worker group committed at least ENDS (per interactions partition)."""

        def done() -> bool:
            self.fleet.check_alive()
            now = self.worker_committed()
            return all(now.get(p, -1) >= end for p, end in ends.items())

        wait_for(
            done,
            timeout_s,
            f"the worker to commit past {ends}",
            poll_s=1.0,
            describe=lambda: f"committed {self.worker_committed()}\n{self.tails()}",
        )

    def wait_rows(
        self,
        conninfo: str,
        actions: int,
        decisions: int,
        timeout_s: float,
        quiet_s: float = 2.0,
        give_up_quiet_s: float = 20.0,
    ) -> None:
        """Wait until the tables hold at least these counts and have not grown for QUIET_S.

        If they stop growing for GIVE_UP_QUIET_S short of the counts, return anyway:
        the comparison with the oracle then says exactly what is missing.
        """
        last: tuple[int, int] = (-1, -1)
        since = time.monotonic()

        def settled() -> bool:
            nonlocal last, since
            self.fleet.check_alive()
            now = (
                db_count(conninfo, "SELECT count(*) FROM actions"),
                db_count(conninfo, "SELECT count(*) FROM decisions"),
            )
            if now != last:
                last, since = now, time.monotonic()
                return False
            quiet = time.monotonic() - since
            if quiet >= give_up_quiet_s and min(now) >= 0:
                return True
            return now[0] >= actions and now[1] >= decisions and quiet >= quiet_s

        wait_for(
            settled,
            timeout_s,
            f"{actions} actions and {decisions} decisions in PostgreSQL",
            poll_s=0.5,
            describe=lambda: f"rows (actions, decisions) {last}\n{self.tails()}",
        )

    def tails(self) -> str:
        return "\n".join(
            self.fleet.log_tail(f"{role}-{self.fleet.starts[role]}", 15)
            for role in self.fleet.starts
        )

    def close(self) -> None:
        self.fleet.stop_all()
