"""Sharded file replay: one file replayed by several processes, the output byte for byte
what one process writes.

A file replay spends nearly all its time in the engine, one customer at a time, and
customers meet only through their partition's watermark (docs/design.md 5.3: a file is one
partition, or `--partitions N` like the worker). So each shard process reads every line,
applies the events of its own customers (a hash of the customer id picks the shard) and,
for every other line, only advances the watermark as that event would. Every timer then
fires at the same line as in one process, and the engine marks where each fired timer's
output begins (`Engine.marks`). The outputs are merged back into the one-process order:
by line; within a line the timers that fired, ordered by the shards' heads (deadline,
customer, rule, key: each shard's own sequence kept, which is exactly the order the one
engine's heap pops them in, timers set while firing included), then the line's own event.

A shard validates its own lines fully and, of the others, reads only the customer id and
the time (a line it cannot read that way it validates fully too). The earliest of the bad
lines the shards stop at is the file's first bad line, so its error
(`SchemaValidationError` with file:line) is the one raised, as one process would; the
other shards stop soon after reading past it (`ShardJob.bad_line`). Anything else failing
in a shard falls back to the one-process replay. Needs the `fork` start method (Linux,
macOS): the shards inherit the engine instead of rebuilding it, and end with the process
that forked them.
"""

from __future__ import annotations

import ctypes
import heapq
import io
import itertools
import marshal
import mmap
import multiprocessing
import multiprocessing.connection
import operator
import os
import signal
import stat
import zlib
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Final

import orjson

from common.memory import no_cyclic_gc
from processors.engine import DictStore, Engine, EngineOutput
from processors.offline import partition_for
from schemas.codec import (
    SchemaValidationError,
    append_json_lines,
    event_from_parsed,
    event_of_line,
    occurred_ms,
)
from schemas.records import ActionEvent, Decision

#: Files smaller than this replay in one process (starting shards costs more than it saves).
MIN_SHARDED_BYTES: Final = 4 << 20
#: At most this many shards when the count is left to the machine.
MAX_AUTO_SHARDS: Final = 8
_NO_BAD_LINE: Final = 2**63 - 1
#: A group of a shard's output: (*key, shard, the count of the shard's actions and of its
#: decisions up to its end). The key is (line, 0, partition, deadline, customer, rule, key)
#: for a fired timer's output, (line, 1) for the output of the line's own event (line = lines
#: + 1 for `--until`'s timers); groups sort by it, as two shards never make the same key.
Group = tuple[Any, ...]


def _iov_max() -> int:
    """Pieces per `os.writev` call: the system's limit, at most 1024 (POSIX allows 16)."""
    try:
        limit = os.sysconf("SC_IOV_MAX")
    except (AttributeError, ValueError, OSError):
        return 16
    return min(limit, 1024) if limit >= 16 else 16


_WRITEV_PIECES: Final = _iov_max()
#: A group's (shard, action count, decision count).
_GROUP_TAIL: Final = operator.itemgetter(-3, -2, -1)
#: Events between two encodings of a shard's pending output.
_ENCODE_EVERY: Final = 4096


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def shard_count(workers: int | None, events_path: Path) -> int:
    """How many processes replay `events_path`: `workers` if given (0 or None: one per usable
    CPU, at most MAX_AUTO_SHARDS, for files of at least MIN_SHARDED_BYTES); 1 where processes
    cannot be forked (no `fork`, a daemonic process) or the events are not a regular file (a
    pipe is read once: the shards cannot each read it)."""
    if (
        "fork" not in multiprocessing.get_all_start_methods()
        or multiprocessing.current_process().daemon
    ):
        return 1
    try:
        status = events_path.stat()
    except OSError:
        return 1  # the one-process path raises the error a user should see
    if not stat.S_ISREG(status.st_mode):
        return 1
    if workers:
        return max(workers, 1)
    if status.st_size < MIN_SHARDED_BYTES:
        return 1
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
    #: The earliest bad line a shard has stopped at, shared (a `RawValue`) so the others stop
    #: once past it: nothing after it can change what is raised. None: not shared.
    bad_line: Any = None


