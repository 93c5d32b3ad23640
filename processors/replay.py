"""Offline replay: the same trigger engine as the worker, over a file of events, no broker.

`replay_file` reads InteractionEvent JSON lines, runs the engine with one
state store (and so one watermark) per partition, exactly as the worker
does, and writes the actions and decisions as JSON lines (and, with `late_out`, the
events the engine found too late to apply, in their JSON form; with `status_out`, the
changes of the actions' statuses, the records the worker sends to `action-status`). Events go to
partitions like a Kafka producer keyed by customer_id would send them
(`processors.offline.partition_for`). `Replayer` is the same loop for any
iterable of events (topic backfills, shadow runs of a new pack).

A file of a few MB or more is shared between processes (`replay_file(workers=)`,
`processors.replay_shards`): the same bytes as this one-process loop, which stays
the reference. Output is deterministic: no wall clock, no randomness, the same
input gives the same bytes. Files are written next to their target and renamed into
place only when the whole input was processed, so a bad line never leaves a
half-written result behind. This module never talks to Kafka.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Final

from common.memory import no_cyclic_gc
from processors.engine import DictStore, Engine, EngineConfig, EngineOutput, load_rule_pack
from processors.engine.rules import RulePack
from processors.offline import partition_for
from processors.replay_shards import ShardedReplayFailed, ShardJob, replay_sharded, shard_count
from schemas.codec import read_events_jsonl, to_json_line, to_json_lines
from schemas.records import ActionEvent, ActionStatus, Decision, InteractionEvent

#: Events between two writes of the outputs of a replay.
WRITE_EVERY: Final = 4096


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    """What a replay did (seconds is the only non-deterministic number, and it is not written)."""

    events: int
    actions: int
    decisions: int
    partitions: int
    seconds: float
    workers: int = 1  # processes that shared the work
    #: Events too late to apply (older than the watermark minus the max lateness), as the
    #: one-process loop counts them (a sharded replay leaves 0).
    too_late: int = 0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class Replayer:
    """Feeds events to one engine with one DictStore per partition (keyed like Kafka).

    `changes` (time, pack) are rule pack switches (docs/design.md 8.4, `replay --rules-change`):
    a switch happens before the first event with occurred_at >= its time is applied (the
    watermark advances and due timers fire under the old pack, then the pack switches,
    then the event is applied under the new one), or in `finish` at its time when the
    clock is advanced past it.
    """

    def __init__(
        self,
        engine: Engine,
        partitions: int = 1,
        changes: Iterable[tuple[int, RulePack]] = (),
    ) -> None:
        if partitions < 1:
            raise ValueError(f"partitions: expected at least 1, got {partitions}")
        self.engine = engine
        self.partitions = partitions
        self.stores = [DictStore() for _ in range(partitions)]
        self._partition_of: dict[str, int] = {}
        self._changes = sorted(changes, key=lambda change: change[0])
        self._next_switch = self._changes[0][0] if self._changes else None

    def switch(self, at: int) -> EngineOutput:
        """Switch every partition to the next pack; decisions of the switch carry `at` (its
        time as given)."""
        _, pack = self._changes.pop(0)
        self.engine, out = self.engine.switch_pack(self.stores, pack, at)
        self._next_switch = self._changes[0][0] if self._changes else None
        return out

    def store_for(self, customer_id: str) -> DictStore:
        if self.partitions == 1:
            return self.stores[0]
        index = self._partition_of.get(customer_id)
        if index is None:
            index = self._partition_of[customer_id] = partition_for(customer_id, self.partitions)
        return self.stores[index]

    def feeder(self) -> Callable[[InteractionEvent], EngineOutput]:
        """`feed`, or with one partition and no switch to come the engine's own `process` on
        the one store (the same calls, without `feed`'s interpreted ones per event)."""
        if self.partitions == 1 and self._next_switch is None:
            return partial(self.engine.process, self.stores[0])
        return self.feed

    def feed(self, event: InteractionEvent) -> EngineOutput:
        if self._next_switch is not None and event.occurred_at >= self._next_switch:
            return self._switch_then_feed(event)
        return self.engine.process(self.store_for(event.customer_id), event)

    def _switch_then_feed(self, event: InteractionEvent) -> EngineOutput:
        store = self.store_for(event.customer_id)
        out = self.engine.advance(store, event.occurred_at)  # due timers, old pack
        while self._next_switch is not None and event.occurred_at >= self._next_switch:
            out.extend(self.switch(self._next_switch))
        out.extend(self.engine.process(store, event))
        return out

    def finish(self, until_ms: int | None = None) -> EngineOutput:
        """Set every partition's watermark to `until_ms` (if given), firing due timers; a
        switch not yet reached with a time at or before it happens at that time."""
        out = EngineOutput()
        if until_ms is not None:
            while self._next_switch is not None and self._next_switch <= until_ms:
                at = self._next_switch
                for store in self.stores:
                    out.extend(self.engine.advance_watermark(store, at))
                out.extend(self.switch(at))
            for store in self.stores:
                out.extend(self.engine.advance_watermark(store, until_ms))
        return out


def replay_file(
    events_path: Path | str,
    *,
    actions_out: Path | str,
    decisions_out: Path | str | None = None,
    rules_path: Path | str | None = None,
    until_ms: int | None = None,
    partitions: int = 1,
    config: EngineConfig | None = None,
    pack: RulePack | None = None,
    changes: Iterable[tuple[int, RulePack]] = (),
    workers: int | None = None,
    late_out: Path | str | None = None,
    status_out: Path | str | None = None,
) -> ReplaySummary:
    """Replay a JSONL file of events through the engine and write actions (and decisions).

    `workers` processes share the work (`processors.replay_shards`; the same bytes as one
    process): None or 0 for one per usable CPU on a file of a few MB or more, 1 for this
    process alone. A replay with `changes`, `late_out` or `status_out` runs in one process.
    `late_out` receives, in file order, the JSON line of every event the engine found too
    late to apply (older than its partition's watermark minus the max lateness);
    `status_out` every change of an action's status (docs/design.md 12), in the order the
    engine made them, as the worker sends them to `action-status`.
    Raises `schemas.codec.SchemaValidationError` naming file:line for a bad line and
    `RulePackError` for a bad rule pack; in both cases no output file is created.
    """
    started = time.perf_counter()
    engine = Engine(
        pack or load_rule_pack(rules_path),
        config or EngineConfig(),
        decisions=decisions_out is not None,  # nobody reads them otherwise: skip building them
    )
    changes = list(changes)
    # too-late events are found (and written in file order) by the one-process loop
    one_process = bool(changes) or late_out is not None or status_out is not None
    shards = 1 if one_process else shard_count(workers, Path(events_path))
    replayer = Replayer(engine, partitions, changes)
    targets = [Path(actions_out)] + ([Path(decisions_out)] if decisions_out is not None else [])
    outputs = len(targets)  # the actions' and decisions' files, then the late events'
    if late_out is not None:
        targets.append(Path(late_out))
    if status_out is not None:
        targets.append(Path(status_out))
    temps = [t.with_name(f".{t.name}.partial") for t in targets]
    handles: list[IO[bytes]] = []
    events = actions = too_late = 0
    try:
        for temp in temps:
            handles.append(open(temp, "wb", buffering=1 << 20))  # noqa: SIM115
        late_file = handles[outputs] if late_out is not None else None
        status_file = handles[-1] if status_out is not None else None
        sharded = None
        if shards > 1:
            sharded = _replay_sharded(
                engine, Path(events_path), partitions, shards, until_ms, temps[0], handles
            )
        if sharded is not None:
            events, actions, decided = sharded
        else:  # one process: this loop
            shards = 1
            sink = OutputWriter(handles[0], handles[1] if outputs > 1 else None, status_file)
            with no_cyclic_gc():
                feed = replayer.feeder()
                # outputs are encoded and written once per WRITE_EVERY events
                pending_actions: list[ActionEvent] = []
                pending_decisions: list[Decision] = []
                pending_statuses: list[ActionStatus] = []
                for event in read_events_jsonl(events_path):
                    events += 1
                    out = feed(event)
                    if out.too_late:  # not applied: no output, kept in late_out
                        too_late += 1
                        if late_file is not None:
                            late_file.write(to_json_line(event).encode("utf-8") + b"\n")
                    if out.actions:
                        pending_actions += out.actions
                    if out.decisions:
                        pending_decisions += out.decisions
                    if out.statuses:
                        pending_statuses += out.statuses
                    if not events % WRITE_EVERY:
                        sink.write_records(pending_actions, pending_decisions, pending_statuses)
                        pending_actions, pending_decisions, pending_statuses = [], [], []
                sink.write_records(pending_actions, pending_decisions, pending_statuses)
                sink.write(replayer.finish(until_ms))
            actions, decided = sink.actions, replayer.engine.decided
        for handle in handles:
            handle.close()
        for temp, target in zip(temps, targets, strict=True):
            os.replace(temp, target)
    finally:
        for handle in handles:
            handle.close()
        for temp in temps:
            temp.unlink(missing_ok=True)
    return ReplaySummary(
        events=events,
        actions=actions,
        decisions=decided,
        partitions=partitions,
        seconds=time.perf_counter() - started,
        workers=shards,
        too_late=too_late,
    )


def _replay_sharded(
    engine: Engine,
    events_path: Path,
    partitions: int,
    shards: int,
    until_ms: int | None,
    near: Path,
    handles: list[IO[bytes]],
) -> tuple[int, int, int] | None:
    """`replay_sharded` into the open output files: (events, actions, decided), or None
    (the files emptied again) when a shard failed other than on a bad line."""
    with tempfile.TemporaryDirectory(prefix=".moments-replay-", dir=near.parent) as work:
        job = ShardJob(events_path, engine, partitions, shards, until_ms, Path(work))
        try:
            return replay_sharded(job, handles[0], handles[1] if len(handles) > 1 else None)
        except ShardedReplayFailed:
            for handle in handles:
                handle.seek(0)
                handle.truncate()
            return None


class OutputWriter:
    """Writes engine output as JSON lines (`to_json_line` bytes + newline) to binary files."""

    def __init__(
        self,
        actions_file: IO[bytes] | None,
        decisions_file: IO[bytes] | None = None,
        statuses_file: IO[bytes] | None = None,
    ) -> None:
        self.actions_file = actions_file
        self.decisions_file = decisions_file
        self.statuses_file = statuses_file
        self.actions = 0
        self.decisions = 0
        self.statuses = 0

    def write(self, out: EngineOutput) -> None:
        self.write_records(out.actions, out.decisions, out.statuses)

    def write_records(
        self,
        actions: list[ActionEvent],
        decisions: list[Decision],
        statuses: list[ActionStatus] | None = None,
    ) -> None:
        """Many outputs at once (a backfill batch): one file write per kind."""
        if statuses:
            self.statuses += len(statuses)
            if self.statuses_file is not None:
                self.statuses_file.write(to_json_lines(statuses))
        if actions:
            self.actions += len(actions)
            if self.actions_file is not None:
                self.actions_file.write(to_json_lines(actions))
        if decisions:
            self.decisions += len(decisions)
            if self.decisions_file is not None:
                self.decisions_file.write(to_json_lines(decisions))


def replay_events(
    events: Iterable[InteractionEvent],
    *,
    engine: Engine | None = None,
    pack: RulePack | None = None,
    rules_path: Path | str | None = None,
    partitions: int = 1,
    until_ms: int | None = None,
    config: EngineConfig | None = None,
    changes: Iterable[tuple[int, RulePack]] = (),
) -> tuple[list[ActionEvent], list[Decision]]:
    """All actions and decisions for a sequence of events (demo expectations, tests, shadow runs).

    Pass a ready `engine`, or a `pack` / `rules_path` (default pack) and a `config`.
    """
    if engine is None:
        engine = Engine(pack or load_rule_pack(rules_path), config or EngineConfig())
    replayer = Replayer(engine, partitions, changes)
    out = EngineOutput()
    for event in events:
        out.extend(replayer.feed(event))
    out.extend(replayer.finish(until_ms))
    return out.actions, out.decisions
