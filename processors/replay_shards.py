"""Sharded file replay: one file replayed by several processes, the output byte for byte
what one process writes.

A file replay spends nearly all its time in the engine, one customer at a time, and
customers meet only through their partition's watermark (DESIGN.md 5: a file is one
partition, or `--partitions N` like the worker). So each shard process reads every line,
applies the events of its own customers (a hash of the customer id picks the shard) and,
for every other line, only advances the watermark as that event would. Every timer then
fires at the same line as in one process, and the engine marks where each fired timer's
output begins (`Engine.marks`). The outputs are merged back into the one-process order:
by line; within a line the timers that fired, ordered by the shards' heads (deadline,
customer, rule, key: each shard's own sequence kept, which is exactly the order the one
engine's heap pops them in, timers set while firing included), then the line's own event.

A shard validates its own lines fully and, of the others, reads only the customer id and
the time (a line it cannot read that way it validates fully too). The first bad line any
shard finds is the first bad line of the file, so its error (`SchemaValidationError` with
file:line) is the one raised, as one process would. Anything else failing in a shard
falls back to the one-process replay. Needs the `fork` start method (Linux, macOS): the
shards inherit the engine instead of rebuilding it.
"""

from __future__ import annotations

import heapq
import marshal
import multiprocessing
import os
import zlib
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import orjson

from processors.engine import DictStore, Engine, EngineOutput
from schemas.codec import (
    SchemaValidationError,
    event_from_parsed,
    event_of_line,
    occurred_ms,
    to_json_lines,
)
from schemas.records import ActionEvent, Decision

