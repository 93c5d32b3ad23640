"""Live pack switches, one partition at a time (docs/design.md 8.3): the pure core of the worker's
rules follower. Knows no Kafka, no Faust, no clock.

A host learns of a newly published pack between two batches and calls
`request_switch` on each partition it handles. The partition then switches
exactly as `moments replay --rules-change TS=FILE` does, with TS = the
partition's max occurred_at at the request + 1 ms (so an in-order stream
switches at its very next event): before the first event at or after TS is
applied, its watermark advances and due timers fire under the old pack, then
the pack switches (`Engine.switch_pack`), then the event is applied under the
new one (`feed`). An idle tick whose time reaches TS switches the same way
(`tick`, like `replay --until`). A partition that has seen no event switches
at once: it has nothing to carry over.

Every partition keeps its lineage in ONE state value (`LINE_KEY`, one changelog
record, so it is written all or nothing): the pack it runs, a switch it waits
for, how many switches it made and, per rule id, the last switch that changed or
dropped it (all `Engine.migrate` needs of the switches a customer's state has not
seen), the earlier rule versions its timers and deferred candidates still refer
to (rule, version, pack id), and the YAML of exactly the packs named there, each
once, compressed. At every switch the versions nothing refers to any more are
pruned, and their packs with them, so the value stays bounded however often
packs are published. A restarted or rebalanced host rebuilds from it an engine
that behaves exactly as the one the partition had (`PackLibrary.engine`), so a
timer set under an old rule version still fires under that version. Rolling back
is switching to an earlier pack again. A pack text missing from the value (state
written before this layout, or damaged) is a clear, recoverable error: logged,
and the partition goes on with what is known (`PackLibrary.load`).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import zlib
from dataclasses import dataclass, field
from typing import Any, Final

from processors.engine.arbitration import HOLD_TIMER, QUEUE_TIMER
from processors.engine.candidates import NO_CONTEXT
from processors.engine.core import Engine
from processors.engine.interfaces import CLOCK_KEY, EngineConfig, EngineOutput, StateStore
from processors.engine.kinds import timer_version
from processors.engine.lifecycle import compare_packs, version_problems
from processors.engine.rules import RulePack, RulePackError, pack_from_text
from processors.engine.runtime import RuleRuntime
from processors.engine.state import (
    CLOCK_MAX,
    CUSTOMER_PREFIX,
    LINE_KEY,
    PACK_KEY,
    RULES,
    TEXTS_KEY,
    WAITING,
    WAITING_RULE,
    WAITING_VERSION,
)
from processors.engine.timers import all_timers
from schemas.records import InteractionEvent

log = logging.getLogger(__name__)

#: The layout of `LINE_KEY` this module writes (1: a chain of every pack run, and their
#: YAML under `TEXTS_KEY`; read and converted).
LINE_LAYOUT: Final = 2
#: Switches a lineage remembers (`Lineage.recent`).
RECENT_SWITCHES: Final = 16
#: Engines a library keeps built (each lineage's; a switch makes new ones).
_ENGINES_KEPT: Final = 256
#: The most compressed pack text one lineage keeps (its changelog record stays well under a
#: broker's 1 MB): beyond it the oldest earlier versions are let go, their timers then fire
#: under the current version (never lost).
MAX_LINE_TEXT_BYTES: Final = 512 * 1024


def pack_id(text: str) -> str:
    """A pack's identity: the sha256 of its YAML text (16 hex digits; a rollback has the
    id of the pack it restores)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def refusal(current: RulePack, new: RulePack, new_id: str, known: set[str]) -> list[str]:
    """Why a host must not switch from `current` to `new` (empty: it may): what
    `moments rules check OLD NEW` refuses, unless `new` is a pack run before (a rollback,
    which `moments rules rollback` publishes unchecked)."""
    if new_id in known:
        return []
    return version_problems(current, new)


