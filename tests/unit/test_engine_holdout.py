"""Control groups (docs/design.md, section 5): only engagement rules are held out, a rule's own
holdout wins over the default, holdout is decided before the contact cap, and `rules check`
rejects a holdout on a service rule."""

from __future__ import annotations

from pathlib import Path

from processors.engine import DictStore
from processors.engine.rules import check_rule_pack
from tests.support.engine import T0, D, engine, ev, rule, run, run_settled, thanks, traced


def test_a_service_rule_is_never_held_out_at_any_percent() -> None:
    eng = engine(rule("care", {"kind": "match", "type": "inquiry"}), holdout_percent=100.0)
    out = run(eng, DictStore(), *(ev("inquiry", T0, customer=f"c{i}") for i in range(30)))
    assert {d.outcome for d in out.decisions} == {"fired"}


def test_an_engagement_rules_own_holdout_wins_over_the_default() -> None:
    eng = engine(
        thanks("always", holdout="100%"),
        thanks("never", holdout=0, type="inquiry"),
        holdout_percent=100.0,
    )
    out = run_settled(
        eng, DictStore(), ev("meter_reading_submitted", T0), ev("inquiry", T0 + 2 * D)
    )
    assert traced(out) == [("held_out", "held_out", T0), ("fired", "fired", T0 + 2 * D)]


def test_holdout_is_decided_before_the_contact_cap() -> None:
    eng = engine(thanks("first", 90), thanks("held", 10, holdout="100%"))
    out = run_settled(eng, DictStore(), ev("meter_reading_submitted", T0))
    assert traced(out, "held") == [("held_out", "held_out", T0)]  # not deferred


def test_rules_check_rejects_holdout_on_a_service_rule(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(
        "rules:\n"
        "  - {id: care, when: {kind: match, type: inquiry}, action: care, destination: care,\n"
        "     priority: 50, class: service, holdout: 10%, reason: Call them.}\n"
    )
    [problem] = check_rule_pack(pack)
    assert problem.startswith(f"{pack}: rule care: holdout: ")
    assert "service" in problem