#: What a shard hands the merge besides its files: (action ends, decision ends, groups, own
#: events applied, actions, decisions decided).
ShardMeta = tuple[list[int], list[int], list[Group], int, int, int]


@dataclass(slots=True)
class ShardOutput:
    """One shard's output: its actions and decisions as JSON lines in its own order (its
    files, mapped), and the groups that cut them for the merge."""

    actions: bytes | mmap.mmap
    decisions: bytes | mmap.mmap
    action_ends: list[int]  # where each action's line ends in `actions`
    decision_ends: list[int]
    groups: list[Group]
    events: int  # own events applied
    action_count: int
    decided: int


class _ShardFile:
    """One output file of a shard, written as the output is encoded: the bytes so far and
    where each record's line ends in the file."""

    def __init__(self, descriptor: int) -> None:
        self.descriptor = descriptor
        self.written = 0
        self.ends: list[int] = []
        self.lines = bytearray()  # reused for every batch

    def append(self, records: list[Any]) -> None:
        if not records:
            return
        lines = self.lines
        append_json_lines(lines, records, self.ends, self.written)
        _write_all(self.descriptor, memoryview(lines), 0)
        self.written += len(lines)
        del lines[:]


def _write_all(descriptor: int, data: memoryview, done: int) -> None:
    """Write `data` from `done` on, however short the system cuts each write."""
    with data:
        size = data.nbytes
        while done < size:
            done += os.write(descriptor, data[done:])


class ShardedReplayFailed(Exception):
    """A shard failed other than on a bad line: the caller replays in one process."""


class _PastABadLine(Exception):
    """A shard read past a line another shard found bad: it stops, its output unwanted."""


