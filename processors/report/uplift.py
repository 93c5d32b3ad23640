"""Uplift: treated versus control for every engagement rule with an `outcome` (docs/design.md 9.1).

Pure counting and statistics over plain rows; it never reads a file, a topic or a
database itself (the CLI hands it decisions and events from JSON lines or from the
PostgreSQL sink) and knows no Kafka.

Counting, exactly: per rule with an outcome, a customer is *treated* from their first
`fired` decision of the rule and in *control* from their first `held_out` decision;
they count *with outcome* when at least one event of the outcome's types (made by a
person, for an outcome with `by: person`) has
decided_at < occurred_at <= decided_at + within. Both rates, their difference
(control - treated for `better: fewer`, treated - control for `better: more`, so a
positive uplift is always good), its 95% interval by Newcombe's hybrid Wilson score
method (Newcombe 1998, method 10) and the two-sided p-value of the pooled
two-proportion z-test (1.0 when the pooled standard error is 0).

A customer with both a `fired` and a `held_out` decision of the same rule (impossible
with deterministic membership unless the holdout percent changed within the period)
is in neither group: whichever came second, their outcome window is contaminated by
the other arm, and dropping a random few keeps both groups unbiased. The report
counts them separately (`RuleUplift.both`); the JSON of section 9 leaves them out.
Decisions near the end of the data have windows that are not over yet; both groups
are cut the same way, so the comparison stays fair while the rates read low.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from processors.engine.rules import Outcome

#: The 97.5% point of the standard normal distribution (two-sided 95%).
Z95: Final = 1.959964

#: (customer_id, rule, outcome, decided_at ms, decision_id): one decision.
DecisionRow = tuple[str, str, str, int, str]
#: (customer_id, type, occurred_at ms, made by a person): one interaction event.
EventRow = tuple[str, str, int, bool]
#: (customer_id, rule, triggered_at ms, done_at ms or None): one action and when it was
#: done (docs/design.md 12); done only when a `done` status came before it lapsed.
ActionRow = tuple[str, str, int, int | None]


# --- statistics --------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion (no continuity correction); n must be > 0."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}")
    p = successes / n
    centre = 2 * n * p + z * z
    spread = z * math.sqrt(z * z + 4 * n * p * (1 - p))
    denominator = 2 * (n + z * z)
    return max(0.0, (centre - spread) / denominator), min(1.0, (centre + spread) / denominator)


def newcombe_interval(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (1998, method 10) for p1 - p2 = x1/n1 - x2/n2."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, z)
    l2, u2 = wilson_interval(x2, n2, z)
    difference = p1 - p2
    lower = difference - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = difference + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return max(-1.0, lower), min(1.0, upper)


def two_proportion_p_value(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test; 1.0 when its SE is 0."""
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = (x1 / n1 - x2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2))


# --- counting ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleUplift:
    """One rule's comparison. Rates, uplift, interval and p-value are None without both groups."""

    rule: str
    outcome: Outcome
    treated: int
    control: int
    treated_with_outcome: int
    control_with_outcome: int
    #: Customers with both a fired and a held_out decision: in neither group.
    both: int = 0
    #: Treated customers whose first action of the rule was done; None without status data.
    treated_done: int | None = None
    #: Median hours from raised to done over the rule's done actions; None without any.
    median_hours_to_done: float | None = None

    @property
    def done_rate(self) -> float | None:
        """Share of the treated whose action was done before it lapsed."""
        if self.treated_done is None or not self.treated:
            return None
        return self.treated_done / self.treated

    @property
    def treated_rate(self) -> float | None:
        return self.treated_with_outcome / self.treated if self.treated else None

    @property
    def control_rate(self) -> float | None:
        return self.control_with_outcome / self.control if self.control else None

    @property
    def comparable(self) -> bool:
        return self.treated > 0 and self.control > 0

    def _arms(self) -> tuple[int, int, int, int]:
        """(x, n) of the arm whose rate is subtracted from, then of the other."""
        t = (self.treated_with_outcome, self.treated)
        c = (self.control_with_outcome, self.control)
        return (*c, *t) if self.outcome.better == "fewer" else (*t, *c)

    @property
    def uplift(self) -> float | None:
        if not self.comparable:
            return None
        x1, n1, x2, n2 = self._arms()
        return x1 / n1 - x2 / n2

    @property
    def ci95(self) -> tuple[float, float] | None:
        return newcombe_interval(*self._arms()) if self.comparable else None

    @property
    def p_value(self) -> float | None:
        return two_proportion_p_value(*self._arms()) if self.comparable else None

    @property
    def verdict(self) -> str:
        """Plain words that claim no more than the interval supports."""
        if not self.treated and not self.control:
            return "not decided in this period"
        if not self.control:
            return "no control group (set a holdout)"
        if not self.treated:
            return "never fired: nothing to compare"
        lower, upper = self.ci95 or (0.0, 0.0)
        if lower > 0:
            return "pays off (the whole interval is better)"
        if upper < 0:
            return "backfires (the whole interval is worse)"
        return "no evidence either way"

    def as_json(self) -> dict[str, Any]:
        """The per-rule object of section 9's JSON, keys exactly as the contract names them."""
        ci = self.ci95
        return {
            "treated": self.treated,
            "control": self.control,
            "treated_with_outcome": self.treated_with_outcome,
            "control_with_outcome": self.control_with_outcome,
            "treated_rate": self.treated_rate,
            "control_rate": self.control_rate,
            "uplift": self.uplift,
            "ci95": [ci[0], ci[1]] if ci is not None else None,
            "p_value": self.p_value,
            "done_rate": self.done_rate,
            "median_hours_to_done": self.median_hours_to_done,
        }


