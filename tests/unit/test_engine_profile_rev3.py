"""Revision 3, the customer's truth (docs/design.md 11.3, 11.5): tenure from the earliest date,
first bills of new products, the ledger of the customer's own moments, address changes,
gathering, dates in the business's time zone, and the rule options the loader refuses."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from processors.engine import DictStore, RulePackError, check_rule_pack, load_rule_pack
from tests.support.engine import T0, D, H, M, ev, rule, settle
from tests.support.streams_rev3 import (
    actions_of,
    decisions_of,
    default_engine,
    feed,
    feed_settled,
    reasons_of,
)

FAR = T0 + 60 * D

# -- tenure ----------------------------------------------------------------------------------


def test_tenure_starts_at_the_earliest_customer_since_seen() -> None:
    """A younger date (a new product's start) never moves tenure, whatever arrives first."""
    eng = default_engine()
    store = DictStore()
    out = feed_settled(
        eng,
        store,
        [
            ev("inquiry", T0, customer_since=date(2024, 1, 1)),  # not yet five years
            ev("inquiry", T0 + H, customer_since=date(2015, 5, 5)),
            ev("inquiry", T0 + 2 * H, customer_since=date(2024, 6, 1)),
            ev("inquiry", T0 + 400 * D, customer_since=date(2025, 1, 1)),
        ],
    )
    assert [(a.triggered_at, a.details["customer_since"]) for a in out.actions] == [
        (T0 + H, "2015-05-05"),
        (T0 + 400 * D, "2015-05-05"),
    ]
    assert reasons_of(out, "recognize_tenure") == ["fired", "cool_down", "fired"]


# -- new products' first bills -----------------------------------------------------------------


def _invoice(at: int, product: str = "gas", **attributes: str) -> Any:
    return ev("invoice_issued", at, channel="billing", product=product, attributes=attributes)


@pytest.mark.parametrize(
    ("opened_before", "fires"),
    [(0, True), (89 * D, True), (90 * D, True), (90 * D + 1, False)],
)
def test_a_first_bill_is_explained_only_for_a_product_opened_within_90_days(
    opened_before: int, fires: bool
) -> None:
    at = T0 + 100 * D
    out = feed_settled(
        default_engine(),
        DictStore(),
        [ev("account_opened", at - opened_before, product="gas"), _invoice(at)],
    )
    assert reasons_of(out, "explain_first_bill") == (["fired"] if fires else ["not_new"])


def test_an_opening_of_another_product_or_after_the_bill_does_not_make_it_new() -> None:
    out = feed_settled(
        default_engine(),
        DictStore(),
        [
            ev("account_opened", T0, product="power"),
            ev("account_opened", T0 + 2 * D, product="gas"),
            _invoice(T0 + D),  # gas, opened a day after this bill
        ],
    )
    assert reasons_of(out, "explain_first_bill") == ["not_new"]


def test_a_first_invoice_attribute_makes_a_bill_new_without_an_opening() -> None:
    out = feed_settled(default_engine(), DictStore(), [_invoice(T0, first_invoice="true")])
    assert reasons_of(out, "explain_first_bill") == ["fired"]


def test_not_new_does_not_use_up_the_products_first_bill() -> None:
    out = feed_settled(
        default_engine(),
        DictStore(),
        [
            _invoice(T0, reference="INV-1"),
            ev("account_opened", T0 + 10 * D, product="gas"),
            _invoice(T0 + 20 * D),
            _invoice(T0 + 50 * D),
        ],
    )
    assert reasons_of(out, "explain_first_bill") == ["not_new", "fired", "already_raised"]


def test_new_within_is_refused_on_a_first_rule_not_keyed_by_product(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    first = rule(
        "welcome",
        {"kind": "first", "type": "invoice_issued", "per": "customer", "new_within": "90d"},
    )
    pack.write_text(yaml.safe_dump({"rules": [first]}), encoding="utf-8")
    assert check_rule_pack(pack) == [
        f"{pack}: rule welcome: when.new_within: only a first rule keyed by product (per: product)"
    ]


# -- the ledger: the customer's own moments only -----------------------------------------------


def test_the_ledger_counts_the_customers_own_moments_never_actions() -> None:
    eng = default_engine()
    out = feed_settled(
        eng,
        DictStore(),
        [
            ev("meter_reading_submitted", T0, channel="web"),  # own: +1, and thanked
            ev("meter_reading_submitted", T0 + H, channel="web",
               attributes={"submitted_by": "meter"}),  # a meter's upload
            ev("payment_received", T0 + 2 * H, channel="billing",
               attributes={"submitted_by": "agent"}),
            ev("payment_failed", T0 + 3 * H, channel="billing"),  # own: -1
            ev("feedback_given", T0 + 4 * H, channel="web"),  # own: +1
        ],
    )  # fmt: skip
    assert reasons_of(out, "thank_meter_reading") == ["fired"]
    [routed] = actions_of(out, "route_feedback")
    ledger = {k: v for k, v in routed.details.items() if k.startswith("relationship_")}
    assert ledger == {
        "relationship_balance": "1",
        "relationship_positives": "2",
        "relationship_negatives": "1",
    }


@pytest.mark.parametrize("field", ["positive_rules", "negative_rules"])
def test_a_ledger_of_rules_is_refused(tmp_path: Path, field: str) -> None:
    pack = tmp_path / "pack.yaml"
    document = {
        "relationship": {"window": "90d", field: ["thank_meter_reading"]},
        "rules": [rule("a", {"kind": "match", "type": "inquiry"})],
    }
    pack.write_text(yaml.safe_dump(document), encoding="utf-8")
    [problem] = check_rule_pack(pack)
    assert problem.startswith(f"{pack}: relationship.{field}: ")


# -- address changes -------------------------------------------------------------------------------


def _address(at: int, event_id: str, new: str) -> Any:
    return ev("address_changed", at, event_id=event_id, attributes={"new_address": new})


def test_an_older_address_change_arriving_after_a_newer_one_is_superseded() -> None:
    """The older change arrives once the newer one was decided (the watermark passed it)."""
    eng = default_engine()
    store = DictStore()
    out = feed_settled(
        eng,
        store,
        [
            ev("account_opened", T0 - D, product="gas"),
            _address(T0 + 2 * H, "new", "2 High St"),
        ],
    )
    out.extend(eng.process(store, _address(T0 + H, "old", "1 Low St")))
    out.extend(settle(eng, store, T0 + 3 * H))
    [applied] = actions_of(out, "propagate_address")
    assert applied.details["new_address"] == "2 High St"
    assert applied.details["effective_at"] == "2026-01-01T02:00:00.000+00:00"
    superseded = decisions_of(out, "propagate_address")[1]
    assert (superseded.outcome, superseded.reason, superseded.blocked_by, superseded.evidence) == (
        "suppressed",
        "superseded",
        applied.action_id,
        ["old"],
    )


def test_address_changes_in_time_order_are_all_propagated() -> None:
    out = feed_settled(
        default_engine(),
        DictStore(),
        [
            ev("account_opened", T0 - D, product="gas"),
            _address(T0 + H, "old", "1 Low St"),
            _address(T0 + 2 * H, "new", "2 High St"),
        ],
    )
    assert [a.details["effective_at"] for a in actions_of(out, "propagate_address")] == [
        "2026-01-01T01:00:00.000+00:00",
        "2026-01-01T02:00:00.000+00:00",
    ]


def test_a_customer_holding_no_product_has_nothing_to_update() -> None:
    eng = default_engine()
    store = DictStore()
    out = feed_settled(eng, store, [_address(T0, "a1", "1 Low St")])
    assert [(d.outcome, d.reason) for d in decisions_of(out, "propagate_address")] == [
        ("suppressed", "nothing_to_update")
    ]
    out = feed_settled(
        eng,
        store,
        [
            ev("account_opened", T0 + D, product="gas"),
            _address(T0 + 2 * D, "a2", "2 High St"),
            ev("account_closed", T0 + 3 * D, product="gas"),
            _address(T0 + 4 * D, "a3", "3 Mid St"),
        ],
    )
    assert reasons_of(out, "propagate_address") == ["fired", "nothing_to_update"]


# -- gathering -----------------------------------------------------------------------------------


def test_two_cancellations_within_an_hour_get_one_check_in_naming_both_products() -> None:
    eng = default_engine()
    store = DictStore()
    out = feed(
        eng,
        store,
        [
            ev("cancellation_requested", T0, product="gas", event_id="gas"),
            ev("cancellation_requested", T0 + 30 * M, product="power", event_id="power"),
            ev("inquiry", T0 + H + 5 * M - 1),  # the watermark is 1 ms short of T0 + 1 h
        ],
    )
    assert actions_of(out, "life_event_check_in") == []
    out = eng.process(store, ev("inquiry", T0 + H + 5 * M))
    [check_in] = actions_of(out, "life_event_check_in")
    assert (check_in.triggered_at, check_in.evidence) == (T0 + H, ["gas", "power"])
    assert check_in.details["products"] == "gas,power"
    assert "gas and power" in check_in.reason
    assert [(d.outcome, d.evidence) for d in decisions_of(out, "life_event_check_in")] == [
        ("fired", ["gas", "power"])
    ]


def test_a_cancellation_at_the_end_of_the_hour_still_joins_and_one_after_starts_anew() -> None:
    eng = default_engine()
    store = DictStore()
    out = feed(
        eng,
        store,
        [
            ev("cancellation_requested", T0, product="gas", event_id="a"),
            ev("cancellation_requested", T0 + H, product="gas", event_id="b"),
            ev("inquiry", T0 + 2 * H),
            ev("cancellation_requested", T0 + 3 * H, product="water", event_id="c"),
        ],
    )
    out.extend(eng.advance_watermark(store, FAR))
    assert [(d.reason, d.evidence) for d in decisions_of(out, "life_event_check_in")] == [
        ("fired", ["a", "b"]),
        ("cool_down", ["c"]),
    ]
    [check_in] = actions_of(out, "life_event_check_in")
    assert check_in.details["products"] == "gas"


def test_a_cancellation_just_after_the_window_does_not_lose_the_gathered_one() -> None:
    eng = default_engine()
    store = DictStore()
    out = feed(
        eng,
        store,
        [
            ev("cancellation_requested", T0, product="gas", event_id="first"),
            ev("cancellation_requested", T0 + H + M, product="power", event_id="next"),
        ],
    )
    out.extend(eng.advance_watermark(store, FAR))
    assert [
        (d.reason, d.evidence, d.decided_at) for d in decisions_of(out, "life_event_check_in")
    ] == [("fired", ["first"], T0 + H), ("cool_down", ["next"], T0 + 2 * H + M)]


def test_a_gathered_check_in_is_the_same_whatever_order_the_cancellations_arrive_in() -> None:
    gas = ev("cancellation_requested", T0, product="gas", event_id="gas")
    power = ev("cancellation_requested", T0 + 3 * M, product="power", event_id="power")
    in_order = feed(default_engine(), DictStore(), [gas, power, ev("inquiry", T0 + 2 * H)])
    reverse = feed(default_engine(), DictStore(), [power, gas, ev("inquiry", T0 + 2 * H)])
    [check_in] = actions_of(in_order, "life_event_check_in")
    assert (check_in.triggered_at, check_in.evidence) == (T0 + H, ["gas", "power"])
    assert actions_of(reverse, "life_event_check_in") == [check_in]


# -- dates in the business's time zone -------------------------------------------------------------


def test_reason_dates_are_in_the_configured_time_zone_and_times_stay_utc() -> None:
    at = T0 + 3 * H  # 2026-01-01T03:00Z is 2025-12-31 in New York
    events = [
        ev("account_opened", T0 - D, product="gas"),
        ev("feedback_given", at, channel="web", event_id="fb"),
        _address(at, "move", "1 Low St"),
    ]
    utc = feed_settled(default_engine(), DictStore(), events)
    local = feed_settled(default_engine(timezone="America/New_York"), DictStore(), events)
    [utc_feedback], [local_feedback] = (
        actions_of(utc, "route_feedback"),
        actions_of(local, "route_feedback"),
    )
    assert "on 2026-01-01" in utc_feedback.reason
    assert "on 2025-12-31" in local_feedback.reason
    assert local_feedback.triggered_at == utc_feedback.triggered_at == at
    [local_move] = actions_of(local, "propagate_address")
    assert local_move.details["effective_at"] == "2026-01-01T03:00:00.000+00:00"
    assert "on 2025-12-31" in local_move.reason


# -- rule options the loader refuses ------------------------------------------------------------

KIND_WHEN: dict[str, dict[str, Any]] = {
    "first": {"kind": "first", "type": "invoice_issued", "per": "product"},
    "count": {"kind": "count", "type": "inquiry", "window": "1d", "min_count": 2},
    "sequence": {
        "kind": "sequence",
        "first": {"type": "inquiry"},
        "then": {"type": "complaint_filed"},
        "within": "1d",
    },
    "absence": {
        "kind": "absence",
        "first": {"type": "inquiry"},
        "missing": {"type": "feedback_given"},
        "within": "1d",
    },
    "profile": {"kind": "profile", "min_tenure_years": 5},
    "relationship": {"kind": "relationship", "min_deficit": 3},
}


def _check(tmp_path: Path, **options: Any) -> tuple[Path, list[str]]:
    pack = tmp_path / "pack.yaml"
    when = options.pop("when")
    document = {"rules": [rule("opt", when, **options)]}
    pack.write_text(yaml.safe_dump(document), encoding="utf-8")
    return pack, check_rule_pack(pack)


@pytest.mark.parametrize(
    ("kind", "option", "value"),
    [
        ("first", "gather", "1h"),
        ("count", "gather", "1h"),
        ("absence", "gather", "1h"),
        ("profile", "gather", "1h"),
        ("first", "latest_only", True),
        ("count", "latest_only", True),
        ("sequence", "latest_only", True),
        ("profile", "latest_only", True),
        ("count", "needs_products", True),
        ("sequence", "needs_products", True),
        ("absence", "needs_products", True),
        ("relationship", "needs_products", True),
    ],
)
def test_a_rule_option_on_a_kind_that_cannot_take_it_is_refused_naming_file_rule_and_field(
    tmp_path: Path, kind: str, option: str, value: Any
) -> None:
    pack, problems = _check(tmp_path, when=KIND_WHEN[kind], **{option: value})
    [problem] = problems
    assert problem.startswith(f"{pack}: rule opt: {option}: not an option of kind {kind}")
    with pytest.raises(RulePackError):
        load_rule_pack(pack)


@pytest.mark.parametrize(
    ("when", "options"),
    [
        ({"kind": "match", "type": "inquiry"}, {"gather": "1d", "latest_only": True}),
        ({"kind": "match", "type": "inquiry"}, {"needs_products": True}),
        (KIND_WHEN["first"], {"needs_products": True}),
        (KIND_WHEN["profile"], {"needs_products": True}),
        (KIND_WHEN["count"], {"owner": True, "cool_down": "1d"}),
    ],
)
def test_rule_options_on_kinds_that_take_them_are_accepted(
    tmp_path: Path, when: dict[str, Any], options: dict[str, Any]
) -> None:
    assert _check(tmp_path, when=when, **options)[1] == []


def test_gathering_longer_than_a_day_is_refused(tmp_path: Path) -> None:
    pack, problems = _check(tmp_path, when={"kind": "match", "type": "inquiry"}, gather="25h")
    [problem] = problems
    assert problem.startswith(f"{pack}: rule opt: gather: at most 24 hours")


def test_an_owner_without_a_cool_down_is_refused(tmp_path: Path) -> None:
    pack, problems = _check(tmp_path, when={"kind": "match", "type": "inquiry"}, owner=True)
    assert problems == [f"{pack}: rule opt: owner: an owner needs a cool_down: how long it owns"]
