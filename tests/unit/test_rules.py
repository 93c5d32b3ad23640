"""The rule language: loading, validation errors naming file, rule and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.engine import DEFAULT_PACK_PATH, RulePackError, check_rule_pack, load_rule_pack
from processors.engine.rules import format_duration, parse_duration

GOOD_RULE = """
  - id: ok_rule
    when: {kind: match, type: inquiry}
    action: call_back
    destination: care
    priority: 10
    class: service
    reason: "The customer asked something {via}."
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pack.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_default_pack_is_valid() -> None:
    assert check_rule_pack(DEFAULT_PACK_PATH) == []
    assert load_rule_pack().source == str(DEFAULT_PACK_PATH)


def test_every_problem_is_reported_with_file_rule_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "rules:"
        + GOOD_RULE
        + """
  - id: broken
    version: 0
    when: {kind: count, type: inquiry, window: 72, min_count: 0, colour: red}
    action: ""
    destination: sales
    priority: 101
    class: marketing
    cool_down: soon
    reason: "Hello {nobody}."
    details: {x: attributes., y: customer.shoe_size}
    surprise: true
  - id: ok_rule
    when: {kind: absence, first: {type: a}, within: 2h, correlate: colour}
    action: x
    destination: care
    priority: 1
    class: service
    reason: "Fine."
""",
    )
    problems = check_rule_pack(path)
    expected_fields = [
        ("broken", "surprise"),
        ("broken", "version"),
        ("broken", "action"),
        ("broken", "destination"),
        ("broken", "priority"),
        ("broken", "class"),
        ("broken", "cool_down"),
        ("broken", "reason"),
        ("broken", "details.x"),
        ("broken", "details.y"),
        ("broken", "when.colour"),
        ("broken", "when.window"),
        ("broken", "when.min_count"),
        ("ok_rule", "when.missing"),
        ("ok_rule", "when.correlate"),
    ]
    for rule_id, fld in expected_fields:
        prefix = f"{path}: rule {rule_id}: {fld}: "
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)
    with pytest.raises(RulePackError) as caught:
        load_rule_pack(path)
    assert caught.value.problems == problems
    assert str(caught.value).count("\n") == len(problems) - 1


def test_duplicate_ids_and_rules_or_a_type_both_ways_in_the_ledger(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "relationship: {negative_rules: [ok_rule], positive_rules: [ok_rule],"
        " positive: [a], negative: [a]}\nrules:" + GOOD_RULE + GOOD_RULE,
    )
    problems = check_rule_pack(path)
    assert f"{path}: rule ok_rule: id: duplicate rule id" in problems
    # the ledger counts the customer's own moments, never actions of rules
    for name in ("positive_rules", "negative_rules"):
        assert any(p.startswith(f"{path}: relationship.{name}: ") for p in problems), name
    assert any("relationship: both positive and negative" in p for p in problems)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "rules:\n  - id: x\n    when: {kind: match\n")
    [problem] = check_rule_pack(path)
    assert problem.startswith(f"{path}:") and "not valid YAML" in problem


def test_missing_file_and_wrong_shape(tmp_path: Path) -> None:
    [missing] = check_rule_pack(tmp_path / "nope.yaml")
    assert "cannot read the rule pack" in missing
    assert check_rule_pack(write(tmp_path, "- just a list\n")) == [
        f"{tmp_path / 'pack.yaml'}: <pack>: expected a mapping with a 'rules' list"
    ]


def test_predicate_must_be_importable(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "rules:"
        + GOOD_RULE.replace(
            "{kind: match, type: inquiry}",
            "{kind: match, type: inquiry, predicate: 'no.such.module:f'}",
        ),
    )
    [problem] = check_rule_pack(path, predicate_modules=["no.such"])
    assert problem.startswith(f"{path}: rule ok_rule: when.predicate: cannot import no.such.module")


def test_profile_needs_tenure_and_sequence_needs_both_patterns(tmp_path: Path) -> None:
    text = "rules:" + GOOD_RULE.replace("{kind: match, type: inquiry}", "{kind: profile}")
    problems = check_rule_pack(write(tmp_path, text))
    assert any("when.min_tenure_years: required for kind profile" in p for p in problems)
    text = "rules:" + GOOD_RULE.replace(
        "{kind: match, type: inquiry}", "{kind: sequence, first: {type: a}, within: 1d}"
    )
    problems = check_rule_pack(write(tmp_path, text))
    assert any("when.then: required" in p for p in problems)


@pytest.mark.parametrize(
    ("text", "ms"),
    [("48h", 172_800_000), ("30d", 2_592_000_000), ("5m", 300_000), ("1w", 604_800_000)],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("bad", ["48", 48, "two days", "3y", None, True])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_format_duration_for_reasons() -> None:
    assert format_duration(72 * 3_600_000) == "72 hours"
    assert format_duration(48 * 3_600_000) == "48 hours"
    assert format_duration(7 * 86_400_000) == "7 days"
    assert format_duration(476_919_000) == "5 days"  # never "476919 s"
    assert format_duration(3 * 3_600_000 + 20 * 60_000) == "3 hours 20 minutes"
    assert format_duration(90 * 60_000) == "1 hour 30 minutes"
    assert format_duration(3_600_000) == "1 hour"
    assert format_duration(20 * 60_000) == "20 minutes"
    assert format_duration(45_000) == "45 seconds"
