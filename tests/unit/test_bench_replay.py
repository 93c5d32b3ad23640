"""The bench's file replay beside plain parsing: both figures from one run, on the same lines."""

from __future__ import annotations

from pathlib import Path

from moments.bench.replay import replay_vs_parse
from producers.simulator import write_simulation


def test_replay_and_plain_parsing_are_measured_on_the_same_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    write_simulation(path, 50, 14, 3)
    with path.open("ab") as handle:
        handle.write(b"\n")  # a blank line is neither parsed nor replayed
    result = replay_vs_parse(path, tmp_path)
    lines = sum(1 for line in path.read_bytes().splitlines() if line.strip())
    assert result["lines"] == result["events"] == lines > 0
    for key in ("orjson_lines_per_s", "replay_lines_per_s", "replay_vs_orjson_ratio"):
        assert result[key] > 0
    expected = result["replay_lines_per_s"] / result["orjson_lines_per_s"]
    assert abs(result["replay_vs_orjson_ratio"] - expected) <= 0.001 + expected * 0.01
    assert (tmp_path / "replay-vs-parse-actions.jsonl").stat().st_size > 0
