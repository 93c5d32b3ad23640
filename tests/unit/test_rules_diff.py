"""`rules diff` (docs/design.md 8.5): both packs over the same history, compared by action_id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from moments.cli import app
from processors.diff import compare_actions, diff_file
from processors.engine import DEFAULT_PACK_PATH, load_rule_pack
from processors.replay import replay_file
from schemas.records import ActionEvent
from tests.support.engine import T0, D
from tests.support.event_lines import line
from tests.support.packs import TENURE_10, tenure_version, variant


def action(action_id: str, rule: str = "r", customer: str = "c1", **extra: object) -> ActionEvent:
    fields: dict[str, object] = {
        "action_id": action_id,
        "customer_id": customer,
        "rule": rule,
        "action": rule,
        "rule_version": 1,
        "destination": "care",
        "priority": 10,
        "reason": "why",
        "evidence": ["e1"],
        "channel_hint": "call",
        "triggered_at": T0,
        "due_by": None,
        "details": {},
    }
    fields.update(extra)
    return ActionEvent(**fields)  # type: ignore[arg-type]


def test_compare_actions_counts_added_removed_changed_by_action_id() -> None:
    old = [action("a"), action("b", customer="c2"), action("c", rule_version=1)]
    new = [
        action("a", rule_version=2),  # only the version: not changed
        action("c", details={"x": "1"}, customer="c3"),
        action("d", rule="s", customer="c4"),
    ]
    result = compare_actions(old, new, events=7, rule_ids=["r", "s", "t"]).to_json()
    assert result["events"] == 7
    assert result["rules"] == {
        "r": {"old": 3, "new": 2, "added": 0, "removed": 1, "changed": 1},
        "s": {"old": 0, "new": 1, "added": 1, "removed": 0, "changed": 0},
        "t": {"old": 0, "new": 0, "added": 0, "removed": 0, "changed": 0},
    }
    assert result["customers_affected"] == 3  # c2 (removed), c3 (changed), c4 (added)
    kinds = {(e["rule"], e["kind"], e["customer_id"]) for e in result["examples"]}
    assert kinds == {("r", "removed", "c2"), ("r", "changed", "c3"), ("s", "added", "c4")}
    changed = next(e for e in result["examples"] if e["kind"] == "changed")
    assert changed["fields"] == ["details"]


def test_the_ledger_details_change_an_action_only_when_strict() -> None:
    ledger = {"relationship_balance": "1", "relationship_positives": "2"}
    old = [action("a", details={"plan": "x", **ledger}), action("b", details={"plan": "x"})]
    new = [
        action("a", details={"plan": "x", "relationship_balance": "-1"}),
        action("b", details={"plan": "y", "relationship_negatives": "4"}),
    ]
    loose = compare_actions(old, new, events=2)
    assert (loose.rules["r"].changed, [e["action_id"] for e in loose.examples]) == (1, ["b"])
    strict = compare_actions(old, new, events=2, strict=True)
    assert strict.rules["r"].changed == 2
    assert [e["fields"] for e in strict.examples] == [["details"], ["details"]]


@pytest.mark.parametrize("field", ["reason", "priority", "destination", "due_by", "triggered_at"])
def test_each_compared_field_makes_an_action_changed(field: str) -> None:
    value = {"reason": "other", "priority": 11, "destination": "crm", "due_by": T0 + D}
    value["triggered_at"] = T0 + 1
    result = compare_actions([action("a")], [action("a", **{field: value[field]})], events=1)
    assert result.rules["r"].changed == 1


@pytest.fixture
def history(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    rows = []
    for i in range(6):  # customers since 2019 (7 years) and 2024 (2 years)
        since = "2019-01-01" if i % 2 else "2024-01-01"
        rows.append(line(f"e{i}", f"c{i}", "call", "inquiry", T0 + i * D, customer_since=since))
    # a day later the watermark has passed them all: the engagement rules saw every one
    rows.append(line("e6", "c6", "call", "inquiry", T0 + 6 * D, customer_since="2024-01-01"))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_diff_file_equals_two_replays(history: Path, tmp_path: Path) -> None:
    new_path = variant(tmp_path, "t10.yaml", TENURE_10, tenure_version(2))
    old, new = load_rule_pack(), load_rule_pack(new_path)
    result = diff_file(history, old, new)
    counts = []
    for pack in (old, new):
        out = tmp_path / "a.jsonl"
        replay_file(history, actions_out=out, pack=pack)
        counts.append(sum(1 for x in out.read_text().splitlines() if "recognize_tenure" in x))
    tenure = result.rules["recognize_tenure"]
    assert (tenure.old, tenure.new) == (counts[0], counts[1]) == (3, 0)
    assert (tenure.removed, result.customers_affected, result.events) == (3, 3, 7)


def test_cli_rules_diff_prints_a_table_and_writes_the_json(history: Path, tmp_path: Path) -> None:
    new_path = variant(tmp_path, "t10.yaml", TENURE_10, tenure_version(2))
    out = tmp_path / "diff.json"
    args = ["rules", "diff", str(DEFAULT_PACK_PATH), str(new_path), "--events", str(history)]
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "recognize_tenure" in result.output and "removed" in result.output
    written = json.loads(out.read_text(encoding="utf-8"))
    assert set(written) == {"events", "customers_affected", "rules", "examples"}
    assert written["rules"]["recognize_tenure"]["removed"] == 3
    assert set(written["rules"]["recognize_tenure"]) == {
        "old",
        "new",
        "added",
        "removed",
        "changed",
    }


def test_cli_rules_diff_refuses_an_unraised_version_and_a_missing_history(
    history: Path, tmp_path: Path
) -> None:
    bad = variant(tmp_path, "bad.yaml", TENURE_10)
    runner = CliRunner()
    result = runner.invoke(
        app, ["rules", "diff", str(DEFAULT_PACK_PATH), str(bad), "--events", str(history)]
    )
    assert result.exit_code == 2 and "recognize_tenure" in result.output
    result = runner.invoke(app, ["rules", "diff", str(DEFAULT_PACK_PATH), str(bad)])
    assert result.exit_code == 2 and "--events" in result.output


def test_the_packs_in_two_processes_give_the_one_pass_diff(tmp_path: Path) -> None:
    """On a machine with CPUs to share each pack replays in its own process: the same diff,
    examples and all, as the one pass over the file."""
    from producers.simulator import write_simulation

    events = tmp_path / "population.jsonl"
    write_simulation(events, 1500, 60, 5, story_rate=0.5, workers=1)
    old = load_rule_pack()
    new = load_rule_pack(variant(tmp_path, "t10.yaml", TENURE_10, tenure_version(2)))
    one_pass = diff_file(events, old, new, until_ms=T0 + 200 * D, workers=1).to_json()
    parallel = diff_file(events, old, new, until_ms=T0 + 200 * D, workers=2).to_json()
    assert parallel == one_pass
    assert one_pass["rules"]["recognize_tenure"]["removed"] > 0
    assert one_pass["examples"]


def test_cli_rules_diff_compares_the_ledger_details_only_with_strict(
    history: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import processors.diff

    seen: list[bool] = []
    real = processors.diff.diff_file

    def recording(*args: Any, strict: bool = False, **kwargs: Any) -> Any:
        seen.append(strict)
        return real(*args, strict=strict, **kwargs)

    monkeypatch.setattr(processors.diff, "diff_file", recording)
    new_path = variant(tmp_path, "t10.yaml", TENURE_10, tenure_version(2))
    args = ["rules", "diff", str(DEFAULT_PACK_PATH), str(new_path), "--events", str(history)]
    runner = CliRunner()
    for extra in ([], ["--strict"]):
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 0, result.output
    assert seen == [False, True]
