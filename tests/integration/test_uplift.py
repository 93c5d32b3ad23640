"""The loop closed: `moments simulate` + `moments replay` + `moments report uplift` on 20,000
customers finds a true effect and finds none when there is none; the report reads PostgreSQL
the same as files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from moments.cli import app
from schemas.codec import decision_from_json, read_events_jsonl
from tests.support.timeline_stories import write

RULES = ("explain_first_bill", "thank_meter_reading", "recognize_tenure")


def run(*args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "160", **(env or {})})
    assert result.exit_code == 0, result.output
    return result.output


def closed_loop(tmp_path: Path, effect: float, customers: int = 20_000) -> dict[str, Any]:
    """Simulate with `effect` on every engagement rule, replay with a 10% holdout, report.
    Without simulated teams (every action counts as done): the statistics are under test
    here; teams diluting an effect are tests/unit/test_simulator_teams.py's."""
    env = {"MOMENTS_HOLDOUT_PERCENT": "10"}
    events, decisions, report = tmp_path / "e.jsonl", tmp_path / "d.jsonl", tmp_path / "u.json"
    effects = [f"--effect={rule}={effect}" for rule in RULES]
    run("simulate", "--customers", str(customers), "--days", "120", "--seed", "7",
        "--out", str(events), "--no-teams", *effects, env=env)  # fmt: skip
    run("replay", str(events), "--actions-out", str(tmp_path / "a.jsonl"),
        "--decisions-out", str(decisions), env=env)  # fmt: skip
    output = run("report", "uplift", "--events", str(events), "--decisions", str(decisions),
                 "--json", str(report), env=env)  # fmt: skip
    assert "explain_first_bill" in output
    return json.loads(report.read_text())["rules"]  # type: ignore[no-any-return]


def test_a_true_effect_is_found(tmp_path: Path) -> None:
    rules = closed_loop(tmp_path, effect=0.5)
    for rule in ("explain_first_bill", "thank_meter_reading"):
        result = rules[rule]
        assert result["control"] > 0.05 * (result["treated"] + result["control"])
        assert result["ci95"][0] > 0, (rule, result)  # the whole interval says it pays off
        assert result["uplift"] > 0.02
        assert result["p_value"] < 0.001


def test_no_effect_is_found_where_there_is_none(tmp_path: Path) -> None:
    rules = closed_loop(tmp_path, effect=0.0)
    for rule in RULES:
        low, high = rules[rule]["ci95"]
        assert low < 0 < high, (rule, rules[rule])


def test_the_report_reads_postgresql_like_files(tmp_path: Path, database: str) -> None:
    events, decisions = tmp_path / "e.jsonl", tmp_path / "d.jsonl"
    env = {"MOMENTS_HOLDOUT_PERCENT": "30"}
    run("simulate", "--customers", "400", "--days", "90", "--seed", "3", "--out", str(events),
        env=env)  # fmt: skip
    run("replay", str(events), "--actions-out", str(tmp_path / "a.jsonl"),
        "--decisions-out", str(decisions), env=env)  # fmt: skip
    with decisions.open() as lines:
        records: list[Any] = [decision_from_json(json.loads(line)) for line in lines]
    write(database, [*read_events_jsonl(events), *records])
    from_files, from_db = tmp_path / "files.json", tmp_path / "db.json"
    run("report", "uplift", "--events", str(events), "--decisions", str(decisions),
        "--json", str(from_files))  # fmt: skip
    run("report", "uplift", "--database", "--json", str(from_db),
        env={"MOMENTS_DATABASE_URL": database})  # fmt: skip
    files = json.loads(from_files.read_text())
    assert files == json.loads(from_db.read_text())
    assert files["rules"]["explain_first_bill"]["control"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "uplift"], "give --events FILE and --decisions FILE, or --database"),
        (["simulate", "--out", "x.jsonl", "--effect", "explain_first_bill"], "RULE=SIZE"),
        (["simulate", "--out", "x.jsonl", "--effect", "nope=1"], "no effect for nope"),
        (["simulate", "--out", "x.jsonl", "--effect", "recognize_tenure=2"], "between 0 and 1"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert message in result.output