#: Files smaller than this replay in one process (starting shards costs more than it saves).
MIN_SHARDED_BYTES: Final = 4 << 20
#: At most this many shards when the count is left to the machine.
MAX_AUTO_SHARDS: Final = 8
#: A group of a shard's output: (*key, shard, the count of the shard's actions and of its
#: decisions up to its end). The key is (line, 0, partition, deadline, customer, rule, key)
#: for a fired timer's output, (line, 1) for the output of the line's own event (line = lines
#: + 1 for `--until`'s timers); groups sort by it, as two shards never make the same key.
Group = tuple[Any, ...]
#: Events between two encodings of a shard's pending output.
_ENCODE_EVERY: Final = 4096


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def shard_count(workers: int | None, events_path: Path) -> int:
    """How many processes replay `events_path`: `workers` if given (0 or None: one per usable
    CPU, at most MAX_AUTO_SHARDS, for files of at least MIN_SHARDED_BYTES), 1 where processes
    cannot be forked."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if workers:
        return max(workers, 1)
    try:
        if events_path.stat().st_size < MIN_SHARDED_BYTES:
            return 1
    except OSError:
        return 1  # the one-process path raises the error a user should see
    return max(1, min(usable_cpus(), MAX_AUTO_SHARDS))


@dataclass(frozen=True, slots=True)
class ShardJob:
    """What every shard of one replay shares (inherited by the forked shard processes)."""

    events_path: Path
    engine: Engine
    partitions: int
    shards: int
    until_ms: int | None
    work: Path  # where shard processes leave their output


@dataclass(slots=True)
class ShardOutput:
    """One shard's output: its actions and decisions as JSON lines in its own order, and the
    groups that cut them for the merge."""

    actions: bytes
    decisions: bytes
    groups: list[Group]
    events: int  # own events applied
    action_count: int
    decided: int


class ShardedReplayFailed(Exception):
    """A shard failed other than on a bad line: the caller replays in one process."""


class _Shard:
    """The work of one shard: its stores, where each customer goes, its output."""

    def __init__(self, job: ShardJob, shard: int) -> None:
        self.job = job
        self.shard = shard
        self.stores = [DictStore() for _ in range(job.partitions)]
        self.marks: list[Any] = []
        self.placed: dict[str, tuple[bool, int]] = {}
        self.groups: list[Group] = []
        self.actions: list[ActionEvent] = []  # not yet encoded
        self.decisions: list[Decision] = []
        self.action_count = self.decision_count = 0
        self.encoded_actions = bytearray()
        self.encoded_decisions = bytearray()

    def place(self, customer_id: str) -> tuple[bool, int]:
        """(applied by this shard, partition) of a customer, worked out once."""
        from processors.replay import partition_for  # it imports this module

        job = self.job
        where = self.placed[customer_id] = (
            zlib.crc32(customer_id.encode()) % job.shards == self.shard,
            partition_for(customer_id, job.partitions) if job.partitions > 1 else 0,
        )
        return where

    def keep(self, out: EngineOutput, line: int, partition: int) -> None:
        """One call's output, cut into groups at its marks (see `Engine.marks`)."""
        marks = self.marks
        actions, decisions = out.actions, out.decisions
        if marks and marks[0][0] is None:  # no timer fired before the event: one group
            self.add(actions, decisions, (line, 1))
            return
        bounds: list[tuple[tuple[Any, ...], int, int]] = []
        for entry, a, d in marks:
            if entry is None:  # the event's own output runs to the end
                bounds.append(((line, 1), a, d))
                break
            bounds.append(((line, 0, partition, *entry), a, d))
        ends = [(a, d) for _, a, d in bounds[1:]] + [(len(actions), len(decisions))]
        for (key, a, d), (a_end, d_end) in zip(bounds, ends, strict=True):
            if a_end > a or d_end > d:
                self.add(actions[a:a_end], decisions[d:d_end], key)

    def add(
        self, actions: list[ActionEvent], decisions: list[Decision], key: tuple[Any, ...]
    ) -> None:
        self.actions += actions
        self.decisions += decisions
        self.action_count += len(actions)
        self.decision_count += len(decisions)
        self.groups.append((*key, self.shard, self.action_count, self.decision_count))

    def encode(self) -> None:
        if self.actions:
            self.encoded_actions += to_json_lines(self.actions)
            self.actions = []
        if self.decisions:
            self.encoded_decisions += to_json_lines(self.decisions)
            self.decisions = []

    def run(self) -> ShardOutput:
        job = self.job
        engine = job.engine
        engine.marks = marks = self.marks
        stores = self.stores
        placed = self.placed
        place = self.place
        keep = self.keep
        process = engine.process
        observe = engine.observe
        loads = orjson.loads
        events = lineno = 0
        with open(job.events_path, "rb") as lines:
            for lineno, raw in enumerate(lines, start=1):
                try:
                    obj = loads(raw)
                except orjson.JSONDecodeError:
                    obj = None
                if type(obj) is dict:
                    cid = obj.get("customer_id")
                    if type(cid) is str:
                        mine, partition = placed.get(cid) or place(cid)
                        if not mine:
                            # another shard's line: only its time, when the fast path reads it
                            t = occurred_ms(obj.get("occurred_at"))
                            if t is not None:
                                out = observe(stores[partition], t)
                                if out is not None:
                                    if out.actions or out.decisions:
                                        keep(out, lineno, partition)
                                    marks.clear()
                                continue
                    event = event_from_parsed(obj)
                else:
                    event = None
                if event is None:
                    event = event_of_line(raw, lineno, job.events_path)  # the error, or
                    if event is None:
                        continue  # a blank line
                mine, partition = placed.get(event.customer_id) or place(event.customer_id)
                if mine:
                    events += 1
                    out = process(stores[partition], event)
                    if not events % _ENCODE_EVERY:
                        self.encode()
                else:
                    observed = observe(stores[partition], event.occurred_at)
                    if observed is None:
                        continue
                    out = observed
                if out.actions or out.decisions:
                    keep(out, lineno, partition)
                marks.clear()
        if job.until_ms is not None:
            for partition, store in enumerate(stores):
                out = engine.advance_watermark(store, job.until_ms)
                if out.actions or out.decisions:
                    keep(out, lineno + 1, partition)
                marks.clear()
        engine.marks = None
        self.encode()
        return ShardOutput(
            bytes(self.encoded_actions),
            bytes(self.encoded_decisions),
            self.groups,
            events,
            self.action_count,
            engine.decided,
        )


def run_shard(job: ShardJob, shard: int) -> ShardOutput:
    """Replay the lines of `job.events_path` as shard `shard` of `job.shards` (see module)."""
    return _Shard(job, shard).run()


def _shard_files(work: Path, shard: int) -> tuple[Path, Path, Path]:
    stem = work / f"shard-{shard}"
    return stem.with_suffix(".actions"), stem.with_suffix(".decisions"), stem.with_suffix(".meta")


