"""Stand-ins for what the worker talks to in unit tests: its output, its table, Faust events."""

from __future__ import annotations

import time
from typing import Any


class FakeOutput:
    """Collects what the worker sends instead of producing it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> None:
        self.sent.append((topic, key))

    def serve(self) -> None:
        pass


class FakeTable:
    """What StagedTable uses of a Faust table when nothing is sent: its local store."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}


class FakeMessage:
    """A record of the interactions topic as Faust hands it to the agent."""

    def __init__(self, offset: int, value: bytes, partition: int = 0) -> None:
        self.topic, self.partition, self.offset = "unit.interactions", partition, offset
        self.key, self.value, self.headers = b"ann", value, []
        self.timestamp = time.time()


class FakeEvent:
    """A Faust event: what the worker reads of it is its message."""

    def __init__(self, message: FakeMessage) -> None:
        self.message = message
