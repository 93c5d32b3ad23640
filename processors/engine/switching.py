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

Every partition keeps its lineage in its own state: the ids of the packs it has
run, oldest first, and a switch it waits for (`LINE_KEY`), the YAML of each of
those packs (`TEXTS_KEY`), and the last switch (`PACK_KEY`: time, watermark,
rule versions, pack id; the host adds the offset). A restarted or rebalanced
host rebuilds from them the very engine the partition had (`PackLibrary.engine`
of the chain), so a timer set under an old rule version still fires under that
version. Rolling back is switching to an earlier pack again: the chain grows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from processors.engine.core import Engine
from processors.engine.interfaces import CLOCK_KEY, EngineConfig, EngineOutput, StateStore
from processors.engine.lifecycle import version_problems
from processors.engine.rules import RulePack, pack_from_text
from processors.engine.state import CLOCK_MAX, LINE_KEY, PACK_KEY, TEXTS_KEY
from schemas.records import InteractionEvent


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


class PackLibrary:
    """Rule packs by id, and the engine of each chain of packs (built once, then shared).

    The engine of (A, B, C) is A's engine switched to B, then to C: it knows every rule
    version of the chain, so timers set under any of them fire under it.
    """

    def __init__(self, config: EngineConfig, *, decisions: bool = True) -> None:
        self.config = config
        self.decisions = decisions
        self._packs: dict[str, tuple[str, RulePack]] = {}
        self._engines: dict[tuple[str, ...], Engine] = {}

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

    def engine(self, chain: tuple[str, ...]) -> Engine:
        """The engine a partition with this lineage runs."""
        engine = self._engines.get(chain)
        if engine is None:
            known = next((n for n in range(len(chain), 0, -1) if chain[:n] in self._engines), 0)
            if known:
                engine = self._engines[chain[:known]]
            else:
                engine = Engine(self.pack(chain[0]), self.config, decisions=self.decisions)
                self._engines[chain[:1]] = engine
                known = 1
            for n in range(known + 1, len(chain) + 1):
                engine, _ = engine.switch_pack((), self.pack(chain[n - 1]), 0)
                self._engines[chain[:n]] = engine
        return engine

    def load(self, store: StateStore) -> Lineage | None:
        """The lineage a partition's state records (its packs learnt from the state too);
        None when it records none."""
        line = store.get(LINE_KEY)
        if line is None:
            return None
        texts: dict[str, str] = store.get(TEXTS_KEY) or {}
        for pid in {*line["chain"], *([line["pending"][0]] if line["pending"] else [])}:
            if pid not in self:
                self.add(texts[pid], f"{LINE_KEY}:{pid}")
        pending = line["pending"]
        return Lineage(
            tuple(line["chain"]),
            None if pending is None else (pending[0], pending[1]),
            tuple(line.get("at", ())),
        )


@dataclass(frozen=True, slots=True)
class Lineage:
    """The packs one partition has run, oldest first, the switch it waits for (pack id, TS)
    if any, and the TS of each switch it made (`replay --rules-change TS=` of chain[1:])."""

    chain: tuple[str, ...]
    pending: tuple[str, int] | None = None
    switched_at: tuple[int, ...] = ()

    @property
    def head(self) -> str:
        """The pack the partition runs now."""
        return self.chain[-1]

    @property
    def goal(self) -> str:
        """The pack the partition runs once its pending switch happened."""
        return self.chain[-1] if self.pending is None else self.pending[0]


def _save(library: PackLibrary, store: StateStore, line: Lineage) -> None:
    pending = line.pending and list(line.pending)
    store.set(
        LINE_KEY, {"chain": list(line.chain), "at": list(line.switched_at), "pending": pending}
    )
    texts: dict[str, str] = store.get(TEXTS_KEY) or {}
    wanted = {*line.chain, *([line.pending[0]] if line.pending else [])}
    if not wanted <= texts.keys():
        store.set(TEXTS_KEY, {pid: library.text(pid) for pid in sorted(wanted)} | texts)


def start(library: PackLibrary, store: StateStore, pid: str) -> Lineage:
    """The lineage of a partition whose state records none: it runs (or ran) `pid`."""
    line = Lineage((pid,))
    _save(library, store, line)
    return line


def request_switch(library: PackLibrary, store: StateStore, line: Lineage, pid: str) -> Lineage:
    """Switch the partition to pack `pid` (call between two batches): at once if it has seen
    no event, else before its first event at or after its max occurred_at + 1 ms (a switch
    already waiting keeps its time and takes the new pack). Back to the pack it runs: the
    waiting switch is called off."""
    if pid == line.goal:
        return line
    if pid == line.head:
        line = Lineage(line.chain, None, line.switched_at)
    else:
        clock = store.get(CLOCK_KEY)
        if clock is None:  # no event yet: no state to carry over
            line = Lineage((pid,))
        else:
            at = line.pending[1] if line.pending is not None else int(clock[CLOCK_MAX]) + 1
            line = Lineage(line.chain, (pid, at), line.switched_at)
    _save(library, store, line)
    return line


def feed(
    library: PackLibrary,
    store: StateStore,
    line: Lineage,
    event: InteractionEvent,
    watermark_cap: int | None = None,
) -> tuple[Lineage, EngineOutput]:
    """Apply one event of the partition (`Engine.process`), switching first if it is due."""
    engine = library.engine(line.chain)
    pending = line.pending
    if pending is None or event.occurred_at < pending[1]:
        return line, engine.process(store, event, watermark_cap)
    t = event.occurred_at
    out = engine.advance(store, t if watermark_cap is None else min(t, watermark_cap))
    line = _switch(library, store, line, engine, out)
    out.extend(library.engine(line.chain).process(store, event, watermark_cap))
    return line, out


def tick(
    library: PackLibrary, store: StateStore, line: Lineage, now_ms: int
) -> tuple[Lineage, EngineOutput]:
    """Event time reached `now_ms` on an idle partition (`Engine.advance`); a switch due by
    then happens after the due timers fired."""
    engine = library.engine(line.chain)
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
    line = Lineage((*line.chain, pid), None, (*line.switched_at, at))
    _save(library, store, line)
    return line


def last_switch(store: StateStore) -> dict[str, Any] | None:
    """The partition's last switch: {"at", "watermark", "versions", "pack"} (+ the host's)."""
    value: dict[str, Any] | None = store.get(PACK_KEY)
    return value