class _Shard:
    """The work of one shard: its stores, where each customer goes, its output (written to
    its files as it is encoded, so that little is left to write when the shard ends)."""

    def __init__(self, job: ShardJob, shard: int, actions_fd: int, decisions_fd: int) -> None:
        self.job = job
        self.shard = shard
        self.stores = [DictStore() for _ in range(job.partitions)]
        self.marks: list[Any] = []
        self.placed: dict[str, tuple[bool, int]] = {}
        self.groups: list[Group] = []
        self.actions: list[ActionEvent] = []  # not yet encoded
        self.decisions: list[Decision] = []
        self.actions_file = _ShardFile(actions_fd)
        self.decisions_file = _ShardFile(decisions_fd)

    def place(self, customer_id: str) -> tuple[bool, int]:
        """(applied by this shard, partition) of a customer, worked out once (an id with a
        lone surrogate, which the JSON form lets through, hashes too)."""
        job = self.job
        where = self.placed[customer_id] = (
            zlib.crc32(customer_id.encode("utf-8", "surrogatepass")) % job.shards == self.shard,
            partition_for(customer_id, job.partitions) if job.partitions > 1 else 0,
        )
        return where

    def cut(
        self, out: EngineOutput, line: int, partition: int, counts: tuple[int, int]
    ) -> tuple[int, int]:
        """Keep one call's output cut into groups at its marks (see `Engine.marks`); the
        shard's action and decision counts after it."""
        actions, decisions = out.actions, out.decisions
        bounds: list[tuple[tuple[Any, ...], int, int]] = []
        for entry, a, d in self.marks:
            if entry is None:  # the event's own output runs to the end
                bounds.append(((line, 1), a, d))
                break
            bounds.append(((line, 0, partition, *entry), a, d))
        ends = [(a, d) for _, a, d in bounds[1:]] + [(len(actions), len(decisions))]
        a_count, d_count = counts
        for (key, a, d), (a_end, d_end) in zip(bounds, ends, strict=True):
            if a_end > a or d_end > d:
                self.actions += actions[a:a_end]
                self.decisions += decisions[d:d_end]
                a_count += a_end - a
                d_count += d_end - d
                self.groups.append((*key, self.shard, a_count, d_count))
        return a_count, d_count

    def encode(self) -> None:
        """Encode the pending output to the files (the lists are emptied in place: the loop
        holds them)."""
        self.actions_file.append(self.actions)
        del self.actions[:]
        self.decisions_file.append(self.decisions)
        del self.decisions[:]

    def run(self) -> ShardMeta:
        job = self.job
        engine = job.engine
        engine.marks = marks = self.marks
        shard = self.shard
        stores = self.stores
        placed = self.placed
        place = self.place
        cut = self.cut
        pending_actions, pending_decisions = self.actions, self.decisions
        add_group = self.groups.append
        process = engine.process
        observe = engine.observe
        loads = orjson.loads
        crc32 = zlib.crc32
        shards = job.shards
        one_partition = job.partitions == 1
        bad_line = job.bad_line
        events = lineno = a_count = d_count = 0
        with open(job.events_path, "rb") as lines:
            for lineno, raw in enumerate(lines, start=1):
                if not lineno & 4095 and bad_line is not None and lineno > bad_line.value:
                    raise _PastABadLine
                try:
                    obj = loads(raw)
                except orjson.JSONDecodeError:
                    obj = None
                event = None
                partition = 0
                other_time = None  # another shard's line: the time its event moves the clock to
                if type(obj) is dict:
                    cid = obj.get("customer_id")
                    if type(cid) is str:
                        if one_partition:
                            # hashed on every line: cheaper than looking up a cache of every
                            # customer, whose misses cost more than the hash
                            try:
                                mine = crc32(cid.encode()) % shards == shard
                            except UnicodeEncodeError:  # a lone surrogate (see `place`)
                                mine = place(cid)[0]
                        else:
                            mine, partition = placed.get(cid) or place(cid)
                        if mine:
                            event = event_from_parsed(obj)
                        else:  # only its time, when the fast path reads it
                            other_time = occurred_ms(obj.get("occurred_at"))
                if event is None and other_time is None:
                    # the general path: the line's error, or its event
                    event = event_of_line(raw, lineno, job.events_path)
                    if event is None:
                        continue  # a blank line
                    mine, partition = placed.get(event.customer_id) or place(event.customer_id)
                    if not mine:
                        other_time = event.occurred_at
                if other_time is not None:
                    observed = observe(stores[partition], other_time)
                    if observed is not None:
                        if observed.actions or observed.decisions:
                            a_count, d_count = cut(observed, lineno, partition, (a_count, d_count))
                        marks.clear()
                    continue
                assert event is not None  # a line of this shard
                events += 1
                out = process(stores[partition], event)
                if out.actions or out.decisions:
                    if marks[0][0] is None:  # no timer fired before the event: one group
                        pending_actions += out.actions
                        pending_decisions += out.decisions
                        a_count += len(out.actions)
                        d_count += len(out.decisions)
                        add_group((lineno, 1, shard, a_count, d_count))
                    else:
                        a_count, d_count = cut(out, lineno, partition, (a_count, d_count))
                    if len(pending_actions) >= _ENCODE_EVERY:
                        self.encode()
                marks.clear()
        if job.until_ms is not None:
            for partition, store in enumerate(stores):
                out = engine.advance_watermark(store, job.until_ms)
                if out.actions or out.decisions:
                    a_count, d_count = cut(out, lineno + 1, partition, (a_count, d_count))
                marks.clear()
        engine.marks = None
        self.encode()
        return (
            self.actions_file.ends,
            self.decisions_file.ends,
            self.groups,
            events,
            a_count,
            engine.decided,
        )


def _note_bad_line(job: ShardJob, error: SchemaValidationError) -> None:
    """Tell the other shards the line this one stopped at, if it is the earliest yet."""
    shared = job.bad_line
    if shared is not None and _line_of(error) < shared.value:
        shared.value = _line_of(error)  # a race only lets the others read a little further


