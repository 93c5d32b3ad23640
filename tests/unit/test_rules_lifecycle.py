"""Version discipline (docs/design.md 8.1): a changed rule must raise its version."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from moments.cli import app
from processors.engine import DEFAULT_PACK_PATH, load_rule_pack, parse_rule_pack
from processors.engine.lifecycle import (
    canonical_form,
    changed_fields,
    compare_packs,
    version_problems,
)
from tests.support.packs import TENURE_10, tenure_version, variant


def test_description_is_not_part_of_the_canonical_form() -> None:
    pack = load_rule_pack()
    rule = pack.rule("recognize_tenure")
    assert "description" not in canonical_form(rule)
    assert "version" not in canonical_form(rule)
    assert "reason" in canonical_form(rule)


def test_a_changed_rule_without_a_new_version_is_named_with_its_fields(tmp_path: Path) -> None:
    old = load_rule_pack()
    new = load_rule_pack(variant(tmp_path, "new.yaml", TENURE_10))
    problems = version_problems(old, new)
    assert len(problems) == 1
    assert "new.yaml" in problems[0]
    assert "rule recognize_tenure" in problems[0]
    assert "min_tenure_years" in problems[0] or "when" in problems[0]
    assert "raise it to 2" in problems[0]


def test_a_raised_version_or_a_new_description_passes(tmp_path: Path) -> None:
    old = load_rule_pack()
    raised = load_rule_pack(variant(tmp_path, "a.yaml", TENURE_10, tenure_version(2)))
    assert version_problems(old, raised) == []
    described = load_rule_pack(
        variant(
            tmp_path,
            "b.yaml",
            ("A cancellation on any channel often hides", "Any cancellation may hide"),
        )
    )
    assert version_problems(old, described) == []
    assert compare_packs(old, described).changed == ()


def test_compare_packs_sorts_rules_into_changed_removed_added() -> None:
    base = {"id": "a", "when": {"kind": "match", "type": "inquiry"}, "action": "x"}
    base |= {"destination": "care", "priority": 10, "class": "service", "reason": "r"}
    old = parse_rule_pack({"rules": [base, base | {"id": "b"}, base | {"id": "c"}]})
    new = parse_rule_pack(
        {"rules": [base, base | {"id": "b", "version": 2, "priority": 20}, base | {"id": "d"}]}
    )
    changes = compare_packs(old, new)
    assert (changes.unchanged, changes.changed, changes.removed, changes.added) == (
        ("a",),
        ("b",),
        ("c",),
        ("d",),
    )
    assert changed_fields(old.rule("b"), new.rule("b")) == ["priority"]


def test_pending_cancel_is_parsed_and_validated() -> None:
    base = {"id": "a", "when": {"kind": "match", "type": "inquiry"}, "action": "x"}
    base |= {"destination": "care", "priority": 10, "class": "service", "reason": "r"}
    assert parse_rule_pack({"rules": [base]}).rule("a").pending == "keep"
    assert parse_rule_pack({"rules": [base | {"pending": "cancel"}]}).rule("a").pending == "cancel"
    try:
        parse_rule_pack({"rules": [base | {"pending": "later"}]}, source="p.yaml")
    except ValueError as exc:
        assert "p.yaml" in str(exc) and "pending" in str(exc)
    else:
        raise AssertionError("pending: later was accepted")


def test_cli_rules_check_old_new(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = variant(tmp_path, "bad.yaml", TENURE_10)
    result = runner.invoke(app, ["rules", "check", str(DEFAULT_PACK_PATH), str(bad)])
    assert result.exit_code == 2
    assert "recognize_tenure" in result.output and "bad.yaml" in result.output
    good = variant(tmp_path, "good.yaml", TENURE_10, tenure_version(2))
    result = runner.invoke(app, ["rules", "check", str(DEFAULT_PACK_PATH), str(good)])
    assert result.exit_code == 0, result.output
    assert "1 changed (recognize_tenure)" in result.output
