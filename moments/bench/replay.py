"""File replay beside plain parsing of the same lines, in the same run (`moments bench`).

"What would this change do to last quarter" reads a file of history: how close
`moments replay` of a file comes to the rate at which the same lines are parsed
says what the reading, validation, engine and output cost on top of parsing.
Two parsing baselines are measured, back to back with the replay on the same
file, as wall-clock and CPU rates (the CPU figures hold better on a shared
machine):

- parse into a list: each line's `orjson.loads` result kept in a list, with the
  garbage collector as a plain program has it (on): what any reader of the lines
  produces, and what "plain parsing" means here. The 0.4 target of the
  bench (`replay_vs_orjson_ratio`) is judged against this one;
- parse and discard: `orjson.loads` of each line, the result dropped at once: the
  fastest a line can be parsed at all, a floor no reader that keeps anything
  reaches (`replay_vs_parse_discard_ratio`).

Each baseline runs before and after the replay and the faster of its two runs is
the reference, so a ratio is never flattered by a slow reference; the replay too runs
twice (after the baselines' second runs again) and its faster run counts, so neither side
of a ratio is judged on one unlucky run of a shared machine (`replay_runs_lines_per_s`
keeps both).

The replay runs as `moments replay` does by default: shared by one process per usable
CPU (`processors.replay_shards`, `replay_workers` in the result), so its CPU figures
include the shard processes' CPU time, and the wall-clock ratio is what a user waits for
on this machine. The baselines run in one process. Beside each wall ratio stands a
per-CPU ratio (`*_per_cpu_ratio`: replay lines per CPU-second of all its processes /
parse lines per CPU-second), which says what the replay costs whatever the number of
CPUs; `replay_workers` / `parse_processes` give the processes each side ran and
`replay_cpus_busy` / `parse_cpus_busy` the CPUs each kept busy on average (CPU seconds /
wall seconds of its faster run).
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Any, Final

import orjson

from processors.replay import replay_file

#: What the target ratio (`replay_vs_orjson_ratio`) is judged against, for the report.
TARGET_BASELINE: Final = "parse into a list (each orjson.loads result kept)"


def _parse_plainly(path: Path, *, keep: bool) -> tuple[int, float, float]:
    """Lines parsed with `orjson.loads` (each result kept in a list, or dropped), wall
    seconds, CPU seconds."""
    loads = orjson.loads
    kept: list[Any] = []
    append = kept.append
    lines = 0
    wall, cpu = time.perf_counter(), time.process_time()
    with open(path, "rb") as handle:
        for raw in handle:
            if raw.strip():
                if keep:
                    append(loads(raw))
                else:
                    loads(raw)
                lines += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    del kept, append  # freed outside the timed part
    gc.collect()
    return lines, wall, cpu


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its ended children (a sharded replay's shards)."""
    used = os.times()
    return used.user + used.system + used.children_user + used.children_system


def _seconds(*runs: tuple[int, float, float]) -> tuple[float, float]:
    """The faster run's wall and CPU seconds, at least a microsecond (a clock tick cannot
    divide by zero)."""
    return max(min(r[1] for r in runs), 1e-6), max(min(r[2] for r in runs), 1e-6)


def _cpus_busy(*runs: tuple[int, float, float]) -> float:
    """CPUs kept busy on average by the faster (wall) of `runs`: its CPU / wall seconds."""
    _, wall, cpu = min(runs, key=lambda run: run[1])
    return round(cpu / max(wall, 1e-6), 2)


def replay_vs_parse(
    events_path: Path, work: Path, *, rules_path: Path | str | None = None
) -> dict[str, Any]:
    """`replay_file` of `events_path` (actions written to `work`) beside the two parsing
    baselines of its lines: lines/s of each, wall and CPU, and replay / each baseline.

    `orjson_lines_per_s` and `replay_vs_orjson_ratio` (what the bench's target reads) are
    the parse-into-list figures; `parse_discard_*` the parse-and-discard ones; each wall
    ratio has its per-CPU ratio beside it (`*_per_cpu_ratio`, see module)."""

    def replay() -> tuple[int, float, float]:
        gc.collect()
        wall, cpu = time.perf_counter(), _cpu_seconds()
        summary = replay_file(
            events_path, actions_out=work / "replay-vs-parse-actions.jsonl", rules_path=rules_path
        )
        workers.append(summary.workers)
        return summary.events, time.perf_counter() - wall, _cpu_seconds() - cpu

    workers: list[int] = []
    gc.collect()
    discard_first = _parse_plainly(events_path, keep=False)
    list_first = _parse_plainly(events_path, keep=True)
    replay_first = replay()
    gc.collect()
    list_second = _parse_plainly(events_path, keep=True)
    discard_second = _parse_plainly(events_path, keep=False)
    replay_second = replay()
    lines, events = list_first[0], replay_first[0]
    list_wall, list_cpu = _seconds(list_first, list_second)
    discard_wall, discard_cpu = _seconds(discard_first, discard_second)
    replay_wall, replay_cpu = _seconds(replay_first, replay_second)

    def ratio(reference_seconds: float, replay_seconds: float) -> float:
        """replay rate / reference rate of the same lines"""
        return round(events * reference_seconds / (lines * replay_seconds), 3)

    return {
        "lines": lines,
        "events": events,
        "target_baseline": TARGET_BASELINE,
        # the CPUs each side used: processes run, and CPUs kept busy on average
        "replay_workers": workers[-1],
        "parse_processes": 1,
        "replay_cpus_busy": _cpus_busy(replay_first, replay_second),
        "parse_cpus_busy": _cpus_busy(list_first, list_second),
        "replay_lines_per_s": round(events / replay_wall, 1),
        "replay_runs_lines_per_s": [
            round(events / max(run[1], 1e-6), 1) for run in (replay_first, replay_second)
        ],
        "replay_lines_per_cpu_s": round(events / replay_cpu, 1),
        # the target's baseline: parse into a list
        "orjson_lines_per_s": round(lines / list_wall, 1),
        "orjson_lines_per_cpu_s": round(lines / list_cpu, 1),
        "replay_vs_orjson_ratio": ratio(list_wall, replay_wall),
        "replay_vs_orjson_per_cpu_ratio": ratio(list_cpu, replay_cpu),
        # the floor: parse and discard
        "parse_discard_lines_per_s": round(lines / discard_wall, 1),
        "parse_discard_lines_per_cpu_s": round(lines / discard_cpu, 1),
        "replay_vs_parse_discard_ratio": ratio(discard_wall, replay_wall),
        "replay_vs_parse_discard_per_cpu_ratio": ratio(discard_cpu, replay_cpu),
    }