def _shard_files(work: Path, shard: int) -> tuple[Path, Path, Path]:
    stem = work / f"shard-{shard}"
    return stem.with_suffix(".actions"), stem.with_suffix(".decisions"), stem.with_suffix(".meta")


def _child_main(job: ShardJob, shard: int) -> None:
    """A forked shard: its output to files in `job.work`; a bad line's error in the meta file."""
    actions_path, decisions_path, meta_path = _shard_files(job.work, shard)
    end_with_parent()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    with ExitStack() as files:
        actions_fd = os.open(actions_path, flags, 0o600)
        files.callback(os.close, actions_fd)
        decisions_fd = os.open(decisions_path, flags, 0o600)
        files.callback(os.close, decisions_fd)
        work = _Shard(job, shard, actions_fd, decisions_fd)
        # The shard's state is never freed: the process ends (`os._exit`) once its output
        # is written, and freeing hundreds of thousands of customers' states one by one
        # would only delay the output the replay waits for.
        _KEPT_TO_THE_END.append(work)
        try:
            with no_cyclic_gc():
                meta = work.run()
        except SchemaValidationError as exc:
            _note_bad_line(job, exc)
            meta_path.write_bytes(marshal.dumps(("bad line", exc.field, exc.message, exc.where)))
            return
        except _PastABadLine:
            meta_path.write_bytes(marshal.dumps(("past a bad line",)))
            return
    meta_path.write_bytes(marshal.dumps(("ok", *meta)))
    _KEPT_TO_THE_END.append(meta)


#: What a shard process keeps until it ends (see `_child_main`).
_KEPT_TO_THE_END: list[Any] = []


def stop_children(children: list[Any]) -> None:
    """Stop and reap the forked processes that still run (those never started are skipped)."""
    for child in children:
        if child.pid is None:
            continue
        if child.is_alive():
            child.terminate()
        child.join()


def end_with_parent() -> None:
    """Have the kernel end this shard when the process that forked it dies (Linux's
    PR_SET_PDEATHSIG; elsewhere nothing): a killed replay leaves no shard running on."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call above
        os._exit(1)


def _child_output(job: ShardJob, shard: int) -> ShardOutput | SchemaValidationError | None:
    actions_path, decisions_path, meta_path = _shard_files(job.work, shard)
    try:
        meta = marshal.loads(meta_path.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        raise ShardedReplayFailed(f"shard {shard} left no result") from None
    if meta[0] == "bad line":
        return SchemaValidationError(meta[1], meta[2], meta[3])
    if meta[0] == "past a bad line":
        return None
    return ShardOutput(_mapped(actions_path), _mapped(decisions_path), *meta[1:])


def _mapped(path: Path) -> bytes | mmap.mmap:
    """A shard's output file, mapped rather than copied (the merge writes slices of it)."""
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            return b""  # an empty file cannot be mapped
        return mmap.mmap(
            file.fileno(),
            0,
            flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
            prot=mmap.PROT_READ,
        )


def _line_of(error: SchemaValidationError) -> int:
    return int(error.where.rpartition(":")[2])


