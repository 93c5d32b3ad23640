"""The worker's switch path for one partition (`processors.engine.switching`), driven by a test."""

from __future__ import annotations

import orjson
import yaml

from processors.engine import DictStore, EngineConfig, EngineOutput
from processors.engine.rules import pack_from_text
from processors.engine.switching import PackLibrary, feed, request_switch, start
from schemas.records import InteractionEvent
from tests.support.engine import T0, D
from tests.support.packs import DEFAULT_DOC

#: The default pack as the rules topic carries it (dumped, not the file's own text).
A_TEXT = yaml.safe_dump(DEFAULT_DOC, sort_keys=False)
#: A_TEXT parsed once: a partition starts on it without parsing it again (as a host starts
#: on the pack it read at start-up). Publications and restarts still parse their texts.
A_PACK = pack_from_text(A_TEXT, "A")


def restarted(store: DictStore) -> tuple[PackLibrary, DictStore]:
    """What a restarted host has: the state as its changelog holds it, and no packs in memory."""
    again = DictStore()
    again.data = orjson.loads(orjson.dumps(store.data))
    return PackLibrary(EngineConfig()), again


class Partition:
    """The worker's path for one partition: a lineage, requests between batches, restarts."""

    def __init__(self, text: str = A_TEXT) -> None:
        """A partition started on the pack `text` (the default pack's)."""
        self.library = PackLibrary(EngineConfig())
        self.store = DictStore()
        pack = A_PACK if text == A_TEXT else None
        self.line = start(self.library, self.store, self.library.add(text, "A", pack))
        self.out = EngineOutput()

    def feed(self, events: list[InteractionEvent]) -> None:
        for event in events:
            self.line, out = feed(self.library, self.store, self.line, event)
            self.out.extend(out)

    def publish(self, text: str) -> int | None:
        """A pack arrives between two batches; the time the partition will switch at."""
        pid = self.library.add(text, "published")
        self.line = request_switch(self.library, self.store, self.line, pid)
        return None if self.line.pending is None else self.line.pending[1]

    def restart(self) -> None:
        self.library, self.store = restarted(self.store)
        line = self.library.load(self.store)
        assert line is not None
        self.line = line


def switch_time(at: int | None) -> int:
    """The TS of `replay --rules-change` for a switch requested at `at` (None: at once,
    before any event)."""
    return at if at is not None else T0 - 365 * D
