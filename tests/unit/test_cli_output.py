"""What the CLI prints: whole lines when output is not a terminal, `--version`, and JSON
from `rules check` and `timeline` (`report uplift --json -`: test_report_cli.py; `rules
history --json`: tests/integration/test_cli_json.py; one error per line from the CLI
process itself: tests/integration/test_cli_pipe.py)."""

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
from tests.support.packs import BAD_PACK


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
