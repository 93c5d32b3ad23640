"""`outcome:` on engagement rules (docs/design.md 9.1): parsed, validated, refused on service."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.engine import load_rule_pack
from processors.engine.rules import Outcome, check_rule_pack

RULE = """
rules:
  - id: thank_you
    when: {{kind: match, type: meter_reading_submitted}}
    action: thank_you
    destination: recognition
    priority: 20
    class: {rule_class}
    reason: "Thank them."
    outcome: {outcome}
"""


def check(tmp_path: Path, outcome: str, rule_class: str = "engagement") -> list[str]:
    path = tmp_path / "pack.yaml"
    path.write_text(RULE.format(outcome=outcome, rule_class=rule_class), encoding="utf-8")
    return check_rule_pack(path)


def test_outcome_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "pack.yaml"
    path.write_text(
        RULE.format(
            outcome="{type: [meter_reading_submitted], within: 30d, better: more}",
            rule_class="engagement",
        ),
        encoding="utf-8",
    )
    rule = load_rule_pack(path).rule("thank_you")
    assert rule.outcome == Outcome(frozenset({"meter_reading_submitted"}), 30 * 86_400_000, "more")


@pytest.mark.parametrize(
    ("outcome", "field", "message"),
    [
        ("{within: 30d, better: fewer}", "outcome.type", "required"),
        ("{type: [], within: 30d, better: fewer}", "outcome.type", "non-empty"),
        ("{type: x, better: fewer}", "outcome.within", "required"),
        ("{type: x, within: 30, better: fewer}", "outcome.within", "unit"),
        ("{type: x, within: 30d, better: less}", "outcome.better", "fewer or more"),
        ("{type: x, within: 30d, better: more, after: 1d}", "outcome.after", "unknown"),
        ("[x]", "outcome", "mapping"),
    ],
)
def test_a_bad_outcome_names_file_rule_and_field(
    tmp_path: Path, outcome: str, field: str, message: str
) -> None:
    problems = check(tmp_path, outcome)
    assert any(
        p.startswith(f"{tmp_path / 'pack.yaml'}: rule thank_you: {field}: ") and message in p
        for p in problems
    ), problems


def test_a_service_rule_cannot_have_an_outcome(tmp_path: Path) -> None:
    problems = check(tmp_path, "{type: x, within: 30d, better: fewer}", rule_class="service")
    assert problems == [
        f"{tmp_path / 'pack.yaml'}: rule thank_you: outcome: only engagement rules have an "
        "outcome (a service rule has no control group)"
    ]


def test_every_engagement_rule_of_the_default_pack_says_what_it_should_change() -> None:
    pack = load_rule_pack()
    engagement = [r for r in pack.rules if r.rule_class == "engagement"]
    assert engagement
    for rule in engagement:
        assert rule.outcome is not None, rule.id
        assert "Outcome:" in rule.description, rule.id
    assert pack.rule("explain_first_bill").outcome == Outcome(
        frozenset({"dispute_opened", "complaint_filed"}), 60 * 86_400_000, "fewer"
    )
    assert all(r.outcome is None for r in pack.rules if r.rule_class == "service")
