"""Uplift statistics against published worked examples, and section 9's exact counting."""

from __future__ import annotations

import math

import pytest

from processors.engine.rules import Outcome
from processors.report.uplift import (
    measure_uplift,
    newcombe_interval,
    two_proportion_p_value,
    uplift_json,
    wilson_interval,
)

DAY = 86_400_000

# Newcombe RG (1998). Interval estimation for the difference between independent
# proportions: comparison of eleven methods. Statistics in Medicine 17:873-890, Table II,
# method 10 (hybrid score, no continuity correction), to 4 decimals. (The first example's
# difference is 56/70 - 48/80 = 0.2000.)
NEWCOMBE_1998_METHOD_10 = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((0, 10, 0, 10), (-0.2775, 0.2775)),
    ((10, 10, 0, 20), (0.6791, 1.0000)),
    ((10, 10, 0, 10), (0.6075, 1.0000)),
]


@pytest.mark.parametrize(("counts", "expected"), NEWCOMBE_1998_METHOD_10)
def test_newcombe_interval_matches_the_published_table(
    counts: tuple[int, int, int, int], expected: tuple[float, float]
) -> None:
    lower, upper = newcombe_interval(*counts)
    assert (round(lower, 4), round(upper, 4)) == expected


def test_wilson_interval_matches_newcombe_1998_single_proportion_examples() -> None:
    # Newcombe RG (1998) Two-sided confidence intervals for the single proportion,
    # Statistics in Medicine 17:857-872, Table I, method 3: 81/263 -> 0.2553 to 0.3662.
    assert tuple(round(v, 4) for v in wilson_interval(81, 263)) == (0.2553, 0.3662)
    assert tuple(round(v, 4) for v in wilson_interval(0, 20)) == (0.0, 0.1611)


def test_p_value_is_the_pearson_chi_square_of_the_two_by_two_table() -> None:
    # The pooled z-test is Pearson's chi-square test without continuity correction (z^2 = X^2),
    # computed here from the table's observed and expected counts.
    a, n1, c, n2 = 56, 70, 48, 80
    table = [[a, n1 - a], [c, n2 - c]]
    total = n1 + n2
    cols = [a + c, total - a - c]
    chi2 = sum(
        (table[i][j] - [n1, n2][i] * cols[j] / total) ** 2 / ([n1, n2][i] * cols[j] / total)
        for i in range(2)
        for j in range(2)
    )
    assert chi2 == pytest.approx(7.0235, abs=1e-4)
    expected = math.erfc(math.sqrt(chi2 / 2))  # P(chi2 with 1 df > X^2)
    assert two_proportion_p_value(a, n1, c, n2) == pytest.approx(expected, rel=1e-12)
    assert two_proportion_p_value(a, n1, c, n2) == pytest.approx(0.00804, abs=5e-5)


def test_p_value_is_one_when_the_pooled_standard_error_is_zero() -> None:
    assert two_proportion_p_value(0, 10, 0, 20) == 1.0
    assert two_proportion_p_value(10, 10, 20, 20) == 1.0


FEWER = Outcome(frozenset({"dispute_opened"}), 30 * DAY, "fewer")
MORE = Outcome(frozenset({"meter_reading_submitted"}), 30 * DAY, "more")


def test_counting_uses_the_first_decision_and_the_half_open_window() -> None:
    t0 = 100 * DAY
    decisions = [
        ("a", "bill", "fired", t0, "d1"),
        ("a", "bill", "fired", t0 + 5 * DAY, "d2"),  # not the first: ignored
        ("b", "bill", "fired", t0, "d3"),
        ("c", "bill", "held_out", t0, "d4"),
        ("d", "bill", "held_out", t0, "d5"),
        ("e", "bill", "suppressed", t0, "d6"),  # neither group
        ("f", "bill", "fired", t0, "d7"),
        ("f", "bill", "held_out", t0 + DAY, "d8"),  # both: in neither group
        ("g", "other", "fired", t0, "d9"),  # a rule without an outcome
    ]
    events = [
        ("a", "dispute_opened", t0 + 30 * DAY, True),  # exactly at the end of the window: counts
        ("b", "dispute_opened", t0, True),  # at the decision itself: does not count
        ("b", "dispute_opened", t0 + 30 * DAY + 1, True),  # after the window: does not count
        ("c", "dispute_opened", t0 + 1, True),
        ("d", "inquiry", t0 + 1, True),  # not an outcome type
        ("e", "dispute_opened", t0 + 1, True),
        ("f", "dispute_opened", t0 + 2 * DAY, True),
    ]
    result = measure_uplift({"bill": FEWER}, decisions, events)["bill"]
    assert (result.treated, result.control) == (2, 2)
    assert (result.treated_with_outcome, result.control_with_outcome) == (1, 1)
    assert result.both == 1
    assert result.uplift == 0.0  # control 1/2 - treated 1/2
    assert result.verdict == "no evidence either way"


def test_uplift_is_signed_so_that_positive_is_good() -> None:
    decisions = [(f"t{i}", "r", "fired", 0, f"t{i}") for i in range(100)]
    decisions += [(f"c{i}", "r", "held_out", 0, f"c{i}") for i in range(100)]
    events = [(f"t{i}", "dispute_opened", 1, True) for i in range(10)]
    events += [(f"c{i}", "dispute_opened", 1, True) for i in range(40)]
    events += [(f"t{i}", "meter_reading_submitted", 1, True) for i in range(40)]
    events += [(f"c{i}", "meter_reading_submitted", 1, True) for i in range(10)]
    fewer = measure_uplift({"r": FEWER}, decisions, events)["r"]
    assert fewer.uplift == pytest.approx(0.30)
    assert fewer.ci95 == pytest.approx(newcombe_interval(40, 100, 10, 100))
    assert fewer.verdict.startswith("pays off")
    more = measure_uplift({"r": MORE}, decisions, events)["r"]
    assert more.uplift == pytest.approx(0.30)
    backfire = measure_uplift(
        {"r": Outcome(MORE.types, MORE.within_ms, "fewer")}, decisions, events
    )
    assert backfire["r"].verdict.startswith("backfires")


