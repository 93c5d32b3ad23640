"""The live worker's engine state, read back from the changelog of its state table."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from common.settings import Settings
from tests.support.kafka import read_topic

#: The worker's state table (processors.worker.STATE_TABLE) and its changelog topic.
STATE_TABLE = "engine-state"


def changelog_topic(settings: Settings) -> str:
    """The changelog topic of the worker's state table."""
    return f"{settings.worker.worker_app_id}-{STATE_TABLE}-changelog"


@dataclass
class WorkerState:
    """The worker's final engine state per partition, as its changelog holds it."""

    engine: dict[int, dict[str, Any]]
    worker: dict[int, dict[str, Any]]

    def watermark(self, partition: int) -> int | None:
        clock = self.engine.get(partition, {}).get("p:clock")
        return None if clock is None else int(clock["wm"])


def read_worker_state(settings: Settings) -> WorkerState:
    """The last value of every key of the worker's changelog (tombstones delete)."""
    latest: dict[str, bytes | None] = {}
    records = read_topic(settings, [changelog_topic(settings)], quiet_s=1.5, timeout_s=60)
    for message in sorted(records, key=lambda m: (m.partition() or 0, m.offset() or 0)):
        raw_key = message.key()
        if raw_key is None:
            continue
        text = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        latest[json.loads(text) if text.startswith('"') else text] = message.value()  # JSON keys
    engine: dict[int, dict[str, Any]] = defaultdict(dict)
    worker: dict[int, dict[str, Any]] = defaultdict(dict)
    for name_key, value in latest.items():
        if value is None or "/" not in name_key:
            continue  # deleted, or the recovery fence
        partition, kind, name = name_key.split("/", 2)
        (engine if kind == "e" else worker)[int(partition)][name] = json.loads(value)
    return WorkerState(dict(engine), dict(worker))
