"""`moments replay --late-out F`: the events too late to apply, kept in file order, not applied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from moments.cli import app
from processors.engine import EngineConfig, parse_rule_pack
from processors.replay import replay_file
from schemas.codec import SchemaValidationError, read_events_jsonl, to_json_line
from tests.support.engine import T0, D, rule
from tests.support.event_lines import line

PACK = {"rules": [rule("answer", {"kind": "match", "type": "inquiry"})]}
#: Two days of lateness allowed at most, within the dedupe horizon.
CONFIG = EngineConfig(max_lateness_ms=2 * D, dedupe_horizon_ms=7 * D)


@pytest.fixture
def events(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    without_id = json.loads(line("x", "c4", "web", "inquiry", T0 + D))
    del without_id["event_id"]
    rows = [
        line("e1", "c1", "call", "inquiry", T0 + 10 * D),
        line("e2", "c2", "call", "inquiry", T0),  # ten days behind: too late
        line("e3", "c3", "call", "inquiry", T0 + 9 * D),  # within the lateness
        line("e5", "c5", "call", "inquiry", T0 + 7 * D),  # too late for 2 days, not for 7
        json.dumps(without_id),  # too late, its id derived from its content
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_too_late_events_go_to_late_out_in_file_order_and_are_not_applied(
    events: Path, tmp_path: Path
) -> None:
    pack = parse_rule_pack(PACK)
    late = tmp_path / "late.jsonl"
    summary = replay_file(
        events,
        actions_out=tmp_path / "a.jsonl",
        pack=pack,
        config=CONFIG,
        late_out=late,
        workers=4,
    )
    read = list(read_events_jsonl(events))
    assert late.read_text(encoding="utf-8") == "".join(
        to_json_line(event) + "\n" for event in (read[1], read[3], read[4])
    )
    assert (summary.events, summary.too_late, summary.actions, summary.workers) == (5, 3, 2, 1)
    written = (tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()
    applied = [json.loads(action)["customer_id"] for action in written]
    assert applied == ["c1", "c3"]
    without = replay_file(events, actions_out=tmp_path / "b.jsonl", pack=pack, config=CONFIG)
    assert (tmp_path / "b.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()
    assert without.too_late == 3


def test_late_out_is_written_empty_when_nothing_is_late_and_never_on_a_bad_line(
    events: Path, tmp_path: Path
) -> None:
    pack = parse_rule_pack(PACK)
    on_time = tmp_path / "on_time.jsonl"
    on_time.write_text("".join(events.read_text().splitlines(True)[0:3:2]), encoding="utf-8")
    late = tmp_path / "late.jsonl"
    summary = replay_file(on_time, actions_out=tmp_path / "a.jsonl", pack=pack, late_out=late)
    assert (summary.events, summary.too_late, late.read_bytes()) == (2, 0, b"")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(events.read_text() + "{}\n", encoding="utf-8")
    with pytest.raises(SchemaValidationError):
        replay_file(bad, actions_out=tmp_path / "c.jsonl", pack=pack, late_out=tmp_path / "l2")
    assert not (tmp_path / "l2").exists()


def test_cli_replay_late_out(events: Path, tmp_path: Path) -> None:
    rules = tmp_path / "pack.yaml"
    rules.write_text(yaml.safe_dump(PACK), encoding="utf-8")
    late = tmp_path / "late.jsonl"
    args = ["replay", str(events), "--rules", str(rules), "--actions-out", str(tmp_path / "a")]
    runner = CliRunner()
    result = runner.invoke(app, [*args, "--late-out", str(late)])  # 7 days by default
    assert result.exit_code == 0, result.output
    assert "2 too late" in " ".join(result.output.split())
    assert [e.customer_id for e in read_events_jsonl(late)] == ["c2", "c4"]
    result = runner.invoke(
        app, [*args, "--late-out", str(late)], env={"MOMENTS_MAX_LATENESS": "2d"}
    )
    assert result.exit_code == 0, result.output
    assert [e.customer_id for e in read_events_jsonl(late)] == ["c2", "c5", "c4"]
