"""A fourth channel adapter, as a newcomer would write one: one class, registered, nothing else.

Its export is a text file of `customer_id,event_type` lines. The tests register it and
check that ingest and the CLI's kind list take it up without any other edit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Self

from producers.adapters.base import IngestOptions, RecordError, Rejection, SourceRecord
from producers.adapters.registry import register
from schemas.records import InteractionEvent

#: 2026-01-01T00:00:00Z: every toy record happened then.
TOY_TIME_MS = 1_767_225_600_000


@register
class ToyAdapter:
    """Maps `customer_id,event_type` lines to `web` events."""

    kind: ClassVar[str] = "toy"
    order: ClassVar[int] = 99
    channel: ClassVar[str] = "web"
    mapping_name: ClassVar[str] = "toy"

    @classmethod
    def for_ingest(cls, options: IngestOptions) -> Self:
        return cls()

    def records(self, path: Path) -> Iterator[SourceRecord | Rejection]:
        for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if text.strip():
                yield SourceRecord(str(path), line, {"line": text})

    def map_source(self, record: SourceRecord) -> InteractionEvent:
        customer_id, _, event_type = str(record.fields["line"]).partition(",")
        if not event_type.strip():
            raise RecordError("event_type", "missing")
        return InteractionEvent(
            event_id=f"toy-{record.line}",
            customer_id=customer_id.strip(),
            channel=self.channel,
            type=event_type.strip(),
            occurred_at=TOY_TIME_MS,
            source="toy",
        )

    def estimate(self, path: Path) -> int:
        return sum(1 for text in path.read_text(encoding="utf-8").splitlines() if text.strip())
