"""Stand-ins for what a channel adapter publishes to, and how its rejections are read back."""

from __future__ import annotations

from typing import Any

from schemas.codec import validate
from schemas.records import InteractionEvent


class Recorder:
    """A stand-in publisher: keeps what it was given, validates like the real one."""

    def __init__(self) -> None:
        self.events: list[InteractionEvent] = []
        self.flushed = 0

    def publish(self, event: InteractionEvent) -> None:
        validate(event)
        self.events.append(event)

    def flush(self, timeout_s: float = 30.0) -> None:
        self.flushed += 1


def rejections(summary_rejected: list[Any]) -> list[tuple[int, str]]:
    """(line, reason) of each rejected record of an ingest summary."""
    return [(r.line, r.reason) for r in summary_rejected]
