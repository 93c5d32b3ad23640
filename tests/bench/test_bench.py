"""The benchmark suite: report shape (fast, always) and a real quick run (marked bench)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moments.bench import REQUIRED_KEYS, _judge, _steady_rate, markdown_table, run_bench
from moments.settings import Settings


def _report() -> dict[str, object]:
    report: dict[str, object] = {key: None for key in REQUIRED_KEYS}
    report.update(
        replay_events_per_s=40_000.0,
        state_bytes_per_customer=480.0,
        backfill_events_per_s=30_000.0,
        raw_consume_msgs_per_s=300_000.0,
        quick=True,
        seconds=12.0,
        errors={"worker": "TimeoutError: counted 0 of 10 events"},
    )
    report["targets"] = _judge(report)
    return report


def test_targets_are_judged_and_unmeasured_ones_say_so() -> None:
    targets = {t["figure"]: t["holds"] for t in _judge(_report())}
    assert targets["replay_events_per_s"] is False
    assert targets["state_bytes_per_customer"] is True
    assert targets["latency_p99_ms"] is None


def test_markdown_puts_each_figure_beside_its_reference() -> None:
    text = markdown_table(_report())
    assert "| backfill (events/s) | 30,000 | 300,000 | 0.10 |" in text
    assert "not measured" in text and "worker: TimeoutError" in text


def test_steady_rate_leaves_out_start_up_and_tail() -> None:
    samples = [(0.0, 0), (5.0, 0), (6.0, 100), (7.0, 600), (8.0, 960), (9.0, 1000)]
    # 5% (50) reached at 5.5 s, 95% (950) at 7 + 350/360 s (interpolated between samples)
    assert _steady_rate(samples, 1000) == pytest.approx(900 / (2 + 350 / 360 - 0.5), abs=0.1)


def test_chart_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from moments.bench import write_chart

    write_chart(_report(), tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.bench
@pytest.mark.timeout(600)
def test_quick_bench_writes_every_report(tmp_path: Path) -> None:
    paths = tmp_path / "bench.json", tmp_path / "bench.md", tmp_path / "bench.png"
    report = run_bench(
        Settings(data_dir=tmp_path / "data"),
        quick=True,
        json_path=paths[0],
        markdown_path=paths[1],
        chart_path=paths[2],
    )
    written = json.loads(paths[0].read_text())
    assert set(REQUIRED_KEYS) <= set(written)
    assert written["replay_events_per_s"] == report["replay_events_per_s"] > 0
    assert "| figure | value | reference |" in paths[1].read_text()
    assert paths[2].stat().st_size > 0
