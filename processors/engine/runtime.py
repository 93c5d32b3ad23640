"""What the engine precomputes per rule: its pattern as a test, and `RuleRuntime` (ids'
prefixes, holdout, the reason template split into pieces, the details' readers), so a
decision does no lookups it can avoid. Built once per pack; pure.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

from processors.engine.candidates import matches
from processors.engine.cases import CASE
from processors.engine.interfaces import EngineConfig
from processors.engine.kinds import KINDS
from processors.engine.rendering import (
    BALANCE,
    LEDGER_DETAILS,
    PLACEHOLDERS,
    DetailGetter,
    EventDetail,
    Placeholder,
    detail_getter,
    event_detail,
    ledger_reader,
)
from processors.engine.rule_model import Pattern, Rule
from processors.engine.state import SINCE
from processors.engine.times import anniversary_ms
from schemas.records import InteractionEvent

#: How a listener tests an event: None when the index's type check is the whole pattern.
MatchTest = Callable[[InteractionEvent, str, dict[str, Any]], bool]


def _trivial(p: Pattern) -> bool:
    return p == Pattern(types=p.types)


def compile_pattern(p: Pattern) -> MatchTest | None:
    """`matches` specialised for one pattern (None when only its types matter).

    The tenure-only pattern (recognize_tenure listens to every event) gets its own
    closure; any other pattern is tested by `matches` itself.
    """
    if _trivial(p):
        return None
    years = p.min_tenure_years
    if years is not None and p == Pattern(types=p.types, min_tenure_years=years):

        def tenure(event: InteractionEvent, customer_id: str, state: dict[str, Any]) -> bool:
            since = state.get(SINCE)
            if since is None:
                return False
            anniversary = anniversaries.get(since)
            if anniversary is None:
                if len(anniversaries) >= 65_536:
                    anniversaries.clear()
                anniversary = anniversaries[since] = anniversary_ms(since, years)
            return event.occurred_at >= anniversary

        anniversaries: dict[str, int] = {}  # a str-keyed dict is cheaper than lru_cache's tuple
        return tenure

    def test(event: InteractionEvent, customer_id: str, state: dict[str, Any]) -> bool:
        return matches(p, event, customer_id, state)

    return test


class RuleRuntime:
    """What the engine precomputes per rule so a decision does no lookups it can avoid."""

    __slots__ = (
        "action",
        "action_prefix",
        "case_keyed",
        "cool_down_ms",
        "decision_prefix",
        "destination",
        "details",
        "due_by_ms",
        "engagement",
        "event_details",
        "first",
        "holdout",
        "latest_only",
        "needs_products",
        "owner",
        "placeholders",
        "priority",
        "reason_parts",
        "reason_tail",
        "rule",
        "rule_id",
        "version",
        "warm_up",
    )

    def __init__(self, rule: Rule, relationship: Any, config: EngineConfig) -> None:
        self.rule = rule
        # The rule's fields a decision reads, as attributes of this compiled class: reading
        # them from the (interpreted, frozen) Rule costs a generic attribute lookup each.
        self.rule_id: str = rule.id
        self.version: int = rule.version
        self.first = KINDS[rule.kind].consumes_key
        self.action: str = rule.action
        self.destination: str = rule.destination
        self.priority: int = rule.priority
        self.due_by_ms: int | None = rule.due_by_ms
        # Control groups are for engagement rules only: a service rule is never held out.
        holdout = rule.holdout_percent
        self.holdout = (
            0.0
            if rule.rule_class != "engagement"
            else (config.holdout_percent if holdout is None else holdout)
        )
        self.warm_up = config.emit_from_ms is not None
        self.latest_only = rule.latest_only
        self.needs_products = rule.needs_products
        self.owner = rule.owner
        #: Keyed by case: its first fired action is the case's follow-up (cases.py).
        self.case_keyed = rule.key_field == CASE or rule.correlate == CASE
        self.cool_down_ms = rule.cool_down_ms
        self.engagement = rule.rule_class == "engagement"
        self.action_prefix = rule.id + "\x1f"
        self.decision_prefix = f"decision\x1f{rule.id}\x1f"
        names = [name for name, _ in rule.details]
        # Details come out sorted by name with relationship_balance among them (None = that slot).
        self.details: tuple[tuple[str, DetailGetter | None], ...] | None = None
        self.event_details: tuple[EventDetail, ...] | None = None
        if len(set(names)) == len(names):
            getters: dict[str, DetailGetter | None] = {
                name: detail_getter(source) for name, source in rule.details
            }
            getters.update(dict.fromkeys(LEDGER_DETAILS))
            self.details = tuple(sorted(getters.items(), key=lambda item: item[0]))
            sources = dict(rule.details)
            self.event_details = tuple(
                (name, BALANCE, ledger_reader(LEDGER_DETAILS[name]), "")
                if getter is None
                else event_detail(name, sources[name])
                for name, getter in self.details
            )
        parsed = list(string.Formatter().parse(rule.reason))
        self.placeholders = tuple(
            (name, PLACEHOLDERS[name]) for name in dict.fromkeys(f for _, f, _, _ in parsed if f)
        )
        # The template split once into (literal, placeholder, getter) pieces + a literal tail,
        # so rendering joins strings instead of str.format parsing the template every time.
        self.reason_parts: tuple[tuple[str, str, Placeholder], ...] | None = None
        self.reason_tail = ""
        if all(
            f in PLACEHOLDERS and not spec and not conv
            for _, f, spec, conv in parsed
            if f is not None
        ):
            pieces: list[tuple[str, str, Placeholder]] = []
            literal = ""
            for text, name, _, _ in parsed:
                literal += text
                if name is not None:
                    pieces.append((literal, name, PLACEHOLDERS[name]))
                    literal = ""
            self.reason_parts = tuple(pieces)
            self.reason_tail = literal
