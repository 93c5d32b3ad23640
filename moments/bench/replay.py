"""File replay beside plain parsing of the same lines, in the same run (`moments bench`).

"What would this change do to last quarter" reads a file of history: how close
`moments replay` of a file comes to the rate at which plain `orjson.loads`
parses its lines says what the reading, validation, engine and output cost on
top of parsing alone. Both are measured here back to back on the same file,
as wall-clock and CPU rates (the CPU figures hold better on a shared machine);
plain parsing runs before and after the replay and the faster of the two is
the reference, so the ratio is never flattered by a slow reference.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import orjson

from processors.replay import replay_file


def _parse_plainly(path: Path) -> tuple[int, float, float]:
    """Lines parsed with `orjson.loads` (each result dropped), wall seconds, CPU seconds."""
    loads = orjson.loads
    lines = 0
    wall, cpu = time.perf_counter(), time.process_time()
    with open(path, "rb") as handle:
        for raw in handle:
            if raw.strip():
                loads(raw)
                lines += 1
    return lines, time.perf_counter() - wall, time.process_time() - cpu


def replay_vs_parse(
    events_path: Path, work: Path, *, rules_path: Path | str | None = None
) -> dict[str, Any]:
    """`replay_file` of `events_path` (actions written to `work`) beside plain parsing of its
    lines: lines/s of each, wall and CPU, and replay / parsing (the issue's figure)."""
    gc.collect()
    first = _parse_plainly(events_path)
    wall, cpu = time.perf_counter(), time.process_time()
    summary = replay_file(
        events_path, actions_out=work / "replay-vs-parse-actions.jsonl", rules_path=rules_path
    )
    replay_wall, replay_cpu = time.perf_counter() - wall, time.process_time() - cpu
    gc.collect()
    second = _parse_plainly(events_path)
    lines, events = first[0], summary.events
    # seconds of each, at least a microsecond (a clock tick cannot divide by zero)
    parse_wall = max(min(first[1], second[1]), 1e-6)
    parse_cpu = max(min(first[2], second[2]), 1e-6)
    replay_wall, replay_cpu = max(replay_wall, 1e-6), max(replay_cpu, 1e-6)
    return {
        "lines": lines,
        "events": events,
        "orjson_lines_per_s": round(lines / parse_wall, 1),
        "replay_lines_per_s": round(events / replay_wall, 1),
        "orjson_lines_per_cpu_s": round(lines / parse_cpu, 1),
        "replay_lines_per_cpu_s": round(events / replay_cpu, 1),
        # replay rate / parsing rate of the same lines
        "replay_vs_orjson_ratio": round(events * parse_wall / (lines * replay_wall), 3),
        "replay_vs_orjson_cpu_ratio": round(events * parse_cpu / (lines * replay_cpu), 3),
    }