@dataclass(frozen=True, slots=True)
class Lineage:
    """What one partition runs and what of its earlier packs it still needs.

    `head` is the pack it runs; `pending` the switch it waits for (pack id, TS) if any;
    `epoch` the switches it made; `changed` / `dropped` the last switch (0-based) that
    changed / removed or added each rule id; `retired` the earlier rule versions its
    timers or deferred candidates refer to, as (rule id, version, pack id).
    """

    head: str
    pending: tuple[str, int] | None = None
    epoch: int = 0
    changed: tuple[tuple[str, int], ...] = ()
    dropped: tuple[tuple[str, int], ...] = ()
    retired: tuple[tuple[str, int, str], ...] = ()
    #: The last `RECENT_SWITCHES` switches, oldest first, as (from pack, to pack, TS):
    #: what `replay --rules-change` needs to reproduce them (no part of the engine).
    recent: tuple[tuple[str, str, int], ...] = ()
    #: What makes two partitions' engines the same (the engine cache's key: a str, whose
    #: hash Python keeps, since it is looked up on every event).
    key: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        key = repr((self.head, self.epoch, self.changed, self.dropped, self.retired))
        object.__setattr__(self, "key", key)

    @property
    def chain(self) -> tuple[str, ...]:
        """The packs kept: those earlier versions come from, oldest reference first, then
        the head."""
        earlier = dict.fromkeys(pid for _, _, pid in self.retired if pid != self.head)
        return (*earlier, self.head)

    @property
    def goal(self) -> str:
        """The pack the partition runs once its pending switch happened."""
        return self.head if self.pending is None else self.pending[0]

    @property
    def packs(self) -> set[str]:
        """Every pack this lineage names (the texts its state value keeps)."""
        return {*self.chain, *([self.pending[0]] if self.pending else [])}


class MissingPack(Exception):
    """A lineage names a pack whose text neither the state nor the host has."""


