"""The benchmark suite: report shape (fast, always) and a real quick run (marked bench)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from common.settings import Settings
from moments.bench import REQUIRED_KEYS, markdown_table, peers, print_summary, run_bench
from moments.bench.bytewax_peer import EngineStep, avro_body, keyed_event, omnichannel
from moments.bench.context import QUICK, Bench
from moments.bench.report import judge_targets
from moments.calibration import CpuTimes, calibration
from processors.engine import DictStore, Engine, EngineConfig, load_rule_pack
from processors.offline import partition_for
from processors.replay import replay_events
from producers.simulator import simulate
from schemas.codec import codec_for
from schemas.records import InteractionEvent


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
    report["targets"] = judge_targets(report)
    return report


def test_targets_are_judged_and_unmeasured_ones_say_so() -> None:
    targets = {t["figure"]: t["holds"] for t in judge_targets(_report())}
    assert targets["replay_events_per_s"] is False
    assert targets["state_bytes_per_customer"] is True
    assert targets["latency_p99_ms"] is None


def test_markdown_puts_each_figure_beside_its_reference() -> None:
    text = markdown_table(_report())
    assert "| backfill (events/s) | 30,000 | 300,000 | 0.10 |" in text
    assert "not measured" in text and "worker: TimeoutError" in text


def test_a_dash_says_why_and_what_was_not_written_says_how_to_get_it() -> None:
    report = _report()
    why = "the pure-Python avro package is not installed (bench extra: make bench)"
    report["unmeasured"] = {"details.codec.avro_decode_per_s": why}
    report["details"] = {"codec": {"fastavro_decode_per_s": 150_000.0}}
    report["not_written"] = {"bench-report.png": "matplotlib is not installed; run `make bench`"}
    report["calibration"] = calibration(4.0, CpuTimes(0, 0, 0), CpuTimes(600, 100, 300))
    text = markdown_table(report)
    # the dash points at the numbered note saying why (numbers follow the table's rows)
    note = re.search(r"\| fastavro decode \(records/s\) \| 150,000 \| - \[(\d+)\] \|", text)
    assert note is not None
    assert f"{note.group(1)}. codec.avro_decode_per_s: {why}" in text
    assert "Not written:\n\n- bench-report.png: matplotlib is not installed" in text
    assert "10M-iteration Python loop took 4.00 s; CPU steal 30.0% of the run" in text
    assert "**Warning:** the machine was too busy for a verdict" in text
    assert "CPU steal was 30%" in text

    report["written"] = ["bench-report.json", "bench-report.md"]
    out = io.StringIO()
    print_summary(report, Console(file=out, width=40))
    lines = out.getvalue().splitlines()
    assert "reports: bench-report.json, bench-report.md" in lines  # no PNG claimed
    assert "not written: bench-report.png: matplotlib is not installed; run `make bench`" in lines
    assert any(
        line.startswith("warning: the machine was too busy") and "CPU steal was 30%" in line
        for line in lines
    )


def test_the_peer_runs_the_omnichannel_rule_in_event_time() -> None:
    hour = 3_600_000

    def contact(at_h: int, channel: str, kind: str = "inquiry") -> dict[str, object]:
        return {"type": kind, "occurred_at": at_h * hour, "channel": channel}

    state, fired = None, []
    for event in [
        contact(0, "call"),
        {"type": "payment_received", "occurred_at": hour, "channel": "web"},
        contact(1, "call"),
        contact(2, "call"),  # 3 contacts, 1 channel
        contact(3, "email", "complaint_filed"),  # 4 in 72 h over 2 channels: fires
        contact(4, "web"),  # cool-down of 7 days
        contact(200, "call"),
        contact(201, "web"),
        contact(202, "web"),  # the old ones left the 72 h window; 7 d passed: fires
    ]:
        state, did = omnichannel(state, event)
        fired.append(did)
    assert fired == [False, False, False, False, True, False, False, False, True]
    assert avro_body(b"\xc3\x01" + bytes(8) + b"body") == b"body"
    assert avro_body(b"\x00" + bytes(4) + b"body") == b"body"
    assert avro_body(b"") is None and avro_body(None) is None  # the worker's idle ticks


def test_the_engine_peer_runs_the_workers_engine_with_a_state_per_partition() -> None:
    """`EngineStep` keyed on the Kafka partition makes the actions a replay with as many
    partitions makes; `keyed_event` skips what the worker would not apply."""
    partitions = 3
    events = list(simulate(60, 30, seed=3))
    codec = codec_for(InteractionEvent)
    step = EngineStep(Engine(load_rule_pack(None), EngineConfig()))
    stores: dict[str, DictStore | None] = {}
    actions = 0
    for event in events:
        keyed = keyed_event(
            codec.decode, partition_for(event.customer_id, partitions), codec.encode(event)
        )
        assert keyed is not None
        key, decoded = keyed
        stores[key], made = step(stores.get(key), decoded)
        actions += made
    expected, _ = replay_events(events, partitions=partitions)
    assert actions == len(expected) > 0
    assert len(stores) == partitions
    assert keyed_event(codec.decode, 0, b"") is None  # an idle tick
    assert keyed_event(codec.decode, 0, b"not avro") is None  # the worker's dead letter


def test_a_peer_that_cannot_run_says_why_for_both_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    why = "bytewax is not installed: it is in the bench extra"
    monkeypatch.setattr(peers, "peer_unavailable", lambda: why)
    bench = Bench(Settings(data_dir=tmp_path / "data"), QUICK, tmp_path, {})
    rates = peers.run_bytewax_peers(bench, bench.settings, 10)
    figures = {figure for figure, *_ in peers.BYTEWAX_PEERS}
    assert figures == {"bytewax_events_per_s", "bytewax_engine_events_per_s"}
    assert rates == dict.fromkeys(figures)
    assert {figure: bench.unmeasured[figure] for figure in figures} == dict.fromkeys(figures, why)


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
    assert "Calibration: a plain 10M-iteration Python loop took" in paths[1].read_text()
    if str(paths[2]) in written["not_written"]:  # matplotlib missing: said, not claimed
        assert not paths[2].exists() and str(paths[2]) not in written["written"]
    else:
        assert paths[2].stat().st_size > 0 and str(paths[2]) in written["written"]