def _child_main(job: ShardJob, shard: int) -> None:
    """A forked shard: its output to files in `job.work`; a bad line's error in the meta file."""
    actions_path, decisions_path, meta_path = _shard_files(job.work, shard)
    from processors.replay import no_cyclic_gc

    try:
        with no_cyclic_gc():
            result = run_shard(job, shard)
    except SchemaValidationError as exc:
        meta_path.write_bytes(marshal.dumps(("bad line", exc.field, exc.message, exc.where)))
        return
    actions_path.write_bytes(result.actions)
    decisions_path.write_bytes(result.decisions)
    meta_path.write_bytes(
        marshal.dumps(("ok", result.groups, result.events, result.action_count, result.decided))
    )


def _child_output(job: ShardJob, shard: int) -> ShardOutput | SchemaValidationError:
    actions_path, decisions_path, meta_path = _shard_files(job.work, shard)
    try:
        meta = marshal.loads(meta_path.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        raise ShardedReplayFailed(f"shard {shard} left no result") from None
    if meta[0] == "bad line":
        return SchemaValidationError(meta[1], meta[2], meta[3])
    _, groups, events, action_count, decided = meta
    return ShardOutput(
        actions_path.read_bytes(),
        decisions_path.read_bytes(),
        groups,
        events,
        action_count,
        decided,
    )


def _line_of(error: SchemaValidationError) -> int:
    return int(error.where.rpartition(":")[2])


def replay_sharded(
    job: ShardJob, actions_file: IO[bytes], decisions_file: IO[bytes] | None
) -> tuple[int, int, int]:
    """Replay `job` with `job.shards` processes (this one is shard 0) and write the merged
    actions (and decisions) to the open files: (events, actions, decisions decided).

    Raises the `SchemaValidationError` of the file's first bad line, or
    `ShardedReplayFailed` when a shard failed otherwise."""
    from processors.replay import no_cyclic_gc

    context = multiprocessing.get_context("fork")
    children = [
        context.Process(target=_child_main, args=(job, shard), daemon=True)
        for shard in range(1, job.shards)
    ]
    outputs: list[ShardOutput | SchemaValidationError] = []
    with ExitStack() as cleanup:

        @cleanup.callback
        def _stop_children() -> None:
            for child in children:
                if child.is_alive():
                    child.terminate()
                child.join()

        for child in children:
            child.start()
        cleanup.enter_context(no_cyclic_gc())  # also while the shards' groups are read
        try:
            outputs.append(run_shard(job, 0))
        except SchemaValidationError as exc:
            outputs.append(exc)
        finally:
            job.engine.marks = None
        for child in children:
            child.join()
        for shard in range(1, job.shards):
            outputs.append(_child_output(job, shard))
        errors = [out for out in outputs if isinstance(out, SchemaValidationError)]
        if errors:
            raise min(errors, key=_line_of)
        results = [out for out in outputs if isinstance(out, ShardOutput)]
        _write_merged(results, actions_file, decisions_file)
    return (
        sum(r.events for r in results),
        sum(r.action_count for r in results),
        sum(r.decided for r in results),
    )


def _write_merged(
    results: list[ShardOutput], actions_file: IO[bytes], decisions_file: IO[bytes] | None
) -> None:
    """The shards' groups in the one-process order (see module), written as runs: groups
    that follow each other in one shard are one write."""
    actions = [r.actions.split(b"\n") for r in results]  # one record per line
    decisions = [r.decisions.split(b"\n") for r in results]
    a_start = [0] * len(results)
    d_start = [0] * len(results)
    run = -1  # the shard of the run being gathered
    a_end = d_end = 0

    def write_run() -> None:
        if a_end > a_start[run]:
            actions_file.write(b"\n".join(actions[run][a_start[run] : a_end]) + b"\n")
        if decisions_file is not None and d_end > d_start[run]:
            decisions_file.write(b"\n".join(decisions[run][d_start[run] : d_end]) + b"\n")
        a_start[run], d_start[run] = a_end, d_end

    for group in heapq.merge(*(r.groups for r in results)):
        shard = group[-3]
        if shard != run:
            if run >= 0:
                write_run()
            run = shard
        a_end, d_end = group[-2], group[-1]
    if run >= 0:
        write_run()