def uplift_json(results: Mapping[str, RuleUplift]) -> dict[str, Any]:
    """`{"rules": {RULE_ID: {...}}}`, rules sorted by id."""
    return {"rules": {rule: results[rule].as_json() for rule in sorted(results)}}


_GROUPS: Final = {"fired": 0, "held_out": 1}


def measure_uplift(
    outcomes: Mapping[str, Outcome],
    decisions: Iterable[DecisionRow],
    events: Iterable[EventRow],
    actions: Iterable[ActionRow] | None = None,
) -> dict[str, RuleUplift]:
    """Count treated / control customers and their outcomes for every rule in `outcomes`.

    `decisions` is read fully before `events`; both may come in any order. With `actions`,
    also the done rate (a treated customer counts done when their earliest action of the
    rule was done) and the median hours to done; the uplift stays intention-to-treat.
    """
    # (rule, customer) -> [first fired, first held_out] as (decided_at, decision_id)
    first: dict[tuple[str, str], list[tuple[int, str] | None]] = {}
    for customer_id, rule, outcome, decided_at, decision_id in decisions:
        group = _GROUPS.get(outcome)
        if group is None or rule not in outcomes:
            continue
        slots = first.get((rule, customer_id))
        if slots is None:
            slots = first[(rule, customer_id)] = [None, None]
        seen = slots[group]
        if seen is None or (decided_at, decision_id) < seen:
            slots[group] = (decided_at, decision_id)
    # customer -> [(rule, group, decided_at)] for the customers in exactly one group
    watched: dict[str, list[tuple[str, int, int]]] = {}
    both: dict[str, int] = dict.fromkeys(outcomes, 0)
    sizes: dict[str, list[int]] = {rule: [0, 0] for rule in outcomes}
    for (rule, customer_id), (fired, held) in first.items():
        if fired is not None and held is not None:
            both[rule] += 1
            continue
        group, decided = (0, fired) if fired is not None else (1, held)
        assert decided is not None
        sizes[rule][group] += 1
        watched.setdefault(customer_id, []).append((rule, group, decided[0]))
    measured = frozenset().union(*(o.types for o in outcomes.values())) if outcomes else frozenset()
    hit: set[tuple[str, str]] = set()
    for customer_id, event_type, occurred_at, by_person in events:
        if event_type not in measured:
            continue
        entries = watched.get(customer_id)
        if entries is None:
            continue
        for rule, _, decided_at in entries:
            measure = outcomes[rule]
            if (
                event_type in measure.types
                and decided_at < occurred_at <= decided_at + measure.within_ms
                and (by_person or not measure.by_person)
            ):
                hit.add((rule, customer_id))
    with_outcome: dict[str, list[int]] = {rule: [0, 0] for rule in outcomes}
    for rule, customer_id in hit:
        for entry_rule, group, _ in watched[customer_id]:
            if entry_rule == rule:
                with_outcome[rule][group] += 1
    done: dict[str, int] | None = None
    medians: dict[str, float | None] = {}
    if actions is not None:
        treated = {
            (rule, customer_id)
            for customer_id, entries in watched.items()
            for rule, group, _ in entries
            if group == 0
        }
        done, medians = _done(outcomes, actions, treated)
    return {
        rule: RuleUplift(
            rule=rule,
            outcome=outcomes[rule],
            treated=sizes[rule][0],
            control=sizes[rule][1],
            treated_with_outcome=with_outcome[rule][0],
            control_with_outcome=with_outcome[rule][1],
            both=both[rule],
            treated_done=None if done is None else done[rule],
            median_hours_to_done=medians.get(rule),
        )
        for rule in outcomes
    }


def _done(
    outcomes: Mapping[str, Outcome],
    actions: Iterable[ActionRow],
    treated: set[tuple[str, str]],
) -> tuple[dict[str, int], dict[str, float | None]]:
    """Per rule: treated customers whose earliest action was done, median hours to done."""
    earliest: dict[tuple[str, str], tuple[int, bool]] = {}
    hours: dict[str, list[float]] = {rule: [] for rule in outcomes}
    for customer_id, rule, triggered_at, done_at in actions:
        if rule not in outcomes:
            continue
        if done_at is not None:
            hours[rule].append((done_at - triggered_at) / 3_600_000)
        key = (rule, customer_id)
        if key in treated:
            seen = earliest.get(key)
            if seen is None or triggered_at < seen[0]:
                earliest[key] = (triggered_at, done_at is not None)
    done = dict.fromkeys(outcomes, 0)
    for (rule, _), (_, was_done) in earliest.items():
        done[rule] += was_done
    return done, {rule: _median(values) for rule, values in hours.items()}


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
