"""The bench's file replay beside plain parsing: both baselines from one run, on the same lines."""

from __future__ import annotations

from pathlib import Path

from moments.bench.replay import TARGET_BASELINE, replay_vs_parse
from producers.simulator import write_simulation


def test_replay_and_both_parsing_baselines_are_measured_on_the_same_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    write_simulation(path, 50, 14, 3)
    with path.open("ab") as handle:
        handle.write(b"\n")  # a blank line is neither parsed nor replayed
    result = replay_vs_parse(path, tmp_path)
    lines = sum(1 for line in path.read_bytes().splitlines() if line.strip())
    assert result["lines"] == result["events"] == lines > 0
    assert result["target_baseline"] == TARGET_BASELINE
    assert "list" in TARGET_BASELINE
    pairs = (
        ("replay_vs_orjson_ratio", "orjson_lines_per_s"),  # the target's: parse into a list
        ("replay_vs_parse_discard_ratio", "parse_discard_lines_per_s"),
    )
    for ratio_key, baseline_key in pairs:
        assert result[ratio_key] > 0 and result[baseline_key] > 0
        expected = result["replay_lines_per_s"] / result[baseline_key]
        assert abs(result[ratio_key] - expected) <= 0.001 + expected * 0.01
    per_cpu = (
        ("replay_vs_orjson_per_cpu_ratio", "orjson_lines_per_cpu_s"),
        ("replay_vs_parse_discard_per_cpu_ratio", "parse_discard_lines_per_cpu_s"),
    )
    for ratio_key, baseline_key in per_cpu:  # lines per CPU-second of all the processes
        expected = result["replay_lines_per_cpu_s"] / result[baseline_key]
        assert abs(result[ratio_key] - expected) <= 0.001 + expected * 0.01
    assert result["parse_processes"] == 1
    assert result["replay_cpus_busy"] > 0 and result["parse_cpus_busy"] > 0
    assert (tmp_path / "replay-vs-parse-actions.jsonl").stat().st_size > 0
    assert result["replay_workers"] == 1  # a file this small replays in one process
    runs = result["replay_runs_lines_per_s"]
    assert len(runs) == 2 and result["replay_lines_per_s"] == max(runs)  # the faster run counts