def replay_sharded(
    job: ShardJob, actions_file: IO[bytes], decisions_file: IO[bytes] | None
) -> tuple[int, int, int]:
    """Replay `job` with `job.shards` processes and write the merged
    actions (and decisions) to the open files: (events, actions, decisions decided).

    Raises the `SchemaValidationError` of the file's first bad line, or
    `ShardedReplayFailed` when a shard failed otherwise."""
    context = multiprocessing.get_context("fork")
    job = replace(job, bad_line=context.RawValue("q", _NO_BAD_LINE))
    # Every shard is a process of its own, this one only merges: a shard ends without
    # freeing its state (see `_child_main`), which this process would have to do.
    children = [
        context.Process(target=_child_main, args=(job, shard), daemon=True)
        for shard in range(job.shards)
    ]
    with ExitStack() as cleanup:
        cleanup.callback(stop_children, children)
        try:
            for child in children:
                child.start()
        except (OSError, AssertionError) as exc:  # no fork now (EAGAIN, ENOMEM): one process
            raise ShardedReplayFailed(f"a shard could not start: {exc!r}") from exc
        cleanup.enter_context(no_cyclic_gc())  # while the shards' groups are read
        # each shard's output is read as soon as it ends, while the others still run
        running = {child.sentinel: shard for shard, child in enumerate(children)}
        ended: dict[int, ShardOutput | SchemaValidationError | None] = {}
        while running:
            for sentinel in multiprocessing.connection.wait(list(running)):
                shard = running.pop(sentinel)  # type: ignore[arg-type]
                ended[shard] = _child_output(job, shard)
        outputs = [ended[shard] for shard in range(job.shards)]
        errors = [out for out in outputs if isinstance(out, SchemaValidationError)]
        if errors:
            raise min(errors, key=_line_of)
        results = [out for out in outputs if isinstance(out, ShardOutput)]
        if len(results) < len(outputs):  # a shard stopped, yet nobody found a bad line
            raise ShardedReplayFailed("a shard stopped early")
        _write_merged(results, actions_file, decisions_file)
    return (
        sum(r.events for r in results),
        sum(r.action_count for r in results),
        sum(r.decided for r in results),
    )


def _write_merged(
    results: list[ShardOutput], actions_file: IO[bytes], decisions_file: IO[bytes] | None
) -> None:
    """The shards' records in the one-process order (see module).

    Usually each shard's groups are already in key order (a timer that fires sets no
    earlier one) and one sort, which finds those runs, merges them; otherwise the merge
    takes the shards' heads in turn."""
    groups = [r.groups for r in results]
    if all(all(map(operator.lt, g, g[1:])) for g in groups):
        merged: Iterable[Group] = sorted(itertools.chain.from_iterable(groups))
    else:
        merged = heapq.merge(*groups)
    action_texts = [memoryview(r.actions) for r in results]
    decision_texts = [memoryview(r.decisions) for r in results]
    action_ends = [[0, *r.action_ends] for r in results]  # by record count
    decision_ends = [[0, *r.decision_ends] for r in results]
    starts = [(0, 0)] * len(results)
    actions: list[memoryview] = []
    decisions: list[memoryview] = []

    def take(shard: int, a_end: int, d_end: int) -> None:
        """The records of `shard` since its last run up to these counts."""
        a_start, d_start = starts[shard]
        ends = action_ends[shard]
        actions.append(action_texts[shard][ends[a_start] : ends[a_end]])
        if decisions_file is not None:
            ends = decision_ends[shard]
            decisions.append(decision_texts[shard][ends[d_start] : ends[d_end]])
        starts[shard] = (a_end, d_end)

    run = -1  # the shard whose consecutive groups are being gathered
    a_end = d_end = 0
    for shard, a_count, d_count in map(_GROUP_TAIL, merged):
        if shard != run:
            if run >= 0:
                take(run, a_end, d_end)
            run = shard
        a_end, d_end = a_count, d_count
    if run >= 0:
        take(run, a_end, d_end)
    _write_pieces(actions_file, actions)
    if decisions_file is not None:
        _write_pieces(decisions_file, decisions)


def _write_pieces(file: IO[bytes], pieces: list[memoryview]) -> None:
    """Write `pieces` in order: to the file's descriptor as they are (`os.writev`), rather
    than joined first into one copy of the whole output."""
    try:
        descriptor = file.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):  # not a file of the system's
        file.write(b"".join(pieces))
        return
    file.flush()
    for start in range(0, len(pieces), _WRITEV_PIECES):
        batch = pieces[start : start + _WRITEV_PIECES]
        written = os.writev(descriptor, batch)
        size = sum(piece.nbytes for piece in batch)
        if written < size:  # a short write (rare on a regular file): the rest one by one
            _write_all(descriptor, memoryview(b"".join(batch)), written)