def test_json_has_exactly_the_keys_of_section_9() -> None:
    decisions = [("a", "r", "fired", 0, "1"), ("b", "r", "held_out", 0, "2")]
    out = uplift_json(measure_uplift({"r": FEWER, "s": MORE}, decisions, []))
    assert set(out) == {"rules"}
    assert set(out["rules"]["r"]) == {
        "treated",
        "control",
        "treated_with_outcome",
        "control_with_outcome",
        "treated_rate",
        "control_rate",
        "uplift",
        "ci95",
        "p_value",
        "done_rate",
        "median_hours_to_done",
    }
    assert out["rules"]["r"]["p_value"] == 1.0
    assert out["rules"]["r"]["done_rate"] is None  # no status data given
    assert out["rules"]["s"]["uplift"] is None  # never decided: nothing to compare


def test_an_outcome_by_person_counts_only_events_a_person_made() -> None:
    """thank_meter_reading's outcome: another reading the customer made, not a meter's upload."""
    decisions = [("a", "r", "fired", 0, "1"), ("b", "r", "held_out", 0, "2")]
    events = [("a", "meter_reading_submitted", 1, False), ("b", "meter_reading_submitted", 1, True)]
    by_person = Outcome(MORE.types, MORE.within_ms, "more", by_person=True)
    result = measure_uplift({"r": by_person}, decisions, events)["r"]
    assert (result.treated_with_outcome, result.control_with_outcome) == (0, 1)
    anyone = measure_uplift({"r": MORE}, decisions, events)["r"]
    assert (anyone.treated_with_outcome, anyone.control_with_outcome) == (1, 1)


# Cross-check against statsmodels (a test dependency only): its Newcombe hybrid score
# interval for a difference of two independent proportions, and its pooled two-proportion
# z-test, over counts from tiny to large, with empty and full groups.
STATSMODELS_COUNTS = [
    (56, 70, 48, 80),
    (9, 10, 3, 10),
    (5, 56, 0, 29),
    (0, 10, 0, 20),
    (10, 10, 0, 20),
    (1, 3, 2, 3),
    (137, 1000, 162, 1000),
    (4210, 20000, 512, 2200),
    (0, 1, 1, 1),
]


@pytest.mark.parametrize("counts", STATSMODELS_COUNTS)
def test_interval_and_p_value_agree_with_statsmodels(counts: tuple[int, int, int, int]) -> None:
    from scipy.stats import norm
    from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

    x1, n1, x2, n2 = counts
    sm_lower, sm_upper = confint_proportions_2indep(
        x1, n1, x2, n2, method="newcomb", compare="diff", alpha=0.05
    )
    # The same method: equal to rounding error with statsmodels' own z ...
    exact = newcombe_interval(x1, n1, x2, n2, z=float(norm.ppf(0.975)))
    assert exact == pytest.approx((sm_lower, sm_upper), abs=1e-12)
    # ... and with ours (Z95, six decimals) within what that rounding moves.
    assert newcombe_interval(x1, n1, x2, n2) == pytest.approx((sm_lower, sm_upper), abs=1e-6)
    pooled = (x1 + x2) / (n1 + n2)
    if pooled in (0.0, 1.0):  # no variance: statsmodels divides by zero, ours says 1.0
        assert two_proportion_p_value(x1, n1, x2, n2) == 1.0
        return
    _, sm_p = proportions_ztest([x1, x2], [n1, n2], alternative="two-sided")
    assert two_proportion_p_value(x1, n1, x2, n2) == pytest.approx(sm_p, rel=1e-9, abs=1e-15)


def test_done_rate_counts_treated_customers_whose_earliest_action_was_done() -> None:
    decisions = [
        ("a", "r", "fired", 0, "1"),
        ("b", "r", "fired", 0, "2"),
        ("c", "r", "fired", 0, "3"),
        ("d", "r", "held_out", 0, "4"),
    ]
    hour = 3_600_000
    actions = [
        ("a", "r", 0, 2 * hour),  # done after 2 h
        ("b", "r", 0, None),  # never done (lapsed or still open) ...
        ("b", "r", 5 * DAY, 5 * DAY + 10 * hour),  # ... a later action of b's was: b is not
        ("c", "r", 0, 4 * hour),
        ("d", "r", 0, 1 * hour),  # not treated: no done-rate count, but a done action
        ("a", "other", 0, 1 * hour),  # another rule
    ]
    result = measure_uplift({"r": FEWER}, decisions, [], actions)["r"]
    assert result.treated == 3
    assert result.treated_done == 2
    assert result.done_rate == pytest.approx(2 / 3)
    assert result.median_hours_to_done == pytest.approx(3.0)  # of 1, 2, 4, 10 hours
    assert result.uplift is not None  # intention to treat: the undone stay treated
    untouched = measure_uplift({"r": FEWER}, decisions, [], [])["r"]
    assert untouched.done_rate == 0.0 and untouched.median_hours_to_done is None