class PackLibrary:
    """Rule packs by id, and the engine of each lineage (built once, then shared)."""

    def __init__(self, config: EngineConfig, *, decisions: bool = True) -> None:
        self.config = config
        self.decisions = decisions
        self._packs: dict[str, tuple[str, RulePack]] = {}
        self._engines: dict[str, Engine] = {}

    def add(self, text: str, source: str, pack: RulePack | None = None) -> str:
        """Remember a pack (parsed from `text` unless given); its id. Raises RulePackError."""
        pid = pack_id(text)
        if pid not in self._packs:
            self._packs[pid] = (text, pack if pack is not None else pack_from_text(text, source))
        return pid

    def __contains__(self, pid: object) -> bool:
        return pid in self._packs

    def pack(self, pid: str) -> RulePack:
        return self._packs[pid][1]

    def text(self, pid: str) -> str:
        return self._packs[pid][0]

    def engine(self, line: Lineage | tuple[str]) -> Engine:
        """The engine a partition with this lineage runs (a 1-tuple: a pack's own engine):
        the head's, knowing the earlier rule versions the lineage keeps and the switches
        customers' states may not have seen yet (`Engine.migrate`)."""
        if isinstance(line, tuple):
            line = Lineage(line[0])
        engine = self._engines.get(line.key)
        if engine is None:
            engine = Engine(self.pack(line.head), self.config, decisions=self.decisions)
            for rule_id, version, pid in line.retired:
                old = self.pack(pid)
                engine.retired[(rule_id, version)] = RuleRuntime(
                    old.rule(rule_id), old.relationship, self.config
                )
            changed = [set[str]() for _ in range(line.epoch)]
            dropped = [set[str]() for _ in range(line.epoch)]
            for rule_id, n in line.changed:
                changed[n].add(rule_id)
            for rule_id, n in line.dropped:
                dropped[n].add(rule_id)
            # Only each rule's last change and last drop: what the switches since any epoch
            # do to a rule's state (dropped since: gone; else changed since: cleared) is the
            # same as running every one of them.
            engine.migrations = [
                (frozenset(c), frozenset(d)) for c, d in zip(changed, dropped, strict=True)
            ]
            engine.epoch = line.epoch
            if len(self._engines) >= _ENGINES_KEPT:  # the oldest built goes (rebuilt if asked)
                del self._engines[next(iter(self._engines))]
            self._engines[line.key] = engine
        return engine

    def load(self, store: StateStore, fallback: str | None = None) -> Lineage | None:
        """The lineage a partition's state records (its packs learnt from the state too);
        None when it records none. A pack whose text is missing is logged (pack ids only)
        and the lineage goes on without it: an earlier version is let go (its timers fire
        under the current one), a pending switch is called off (the host asks again), and
        a missing head is replaced by `fallback` (a pack this library knows: the host's
        own), its rules taken as unchanged so cool-downs and first keys stay; with no
        fallback, `MissingPack`."""
        value = store.get(LINE_KEY)
        if value is None:
            return None
        if value.get("layout") != LINE_LAYOUT:
            line = _save(self, store, self._convert(store, value, fallback))
            store.delete(TEXTS_KEY)
            return line
        texts: dict[str, str] = value.get("packs") or {}
        missing = self._learn(texts, value)
        pending = value.get("pending")
        line = Lineage(
            str(value["head"]),
            None if pending is None else (str(pending[0]), int(pending[1])),
            int(value.get("epoch", 0)),
            tuple((str(r), int(n)) for r, n in sorted((value.get("changed") or {}).items())),
            tuple((str(r), int(n)) for r, n in sorted((value.get("dropped") or {}).items())),
            tuple((str(r), int(v), str(p)) for r, v, p in value.get("retired") or ()),
            tuple((str(a), str(b), int(t)) for a, b, t in value.get("recent") or ()),
        )
        if not missing:
            return line
        return self._without(store, line, missing, fallback)

    def _learn(self, texts: dict[str, str], value: dict[str, Any]) -> set[str]:
        """Learn the packs a stored lineage names; the ids of those it cannot."""
        named = {str(value["head"])}
        named.update(str(p) for _, _, p in value.get("retired") or ())
        if value.get("pending"):
            named.add(str(value["pending"][0]))
        missing = set()
        for pid in sorted(named):
            if pid in self:
                continue
            raw = texts.get(pid)
            try:
                if raw is None:
                    raise MissingPack(pid)
                self.add(_unpack(raw), f"{LINE_KEY}:{pid}")
            except (MissingPack, RulePackError, ValueError, zlib.error) as exc:
                log.error(
                    "rule pack %s named by a partition's lineage is missing or unreadable "
                    "(%s): going on without it",
                    pid,
                    type(exc).__name__,
                )
                missing.add(pid)
        return missing

    def _without(
        self, store: StateStore, line: Lineage, missing: set[str], fallback: str | None
    ) -> Lineage:
        if line.head in missing:
            if fallback is None or fallback not in self:
                raise MissingPack(
                    f"{LINE_KEY}: the pack a partition runs ({line.head}) is neither in its "
                    "state nor known to this host"
                )
            log.error("a partition runs pack %s from now (its own is missing)", fallback)
            line = _with(line, head=fallback)
        pending = line.pending if line.pending and line.pending[0] not in missing else None
        retired = tuple(r for r in line.retired if r[2] not in missing)
        return _save(self, store, _with(line, pending=pending, retired=retired))

    def _convert(self, store: StateStore, value: dict[str, Any], fallback: str | None) -> Lineage:
        """A lineage of layout 1 (every pack run, texts under `TEXTS_KEY`) as layout 2:
        the same engine, what nothing refers to pruned. Packs whose text is missing are let
        go as `load` says (a missing head: the last pack known of the chain, else
        `MissingPack`)."""
        texts: dict[str, str] = store.get(TEXTS_KEY) or {}
        chain = [str(p) for p in value.get("chain") or ()]
        missing: set[str] = set()
        for pid in dict.fromkeys(chain):
            if pid in self:
                continue
            try:
                self.add(texts[pid], f"{LINE_KEY}:{pid}")
            except (KeyError, RulePackError) as exc:
                log.error(
                    "rule pack %s of a partition's lineage (layout 1) is missing or unreadable "
                    "(%s): going on without it",
                    pid,
                    type(exc).__name__,
                )
                missing.add(pid)
        found: Lineage | None = None
        times = [int(t) for t in value.get("at") or ()]
        for n, pid in enumerate(chain):  # a missing pack still counts its switch
            if pid in missing:
                found = found and _with(found, epoch=found.epoch + 1)
            elif found is None:
                found = Lineage(pid, epoch=n)
            else:
                at = times[n - 1] if n - 1 < len(times) else 0
                found = _switched(self, found, pid, self.pack(found.head), at)
        if found is None:
            raise MissingPack(f"{LINE_KEY}: no pack of a partition's lineage is known")
        line = found
        if chain[-1] in missing:
            head = fallback if fallback is not None and fallback in self else line.head
            log.error("a partition runs pack %s from now (its own is missing)", head)
            line = _with(line, head=head)
        pending = value.get("pending")
        if pending and str(pending[0]) not in missing:
            if str(pending[0]) not in self:
                try:
                    self.add(texts[str(pending[0])], f"{LINE_KEY}:{pending[0]}")
                except (KeyError, RulePackError):
                    pending = None
            if pending:
                line = _with(line, pending=(str(pending[0]), int(pending[1])))
        return _pruned(line, referenced(store))


