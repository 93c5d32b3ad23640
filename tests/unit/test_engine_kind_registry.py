"""The rule kinds' registry (processors/engine/kinds.py) is the one place a kind is declared:
the loader reads its fields as it declares them, the state layout lists its keys, pack
switches keep what it says, and decisions give only the named outcomes and reasons."""

from __future__ import annotations

from typing import Any

import pytest

from processors.engine import DEFAULT_PACK_PATH, RulePackError, load_rule_pack, parse_rule_pack
from processors.engine.decisions import OUTCOMES, REASONS
from processors.engine.kinds import KEPT_AT_SWITCH, KINDS, RULE_KEYS, WhenField
from processors.engine.lifecycle import changed_fields
from processors.engine.state import COOL_DOWN_KEYS, OPTION_KEYS

BASE: dict[str, Any] = {
    "id": "r",
    "version": 1,
    "action": "a",
    "destination": "care",
    "priority": 50,
    "class": "service",
    "reason": "On {date}.",
}

#: A valid `when` of each kind.
WHEN: dict[str, dict[str, Any]] = {
    "match": {"kind": "match", "type": "inquiry"},
    "first": {"kind": "first", "type": "invoice_issued", "per": "product"},
    "count": {"kind": "count", "type": "inquiry", "window": "7d", "min_count": 3},
    "sequence": {
        "kind": "sequence",
        "first": {"type": "meter_reading_submitted"},
        "then": {"type": "payment_demand_issued"},
        "within": "7d",
    },
    "absence": {
        "kind": "absence",
        "first": {"type": "dispute_opened"},
        "missing": {"type": "dispute_resolved"},
        "within": "48h",
        "correlate": "reference",
    },
    "profile": {"kind": "profile", "min_tenure_years": 5},
    "relationship": {"kind": "relationship", "min_deficit": 2},
}


def problems(when: dict[str, Any]) -> list[str]:
    try:
        parse_rule_pack({"rules": [{**BASE, "when": when}]}, source="pack.yaml")
    except RulePackError as exc:
        return exc.problems
    return []


def test_every_kind_is_registered_under_its_name_and_has_an_example() -> None:
    assert all(kind.name == name for name, kind in KINDS.items())
    assert set(WHEN) == set(KINDS)


@pytest.mark.parametrize("name", sorted(WHEN))
def test_each_kind_loads_from_the_fields_it_declares(name: str) -> None:
    assert problems(WHEN[name]) == []


@pytest.mark.parametrize("name", sorted(WHEN))
def test_a_field_a_kind_does_not_declare_names_file_rule_and_field(name: str) -> None:
    assert problems({**WHEN[name], "bogus": 1}) == [
        f"pack.yaml: rule r: when.bogus: not a field of kind {name}"
    ]


@pytest.mark.parametrize(
    ("name", "spec"),
    [(name, spec) for name, kind in KINDS.items() for spec in kind.fields if spec.required],
)
def test_a_required_field_missing_names_it(name: str, spec: WhenField) -> None:
    when = {k: v for k, v in WHEN[name].items() if k != spec.yaml}
    assert any(p.startswith(f"pack.yaml: rule r: when.{spec.yaml}: ") for p in problems(when))


def test_an_unknown_kind_lists_the_registered_ones() -> None:
    assert problems({"kind": "sometimes"}) == [
        f"pack.yaml: rule r: when.kind: expected one of {', '.join(KINDS)}"
    ]


def test_profile_requires_its_tenure() -> None:
    assert problems({"kind": "profile", "type": "inquiry"}) == [
        "pack.yaml: rule r: when.min_tenure_years: required for kind profile"
    ]


def test_the_key_field_comes_from_the_kind() -> None:
    pack = load_rule_pack(DEFAULT_PACK_PATH)
    keyed = {rule.id: rule.key_field for rule in pack.rules if rule.key_field is not None}
    assert keyed == {
        "explain_first_bill": "product",
        "case_follow_up": "case",
        "case_unresolved": "case",
    }


def test_rule_keys_are_the_cool_down_and_option_keys_and_each_kinds_own() -> None:
    owned = [key for kind in KINDS.values() for key in kind.state_keys]
    assert len(owned) == len(set(owned))  # no two kinds claim one key
    assert not set(owned) & (set(COOL_DOWN_KEYS) | set(OPTION_KEYS))
    assert set(RULE_KEYS) == set(COOL_DOWN_KEYS) | set(OPTION_KEYS) | set(owned)
    assert set(COOL_DOWN_KEYS) <= KEPT_AT_SWITCH <= set(RULE_KEYS)
    for kind in KINDS.values():
        assert kind.kept_at_switch <= set(kind.state_keys)


def test_a_changed_field_is_spelled_as_its_kind_spells_it() -> None:
    old = parse_rule_pack({"rules": [{**BASE, "when": WHEN["absence"]}]}).rule("r")
    new = parse_rule_pack(
        {"rules": [{**BASE, "version": 2, "when": {**WHEN["absence"], "within": "24h"}}]}
    ).rule("r")
    assert changed_fields(old, new) == ["when.within"]


def test_outcomes_and_reasons_are_named_once() -> None:
    assert set(OUTCOMES) <= set(REASONS) | {"suppressed", "deferred"}
    assert len(set(REASONS)) == len(REASONS)
