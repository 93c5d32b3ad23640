"""`moments report uplift` from files: the table, the JSON, the chart and clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moments.cli import app

EVENTS = [
    {"event_id": "e1", "customer_id": "t1", "channel": "web", "type": "dispute_opened",
     "occurred_at": "2026-01-10T00:00:00+00:00"},
    {"event_id": "e2", "customer_id": "c1", "channel": "web", "type": "dispute_opened",
     "occurred_at": "2026-01-10T00:00:00+00:00"},
    {"event_id": "e3", "customer_id": "c2", "channel": "web", "type": "complaint_filed",
     "occurred_at": "2026-01-11T00:00:00+00:00"},
]  # fmt: skip


def decision(customer: str, outcome: str) -> dict[str, object]:
    return {
        "decision_id": f"d-{customer}",
        "customer_id": customer,
        "rule": "explain_first_bill",
        "rule_version": 1,
        "outcome": outcome,
        "reason": outcome,
        "action_id": None,
        "evidence": ["x"],
        "decided_at": "2026-01-05T00:00:00+00:00",
    }


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    events, decisions = tmp_path / "events.jsonl", tmp_path / "decisions.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    rows = [decision("t1", "fired"), decision("t2", "fired"), decision("c1", "held_out")]
    rows.append(decision("c2", "held_out"))
    decisions.write_text("".join(json.dumps(d) + "\n" for d in rows))
    return events, decisions


def report(events: Path, decisions: Path, *extra: str) -> tuple[int, str]:
    args = ["report", "uplift", "--events", str(events), "--decisions", str(decisions), *extra]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_the_report_prints_the_table_and_writes_the_json(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    code, output = report(*files, "--json", str(tmp_path / "u.json"))
    assert code == 0, output
    assert "explain_first_bill" in output and "no evidence either way" in output
    bill = json.loads((tmp_path / "u.json").read_text())["rules"]["explain_first_bill"]
    assert (bill["treated"], bill["treated_with_outcome"]) == (2, 1)
    assert (bill["control"], bill["control_with_outcome"]) == (2, 2)
    assert bill["uplift"] == 0.5  # control 2/2 - treated 1/2: fewer disputes with the action


def test_a_bad_decision_line_names_file_and_line(files: tuple[Path, Path]) -> None:
    events, decisions = files
    bad = '{"rule": "explain_first_bill", "outcome": "fired", "customer_id": 7}\n'
    decisions.write_text(decisions.read_text() + bad)
    code, output = report(events, decisions)
    assert code == 2
    assert f"{decisions}:5" in output


def test_png_without_matplotlib_says_how_to_get_it(
    files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, output = report(*files, "--png", str(tmp_path / "u.png"))
    assert code == 2
    assert "--png needs matplotlib" in output and "pip install 'moments[bench]'" in output


def test_png_is_a_chart(files: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the chart needs matplotlib (moments[bench])")
    code, output = report(*files, "--png", str(tmp_path / "u.png"))
    assert code == 0, output
    assert (tmp_path / "u.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_to_stdout_instead_of_the_table(files: tuple[Path, Path]) -> None:
    events, decisions = files
    args = ["report", "uplift", "--events", str(events), "--decisions", str(decisions)]
    result = CliRunner().invoke(app, [*args, "--json", "-"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)  # nothing but the JSON
    assert "explain_first_bill" in document["rules"]


def status(action: str, customer: str, kind: str, at: str) -> dict[str, object]:
    return {
        "action_id": action,
        "customer_id": customer,
        "rule": "explain_first_bill",
        "destination": "billing",
        "status": kind,
        "owner": None,
        "resolution": "completed" if kind == "done" else None,
        "at": at,
        "event_id": None,
    }


def test_status_records_add_the_done_rate_and_hours_to_done(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    records = tmp_path / "status.jsonl"
    rows = [
        status("a1", "t1", "open", "2026-01-05T00:00:00+00:00"),
        status("a2", "t2", "open", "2026-01-05T00:00:00+00:00"),
        status("a1", "t1", "acknowledged", "2026-01-05T01:00:00+00:00"),
        status("a1", "t1", "done", "2026-01-05T06:00:00+00:00"),
        status("a2", "t2", "lapsed", "2026-02-05T00:00:00+00:00"),
    ]
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, output = report(*files, "--status", str(records), "--json", str(tmp_path / "u.json"))
    assert code == 0, output
    assert "50.0%" in output
    bill = json.loads((tmp_path / "u.json").read_text())["rules"]["explain_first_bill"]
    assert bill["done_rate"] == 0.5 and bill["median_hours_to_done"] == 6.0
    assert bill["uplift"] == 0.5  # the same intention-to-treat uplift as without statuses
    records.write_text(json.dumps(rows[0]) + "\n{not json\n")
    code, output = report(*files, "--status", str(records))
    assert code != 0 and f"{records}:2" in output.replace("\n", "")