def _with(line: Lineage, **changes: Any) -> Lineage:
    fields_ = {
        "head": line.head,
        "pending": line.pending,
        "epoch": line.epoch,
        "changed": line.changed,
        "dropped": line.dropped,
        "retired": line.retired,
        "recent": line.recent,
    }
    return Lineage(**(fields_ | changes))


def _switched(library: PackLibrary, line: Lineage, pid: str, old: RulePack, at: int) -> Lineage:
    """The lineage after switching from its head (`old`) to `pid` at `at`, nothing pruned
    yet."""
    changes = compare_packs(old, library.pack(pid))
    n = line.epoch
    changed = dict(line.changed) | dict.fromkeys(changes.changed, n)
    dropped = dict(line.dropped) | dict.fromkeys((*changes.removed, *changes.added), n)
    retired = {(r, v): p for r, v, p in line.retired}
    for rule_id in changes.changed:
        retired[(rule_id, old.rule(rule_id).version)] = line.head
    return Lineage(
        pid,
        None,
        n + 1,
        tuple(sorted(changed.items())),
        tuple(sorted(dropped.items())),
        tuple((r, v, p) for (r, v), p in retired.items()),
        (*line.recent, (line.head, pid, at))[-RECENT_SWITCHES:],
    )


def referenced(store: StateStore) -> set[tuple[str, int]]:
    """The (rule id, version) pairs a partition's pending timers and deferred candidates
    carry: what its earlier rule versions are still needed for. Walks its timers, the only
    index of customers that have either (like `pack_switch.carry_over`)."""
    found: set[tuple[str, int]] = set()
    seen: set[str] = set()
    for _, cid, rule_id, key in all_timers(store):
        if rule_id == HOLD_TIMER:
            continue
        state = store.get(CUSTOMER_PREFIX + cid)
        if state is None:
            continue
        if rule_id == QUEUE_TIMER:
            if cid not in seen:
                seen.add(cid)
                for entry in state.get(WAITING) or ():
                    found.add((entry[WAITING_RULE], int(entry[WAITING_VERSION])))
            continue
        version = timer_version(state.get(RULES, NO_CONTEXT).get(rule_id, NO_CONTEXT), key)
        if version is not None:
            found.add((rule_id, version))
    return found


def _pruned(line: Lineage, used: set[tuple[str, int]]) -> Lineage:
    retired = tuple(r for r in line.retired if (r[0], r[1]) in used)
    return _with(line, retired=retired)


def _pack(text: str) -> str:
    return base64.b64encode(zlib.compress(text.encode("utf-8"), 9)).decode("ascii")


def _unpack(raw: str) -> str:
    return zlib.decompress(base64.b64decode(raw, validate=True)).decode("utf-8")


