"""What the CLI prints: whole lines when output is not a terminal, one error per line,
`--version`, and JSON from `rules check` and `timeline` (`report uplift --json -`:
test_report_cli.py; `rules history --json`: tests/integration/test_cli_json.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import sinks.relationship
import sinks.timeline
from moments.cli import app

#: Two rules with a problem each: two error lines, each longer than 80 columns.
BAD_PACK = """\
rules:
  - id: a_rule_whose_name_is_long_enough_to_pass_eighty_columns_with_its_problem
    version: 1
    when: {kind: match, type: [inquiry]}
    action: x
    destination: nowhere
    priority: 5
    class: service
    reason: r
  - id: another_rule_whose_name_is_long_enough_to_pass_eighty_columns_too
    version: 1
    when: {kind: match, type: [inquiry]}
    action: y
    destination: care
    priority: 5
    class: nonsense
    reason: r
"""


def run_piped(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m moments ARGS` with stdout and stderr pipes and no COLUMNS (as in CI)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run(
        [sys.executable, "-m", "moments", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_errors_are_one_a_line_and_never_wrapped_when_not_a_terminal(tmp_path: Path) -> None:
    pack = tmp_path / "bad.yaml"
    pack.write_text(BAD_PACK)
    done = run_piped("rules", "check", str(pack))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) >= 2 and all(line.startswith("error: ") for line in lines), lines
    assert any("a_rule_whose_name" in line and "destination" in line for line in lines)
    assert any("another_rule" in line and "class" in line for line in lines)
    assert max(len(line) for line in lines) > 80  # whole, not folded at 80 columns


def test_a_long_line_on_a_pipe_stays_one_line() -> None:
    code = "from moments.cli.common import console; console.print('word ' * 60)"
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert [line.rstrip() for line in done.stdout.splitlines()] == [("word " * 60).rstrip()]


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("moments ") and len(result.output.split()) == 2


def test_timeline_json(monkeypatch: pytest.MonkeyPatch) -> None:
    entries: list[dict[str, Any]] = [
        {"at": "2026-01-02T03:04:05.000+00:00", "kind": "event", "summary": "call \x1b[31m"}
    ]
    monkeypatch.setattr(sinks.timeline, "customer_timeline", lambda *a, **k: entries)
    monkeypatch.setattr(
        sinks.relationship, "customer_relationship", lambda *a, **k: {"balance": -1}
    )
    result = CliRunner().invoke(
        app,
        ["timeline", "c-1", "--json"],
        env={"MOMENTS_DATABASE_URL": "postgresql://u@127.0.0.1:9/x", "MOMENTS_DATA_DIR": "/nx"},
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document == {"entries": entries, "relationship": {"balance": -1}}
    assert "\x1b" not in result.stdout  # escaped by JSON


def test_rules_check_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_PACK)
    failed = CliRunner().invoke(app, ["rules", "check", str(bad), "--json"])
    assert failed.exit_code == 2
    report = json.loads(failed.stdout)
    assert report["ok"] is False and len(report["problems"]) >= 2
    default = Path(__file__).resolve().parents[2] / "processors" / "rules" / "default.yaml"
    passed = CliRunner().invoke(app, ["rules", "check", str(default), str(default), "--json"])
    assert passed.exit_code == 0, passed.output
    report = json.loads(passed.stdout)
    assert report["ok"] is True and report["problems"] == [] and report["rules"] >= 10
    assert report["changed"] == report["added"] == report["removed"] == []
