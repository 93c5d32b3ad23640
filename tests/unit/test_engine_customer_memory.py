"""What the engine remembers of a customer beyond a rule's window (docs/design.md, sections 3-5):
first keys (consumed by a deferred or held-out candidate, not by a suppressed one), the products
the customer holds, and the state a warm-up builds while it emits nothing."""

from __future__ import annotations

from datetime import date

from processors.engine import DictStore, Engine, EngineConfig, load_rule_pack
from processors.engine.interfaces import CUSTOMER_PREFIX
from tests.support.engine import (
    T0,
    D,
    H,
    engine,
    ev,
    only,
    rule,
    run,
    run_settled,
    thanks,
    traced,
)

# -- first keys --------------------------------------------------------------------------


def first_bill() -> Engine:
    return engine(
        thanks("cap_holder", 90),
        rule(
            "first_bill",
            {"kind": "first", "type": "invoice_issued", "per": "product"},
            class_="engagement",
            priority=60,
            due_by="1d",
        ),
    )


def test_a_deferred_first_candidate_consumes_its_key() -> None:
    eng = first_bill()
    store = DictStore()
    out = run_settled(
        eng,
        store,
        ev("meter_reading_submitted", T0),
        ev("invoice_issued", T0 + H, product="gas"),
        ev("invoice_issued", T0 + 2 * H, product="gas"),
    )
    deferred = only(out, "deferred", "first_bill")
    raised = only(out, "suppressed", "first_bill")
    assert (raised.reason, raised.blocked_by) == ("already_raised", deferred.action_id)


def test_a_suppressed_first_candidate_does_not_consume_its_key() -> None:
    eng = engine(
        rule(
            "first_bill",
            {"kind": "first", "type": "invoice_issued", "per": "product"},
            class_="engagement",
        )
    )
    store = DictStore()
    out = run_settled(eng, store, ev("invoice_issued", T0, product="gas", event_id="x"))
    out.extend(eng.process(store, ev("invoice_issued", T0, product="gas", event_id="x")))
    assert traced(out) == [("fired", "fired", T0), ("suppressed", "duplicate_event", T0)]
    rs = store.data[CUSTOMER_PREFIX + "c1"]["r"]["first_bill"]
    assert rs["k"] == ["gas"]


def test_a_held_out_first_candidate_consumes_its_key() -> None:
    eng = engine(
        rule(
            "first_bill",
            {"kind": "first", "type": "invoice_issued", "per": "product"},
            class_="engagement",
            holdout="100%",
        )
    )
    out = run_settled(
        eng,
        DictStore(),
        ev("invoice_issued", T0, product="gas"),
        ev("invoice_issued", T0 + 30 * D, product="gas"),
    )
    assert [d.reason for d in out.decisions] == ["held_out", "already_raised"]


# -- product holdings --------------------------------------------------------------------


def test_products_are_held_from_any_event_naming_them_until_account_closed() -> None:
    eng = Engine(load_rule_pack(), EngineConfig())
    store = DictStore()
    run(
        eng,
        store,
        ev("invoice_issued", T0, product="gas"),
        ev("meter_reading_submitted", T0 + H, product="electricity"),
        ev("inquiry", T0 + 2 * H, product="broadband"),
        ev("account_closed", T0 + 3 * H, product="broadband"),
    )
    out = run_settled(
        eng, store, ev("address_changed", T0 + 4 * H, attributes={"new_address": "X"})
    )
    [action] = [a for a in out.actions if a.rule == "propagate_address"]
    assert action.details["products"] == "electricity,gas"
    assert "(electricity, gas)" in action.reason
    late = eng.process(store, ev("invoice_issued", T0 + 2 * H, product="broadband"))  # before
    assert not [a for a in late.actions if a.rule == "propagate_address"]
    again = run_settled(eng, store, ev("address_changed", T0 + 5 * H))
    [action] = [a for a in again.actions if a.rule == "propagate_address"]
    assert action.details["products"] == "electricity,gas"


# -- history warm-up ---------------------------------------------------------------------


def test_warm_up_builds_state_but_emits_nothing_before_emit_from() -> None:
    start = T0 + 100 * D
    eng = Engine(load_rule_pack(), EngineConfig(emit_from_ms=start))
    store = DictStore()
    since = date(2010, 1, 1)
    history = run_settled(
        eng,
        store,
        ev("account_opened", T0 - D, product="gas", customer_since=since),
        ev("invoice_issued", T0, product="gas"),  # a new product's first invoice
        ev("meter_reading_submitted", start - H, product="gas"),
    )
    assert history.actions == []
    assert {(d.rule, d.outcome, d.reason) for d in history.decisions} >= {
        ("explain_first_bill", "suppressed", "warm_up"),
        ("recognize_tenure", "suppressed", "warm_up"),
        ("thank_meter_reading", "suppressed", "warm_up"),
    }
    out = run_settled(
        eng,
        store,
        ev("invoice_issued", start, product="gas"),  # the old product: no "first bill"
        # a new product's first bill an hour after a warm-up thanks: the cap was not built
        ev("invoice_issued", start + H, product="power", attributes={"first_invoice": "true"}),
        ev("meter_reading_submitted", start + 2 * H, product="gas"),  # its cool-down was
    )
    assert traced(out, "explain_first_bill") == [
        ("suppressed", "already_raised", start),
        ("fired", "fired", start + H),
    ]
    assert only(out, "suppressed", "explain_first_bill").blocked_by is None  # nothing was sent
    assert traced(out, "recognize_tenure")[0][:2] == ("suppressed", "cool_down")
    assert traced(out, "thank_meter_reading") == [("suppressed", "cool_down", start + 2 * H)]
    assert only(out, "suppressed", "thank_meter_reading").blocked_by is None
    assert [a.rule for a in out.actions] == ["explain_first_bill"]