def _save(library: PackLibrary, store: StateStore, line: Lineage) -> Lineage:
    """Write the lineage and the texts of the packs it names as one value; the lineage
    written (its oldest earlier versions let go if their texts would not fit)."""
    previous: dict[str, Any] = store.get(LINE_KEY) or {}
    stored: dict[str, str] = (
        previous.get("packs") or {} if previous.get("layout") == LINE_LAYOUT else {}
    )
    texts = {pid: stored.get(pid) or _pack(library.text(pid)) for pid in sorted(line.packs)}
    size = sum(len(t) for t in texts.values())
    while size > MAX_LINE_TEXT_BYTES and line.retired:
        oldest = line.retired[0][2]
        log.warning(
            "a partition's lineage keeps over %d bytes of pack text: letting go the rule "
            "versions of pack %s (their timers fire under the current version)",
            MAX_LINE_TEXT_BYTES,
            oldest,
        )
        line = _with(line, retired=tuple(r for r in line.retired if r[2] != oldest))
        texts = {pid: texts[pid] for pid in sorted(line.packs)}
        size = sum(len(t) for t in texts.values())
    store.set(
        LINE_KEY,
        {
            "layout": LINE_LAYOUT,
            "head": line.head,
            "pending": line.pending and list(line.pending),
            "epoch": line.epoch,
            "changed": dict(line.changed),
            "dropped": dict(line.dropped),
            "retired": [list(r) for r in line.retired],
            "recent": [list(r) for r in line.recent],
            "packs": texts,
        },
    )
    return line


def start(library: PackLibrary, store: StateStore, pid: str) -> Lineage:
    """The lineage of a partition whose state records none: it runs (or ran) `pid`."""
    return _save(library, store, Lineage(pid))


def request_switch(library: PackLibrary, store: StateStore, line: Lineage, pid: str) -> Lineage:
    """Switch the partition to pack `pid` (call between two batches): at once if it has seen
    no event, else before its first event at or after its max occurred_at + 1 ms (a switch
    already waiting keeps its time and takes the new pack). Back to the pack it runs: the
    waiting switch is called off."""
    if pid == line.goal:
        return line
    if pid == line.head:
        line = _with(line, pending=None)
    else:
        clock = store.get(CLOCK_KEY)
        if clock is None:  # no event yet: no state to carry over
            line = Lineage(pid)
        else:
            at = line.pending[1] if line.pending is not None else int(clock[CLOCK_MAX]) + 1
            line = _with(line, pending=(pid, at))
    return _save(library, store, line)


def feed(
    library: PackLibrary,
    store: StateStore,
    line: Lineage,
    event: InteractionEvent,
    watermark_cap: int | None = None,
) -> tuple[Lineage, EngineOutput]:
    """Apply one event of the partition (`Engine.process`), switching first if it is due."""
    engine = library.engine(line)
    pending = line.pending
    if pending is None or event.occurred_at < pending[1]:
        return line, engine.process(store, event, watermark_cap)
    t = event.occurred_at
    out = engine.advance(store, t if watermark_cap is None else min(t, watermark_cap))
    line = _switch(library, store, line, engine, out)
    out.extend(library.engine(line).process(store, event, watermark_cap))
    return line, out


def tick(
    library: PackLibrary, store: StateStore, line: Lineage, now_ms: int
) -> tuple[Lineage, EngineOutput]:
    """Event time reached `now_ms` on an idle partition (`Engine.advance`); a switch due by
    then happens after the due timers fired."""
    engine = library.engine(line)
    out = engine.advance(store, now_ms)
    if line.pending is not None and now_ms >= line.pending[1]:
        line = _switch(library, store, line, engine, out)
    return line, out


def _switch(
    library: PackLibrary, store: StateStore, line: Lineage, engine: Engine, out: EngineOutput
) -> Lineage:
    assert line.pending is not None
    pid, at = line.pending
    _, switched = engine.switch_pack((store,), library.pack(pid), at)
    out.extend(switched)
    record: dict[str, Any] = store.get(PACK_KEY) or {}
    store.set(PACK_KEY, record | {"pack": pid})
    line = _pruned(_switched(library, line, pid, engine.pack, at), referenced(store))
    return _save(library, store, line)


def last_switch(store: StateStore) -> dict[str, Any] | None:
    """The partition's last switch: {"at", "watermark", "versions", "pack"} (+ the host's)."""
    value: dict[str, Any] | None = store.get(PACK_KEY)
    return value
