"""Builders for engine tests: times, events, small rule packs and what an engine output holds."""

from __future__ import annotations

import itertools
import json
from typing import Any

from processors.engine import (
    Engine,
    EngineConfig,
    EngineOutput,
    StateStore,
    parse_rule_pack,
)
from schemas.records import Decision, InteractionEvent

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
H = 3_600_000
D = 24 * H
M = 60_000
_ids = itertools.count(1)


def ev(
    type_: str,
    at: int,
    *,
    customer: str = "c1",
    channel: str = "call",
    event_id: str | None = None,
    **fields: Any,
) -> InteractionEvent:
    """An InteractionEvent with a fresh event id unless one is given."""
    return InteractionEvent(
        event_id=event_id or f"e{next(_ids)}",
        customer_id=customer,
        channel=channel,
        type=type_,
        occurred_at=at,
        source="test",
        **fields,
    )


def run(engine: Engine, store: StateStore, *events: InteractionEvent) -> EngineOutput:
    """The outputs of processing `events` one after the other."""
    out = EngineOutput()
    for event in events:
        out.extend(engine.process(store, event))
    return out


def settle(engine: Engine, store: StateStore, at: int) -> EngineOutput:
    """The outputs of moving the partition's watermark to `at`: every timer due by then fires,
    among them the engagement rules' look at each event that occurred at or before `at`
    (engagement rules decide an event only once the watermark passes it)."""
    return engine.advance_watermark(store, at)


def run_settled(engine: Engine, store: StateStore, *events: InteractionEvent) -> EngineOutput:
    """`run`, then the watermark moved to the newest of `events`: what each event gives once
    everything that happened before it is known, service and engagement rules alike (nothing
    later than the events fires)."""
    out = run(engine, store, *events)
    if events:
        out.extend(settle(engine, store, max(e.occurred_at for e in events)))
    return out


def fired(out: EngineOutput, rule: str | None = None) -> list[str]:
    """The rules of the actions raised (of `rule` only, if given)."""
    return [a.rule for a in out.actions if rule is None or a.rule == rule]


def rule(rule_id: str, when: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A rule document with defaults for what the test does not care about."""
    return {
        "id": rule_id,
        "when": when,
        "action": rule_id,
        "destination": extra.pop("destination", "care"),
        "priority": extra.pop("priority", 50),
        "class": extra.pop("class_", "service"),
        "reason": extra.pop("reason", "Something happened {via} on {date}."),
        **extra,
    }


def engine(*rules: dict[str, Any], **config: Any) -> Engine:
    """An engine over a pack of `rules` (and `relationship`, if given) with `config`."""
    document: dict[str, Any] = {"rules": list(rules)}
    if "relationship" in config:
        document["relationship"] = config.pop("relationship")
    return Engine(parse_rule_pack(document), EngineConfig(**config))


def thanks(rule_id: str = "thanks", priority: int = 20, **extra: Any) -> dict[str, Any]:
    """An engagement rule on every meter reading."""
    return rule(
        rule_id,
        {"kind": "match", "type": extra.pop("type", "meter_reading_submitted")},
        class_="engagement",
        priority=priority,
        **extra,
    )


def traced(out: EngineOutput, rule_id: str | None = None) -> list[tuple[str, str, int]]:
    """(outcome, reason, decided_at) of each decision (of `rule_id` only, if given)."""
    return [
        (d.outcome, d.reason, d.decided_at)
        for d in out.decisions
        if rule_id is None or d.rule == rule_id
    ]


def only(out: EngineOutput, outcome: str, rule_id: str | None = None) -> Decision:
    """The one decision with `outcome` (of `rule_id`, if given); fails if not exactly one."""
    [decision] = [d for d in out.decisions if d.outcome == outcome and rule_id in (None, d.rule)]
    return decision


def status(
    type_: str, at: int, action_id: str | None, *, customer: str = "c1", **attributes: str
) -> InteractionEvent:
    """A status event of an action (docs/design.md 12): `action_acknowledged` /
    `action_reassigned` (attribute `owner`) or `action_done` (`resolution`), channel other,
    `reference` = the action id."""
    return ev(
        type_,
        at,
        customer=customer,
        channel="other",
        reference=action_id,
        attributes=dict(attributes),
    )


class JsonStore:
    """A StateStore that keeps only JSON text, like the worker's changelog: nothing the
    engine changes counts unless it is written back with `set`."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.text = {key: json.dumps(value) for key, value in (data or {}).items()}

    def get(self, key: str) -> Any | None:
        text = self.text.get(key)
        return None if text is None else json.loads(text)

    def set(self, key: str, value: Any) -> None:
        self.text[key] = json.dumps(value)

    def delete(self, key: str) -> None:
        self.text.pop(key, None)
