"""Every action carries the ledger's positives and negatives beside its balance (section 9)."""

from __future__ import annotations

from processors.engine import DictStore, Engine, load_rule_pack
from tests.support.engine import T0, H, ev, run_settled


def test_actions_carry_positives_negatives_and_their_balance() -> None:
    engine = Engine(load_rule_pack())
    out = run_settled(
        engine,
        DictStore(),
        ev("payment_received", T0, event_id="p1"),  # +1
        ev("payment_failed", T0 + H, event_id="n1"),  # -1
        ev("dispute_opened", T0 + 2 * H, event_id="n2", reference="D-1"),  # -1, fires a follow-up
    )
    [action] = [a for a in out.actions if a.rule == "case_follow_up"]
    details = action.details
    assert (
        details["relationship_positives"],
        details["relationship_negatives"],
        details["relationship_balance"],
    ) == ("1", "2", "-1")
    assert list(details) == sorted(details)  # still sorted by name
