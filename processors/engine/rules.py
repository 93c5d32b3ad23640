"""The rule language: a YAML rule pack parsed into typed, validated `Rule` values.

This module says *what a rule says* (its pattern, action, destination,
priority, class, cool-down, reason template and details: the typed values are in
`rule_model.py`); `core.py` says *when it fires*. Loading validates everything
at once and raises one `RulePackError` listing every problem, each naming the
file, the rule and the field. It never evaluates rules and knows no Kafka.

A pack looks like this (see processors/rules/default.yaml for the real one)::

    relationship:                 # the ledger behind `kind: relationship` rules
      window: 90d
      positive: [payment_received, dispute_resolved]      # the customer's own moments
      negative: [dispute_opened, complaint_filed]
    rules:
      - id: life_event_check_in
        version: 1
        when: {kind: match, type: cancellation_requested}
        action: life_event_check_in
        destination: care
        priority: 80
        class: service
        cool_down: 30d
        reason: "The customer asked to cancel {product} {via}; ..."

Engagement rules may also say ``holdout: 10%`` (their own control group instead
of ``MOMENTS_HOLDOUT_PERCENT``; a service rule is never held out and a pack
giving one a holdout is rejected) and ``defer_for: 3d`` (how long a candidate
the contact cap defers waits when it has no ``due_by``; default 7 days).
A rule decides ``on_arrival`` (a service rule's default) or ``at_watermark`` (``decide:
at_watermark``; an engagement rule always): once the partition's watermark passes the
event, so what happened just before it within the allowed lateness is known whatever order
it arrived in (docs/design.md 11.1).
A new version of a rule may say ``pending: cancel``: at the switch to it, the
timers the earlier version set are dropped (decision ``suppressed``, reason
``rule_changed``) instead of firing as promised (``pending: keep``, the default).

Options of revision 3 (docs/design.md 11), each refused on a kind that cannot apply it:
``gather: 1h`` (match; at most 1 d: the matching events of one window make one candidate
at its end), ``latest_only: true`` (match: a change older than the newest applied one is
``superseded``), ``needs_products: true`` (match, first, profile: a customer holding no
product gets ``nothing_to_update``) and ``owner: true`` (needs a ``cool_down``: while its
action is open, lower-priority candidates of its destination are ``owned``). A ``first``
rule keyed by product may say ``when.new_within: 90d`` (``not_new`` otherwise). ``per``
and ``correlate`` may name ``case``: the customer's case (docs/design.md 11.2).

Actions that get done (docs/design.md 12): a rule with a ``due_by`` may say
``when_overdue: {action: NAME, destination: D, priority: P}`` (refused without a due_by):
when one of its actions is overdue, that service action is raised. A pack may give
destinations working hours, ``destinations: {care: {hours: "Mon-Fri 08:00-18:00",
holidays: [2026-12-25]}}`` (in MOMENTS_TIMEZONE): the due_by of their actions counts only
those hours (`processors.engine.hours`).

Pattern kinds (`when.kind`) and their fields (each kind is one class in kinds.py, listed in
`KINDS`, which declares the fields it reads; this loader reads them as it declares):

- ``match``: conditions on one event (below); fires on every matching event.
- ``first``: + ``per`` (``customer`` or an event field such as ``product`` or
  ``attributes.plan``); fires on the first matching event per key, once ever.
- ``count``: + ``window``, ``min_count``, optional ``min_channels``; fires when
  the matching events with occurred_at in [t - window, t] reach the count.
- ``sequence``: ``first`` (pattern A), ``then`` (pattern B), ``within``,
  optional ``correlate`` (event field); fires on B when an A happened at most
  ``within`` before it.
- ``absence``: ``first`` (A), ``missing`` (B), ``within``, optional
  ``correlate``; fires at A + within when no correlated B came in time, as
  soon as the partition's watermark passes that deadline.
- ``profile``: conditions + ``min_tenure_years`` (tenure from customer_since).
- ``relationship``: ``min_deficit``; fires when negatives - positives in the
  ledger window reach it.

What an engagement rule is meant to change (docs/design.md, section 9), measured by
`moments report uplift` against its control group; the engine ignores it::

    outcome: {type: [cancellation_requested, account_closed], within: 90d, better: fewer}

``type`` (one or more event types), ``within`` (a duration after the decision)
and ``better`` (``fewer`` or ``more`` such customers is better). Service rules
have no control group, so ``outcome`` on one is refused.

Conditions on an event (any kind, all optional): ``type``, ``channel``,
``product`` (a value or a list), ``fields`` (event field -> value or list;
``null`` means absent), ``attributes`` (key -> value or list),
``min_tenure_years``, ``by: person`` (an event a person made: ``attributes.submitted_by``
``customer``, or none and a call, email or web channel) and ``predicate``.

Python escape hatch: ``predicate: "package.module:function"`` names a pure
function ``(event: InteractionEvent, customer: CustomerProfile) -> bool``
that is imported once at load time; the event matches only if it returns
True. It must be deterministic and must not keep state of its own.
"""

from __future__ import annotations

import importlib
import os
import re
import string
from collections.abc import Collection, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import yaml

from processors.engine.hours import parse_holidays, parse_hours
from processors.engine.kinds import (
    COUNT,
    CUSTOMER_OR_FIELD,
    DURATION,
    EVENT_FIELD,
    KINDS,
    PATTERN,
)
from processors.engine.rule_model import (
    AT_WATERMARK,
    CASE_KEY_SOURCE,
    CUSTOMER_DETAIL_SOURCES,
    DECIDE_WHEN,
    DEFAULT_DEFER_FOR_MS,
    DEFAULT_PACK_PATH,
    ENGAGEMENT,
    EVENT_DETAIL_SOURCES,
    EVENT_FIELDS,
    KEEP,
    MAX_DURATION_MS,
    MAX_GATHER_MS,
    ON_ARRIVAL,
    OUTCOME_DIRECTIONS,
    PENDING_POLICIES,
    REASON_PLACEHOLDERS,
    RULE_CLASSES,
    SERVICE,
    BusinessHours,
    CustomerProfile,
    Escalation,
    Outcome,
    Pattern,
    Predicate,
    Relationship,
    Rule,
    RuleError,
    RulePack,
    RulePackError,
    format_duration,
    parse_duration,
    parse_percent,
)
from schemas.records import CHANNELS, DESTINATIONS, InteractionEvent

#: The rule pack's values (rule_model.py) are part of the language's surface.
__all__ = [
    "CUSTOMER_DETAIL_SOURCES",
    "DEFAULT_DEFER_FOR_MS",
    "DEFAULT_PACK_PATH",
    "EVENT_FIELDS",
    "OUTCOME_DIRECTIONS",
    "PENDING_POLICIES",
    "REASON_PLACEHOLDERS",
    "RULE_CLASSES",
    "CustomerProfile",
    "Outcome",
    "Pattern",
    "Predicate",
    "Relationship",
    "Rule",
    "RuleError",
    "RulePack",
    "RulePackError",
    "allowed_predicate_modules",
    "check_rule_pack",
    "format_duration",
    "load_rule_pack",
    "pack_from_text",
    "parse_duration",
    "parse_percent",
    "parse_rule_pack",
]

_RULE_ID = re.compile(r"^[a-z][a-z0-9_]*$")

#: The largest pack accepted (its YAML, in bytes): a partition keeps the text of each pack
#: its timers still need in its state (docs/design.md 8.3).
MAX_PACK_BYTES: Final = 256 * 1024
#: The modules (and their submodules) predicates may come from, comma-separated; nothing
#: else is imported (docs/design.md 8.2).
PREDICATE_MODULES_ENV: Final = "MOMENTS_PREDICATE_MODULES"
#: The project's own predicates: the allow-list when the environment names none.
DEFAULT_PREDICATE_MODULES: Final = ("processors.engine.predicates",)


def allowed_predicate_modules() -> tuple[str, ...]:
    """The modules predicates may come from: `MOMENTS_PREDICATE_MODULES`, else the
    project's own (`DEFAULT_PREDICATE_MODULES`)."""
    raw = os.environ.get(PREDICATE_MODULES_ENV, "").strip()
    if not raw:
        return DEFAULT_PREDICATE_MODULES
    return tuple(m.strip() for m in raw.split(",") if m.strip())


class GuardedPredicate:
    """A rule's predicate, whose failure is the rule's alone: an exception becomes a
    `RuleError` naming only its type (the engine then suppresses that rule's candidate,
    `rule_error`). Two guards of one function are equal, so a rule's canonical form does
    not change when its pack is parsed again."""

    __slots__ = ("func",)

    def __init__(self, func: Predicate) -> None:
        self.func = func

    def __call__(self, event: InteractionEvent, customer: CustomerProfile) -> bool:
        try:
            return bool(self.func(event, customer))
        except Exception as exc:
            raise RuleError(
                f"predicate {self.func.__module__}:{self.func.__name__} raised {type(exc).__name__}"
            ) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GuardedPredicate) and other.func is self.func

    def __hash__(self) -> int:
        return hash(self.func)


def load_rule_pack(
    path: Path | str | None = None, *, predicate_modules: Collection[str] | None = None
) -> RulePack:
    """Load and validate a pack (None = the default pack); raises RulePackError listing problems.
    `predicate_modules`: where predicates may come from (None: `allowed_predicate_modules`)."""
    pack, problems = _load(Path(path) if path is not None else DEFAULT_PACK_PATH, predicate_modules)
    if problems or pack is None:
        raise RulePackError(problems)
    return pack


def check_rule_pack(
    path: Path | str, *, predicate_modules: Collection[str] | None = None
) -> list[str]:
    """Every problem of a pack as one line each (file, rule, field); empty when it is valid."""
    return _load(Path(path), predicate_modules)[1]


def parse_rule_pack(
    document: Any,
    *,
    source: str = "<memory>",
    predicate_modules: Collection[str] | None = None,
) -> RulePack:
    """Validate an already parsed YAML document (tests, packs built in code)."""
    parser = _Parser(source, predicate_modules)
    pack = parser.pack(document)
    if parser.problems or pack is None:
        raise RulePackError(parser.problems)
    return pack


def pack_from_text(
    text: str, source: str, *, predicate_modules: Collection[str] | None = None
) -> RulePack:
    """Parse and validate a pack's YAML text; `RulePackError` names the source (and the
    line, for YAML that does not parse) for every problem."""
    pack, problems = _parse_text(text, source, predicate_modules)
    if problems or pack is None:
        raise RulePackError(problems)
    return pack


def _load(
    path: Path, predicate_modules: Collection[str] | None = None
) -> tuple[RulePack | None, list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [f"{path}: cannot read the rule pack: {exc.strerror or exc}"]
    return _parse_text(text, str(path), predicate_modules)


def _parse_text(
    text: str, source: str, predicate_modules: Collection[str] | None = None
) -> tuple[RulePack | None, list[str]]:
    size = len(text.encode("utf-8"))
    if size > MAX_PACK_BYTES:
        return None, [
            f"{source}: the pack is {size} bytes; at most {MAX_PACK_BYTES} (256 KB) are "
            "accepted (each partition keeps the packs its timers still need)"
        ]
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        return None, [f"{where}: not valid YAML: {problem}"]
    parser = _Parser(source, predicate_modules)
    pack = parser.pack(document)
    return pack, parser.problems


class _Parser:
    """Collects every problem instead of stopping at the first one."""

    def __init__(self, source: str, predicate_modules: Collection[str] | None = None) -> None:
        self.source = source
        self.problems: list[str] = []
        self.predicate_modules = (
            tuple(predicate_modules)
            if predicate_modules is not None
            else allowed_predicate_modules()
        )

    def problem(self, rule: str | None, fld: str, message: str) -> None:
        where = f"rule {rule}: " if rule else ""
        self.problems.append(f"{self.source}: {where}{fld}: {message}")

    # -- pack -------------------------------------------------------------------------

    def pack(self, document: Any) -> RulePack | None:
        if not isinstance(document, Mapping):
            self.problem(None, "<pack>", "expected a mapping with a 'rules' list")
            return None
        for key in document:
            if key not in ("rules", "relationship", "name", "description", "destinations"):
                self.problem(None, str(key), "unknown top-level field")
        relationship = self.relationship(document.get("relationship"))
        destinations = self.destinations(document.get("destinations"))
        raw_rules = document.get("rules")
        if not isinstance(raw_rules, list) or not raw_rules:
            self.problem(None, "rules", "expected a non-empty list of rules")
            return None
        rules: list[Rule] = []
        seen: set[str] = set()
        for index, raw in enumerate(raw_rules):
            rule = self.rule(index, raw)
            if rule is None:
                continue
            if rule.id in seen:
                self.problem(rule.id, "id", "duplicate rule id")
            seen.add(rule.id)
            rules.append(rule)
        return RulePack(
            rules=tuple(rules),
            relationship=relationship,
            source=self.source,
            destinations=destinations,
        )

    def destinations(self, raw: Any) -> tuple[tuple[str, BusinessHours], ...]:
        """`destinations: {care: {hours: "Mon-Fri 08:00-18:00", holidays: [2026-12-25]}}`:
        the working hours of destinations (docs/design.md 12)."""
        if raw is None:
            return ()
        if not isinstance(raw, Mapping):
            self.problem(None, "destinations", "expected a mapping of destination -> hours")
            return ()
        out: list[tuple[str, BusinessHours]] = []
        for destination, spec in raw.items():
            where = f"destinations.{destination}"
            if destination not in DESTINATIONS:
                self.problem(None, where, f"expected one of {', '.join(DESTINATIONS)}")
                continue
            if not isinstance(spec, Mapping):
                self.problem(None, where, "expected a mapping with 'hours' (and 'holidays')")
                continue
            for key in spec:
                if key not in ("hours", "holidays"):
                    self.problem(None, f"{where}.{key}", "unknown field")
            try:
                hours = parse_hours(spec.get("hours"))
            except ValueError as exc:
                self.problem(None, f"{where}.hours", str(exc))
                continue
            try:
                holidays = parse_holidays(spec.get("holidays"))
            except ValueError as exc:
                self.problem(None, f"{where}.holidays", str(exc))
                continue
            out.append((str(destination), replace(hours, holidays=holidays)))
        return tuple(sorted(out, key=lambda item: item[0]))

    def escalation(self, name: str, raw: Any, due_by: int | None) -> Escalation | None:
        """`when_overdue: {action, destination, priority}` (needs a due_by)."""
        if not isinstance(raw, Mapping):
            self.problem(name, "when_overdue", "expected {action, destination, priority}")
            return None
        for key in raw:
            if key not in ("action", "destination", "priority"):
                self.problem(name, f"when_overdue.{key}", "unknown field")
        if due_by is None:
            self.problem(name, "when_overdue", "needs a due_by: an action is overdue only after it")
        action, destination, priority = (
            raw.get("action"),
            raw.get("destination"),
            raw.get("priority"),
        )
        if not isinstance(action, str) or not action:
            self.problem(name, "when_overdue.action", "required, a non-empty string")
        if destination not in DESTINATIONS:
            self.problem(
                name, "when_overdue.destination", f"expected one of {', '.join(DESTINATIONS)}"
            )
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 100:
            self.problem(name, "when_overdue.priority", "expected an integer 0-100")
            return None
        if due_by is None or not isinstance(action, str) or not action:
            return None
        return Escalation(action=action, destination=str(destination), priority=priority)

    def relationship(self, raw: Any) -> Relationship:
        if raw is None:
            return Relationship()
        if not isinstance(raw, Mapping):
            self.problem(None, "relationship", "expected a mapping")
            return Relationship()
        allowed = ("window", "positive", "negative")
        for key in raw:
            if key in ("positive_rules", "negative_rules"):
                self.problem(
                    None,
                    f"relationship.{key}",
                    "the ledger counts the customer's own moments only, never moments' own "
                    "actions (docs/design.md 11.3): list event types in positive / negative",
                )
            elif key not in allowed:
                self.problem(None, f"relationship.{key}", "unknown field")
        window = Relationship().window_ms
        if "window" in raw:
            window = self.duration(None, "relationship.window", raw["window"]) or window
        sets = {
            name: frozenset(self.names(None, f"relationship.{name}", raw.get(name, [])) or ())
            for name in allowed[1:]
        }
        overlap = sets["positive"] & sets["negative"]
        if overlap:
            self.problem(None, "relationship", f"both positive and negative: {sorted(overlap)}")
        return Relationship(window_ms=window, **sets)

    # -- rule -------------------------------------------------------------------------

    def rule(self, index: int, raw: Any) -> Rule | None:
        if not isinstance(raw, Mapping):
            self.problem(f"#{index + 1}", "<rule>", "expected a mapping")
            return None
        rid = raw.get("id")
        name = rid if isinstance(rid, str) and rid else f"#{index + 1}"
        if not isinstance(rid, str) or not _RULE_ID.match(rid):
            self.problem(name, "id", "required, lower_snake_case (letters, digits, _)")
        allowed = {
            "id",
            "version",
            "when",
            "action",
            "destination",
            "priority",
            "class",
            "cool_down",
            "reason",
            "due_by",
            "details",
            "description",
            "outcome",
            "holdout",
            "defer_for",
            "pending",
            "decide",
            "when_overdue",
            *RULE_OPTIONS,
        }
        for key in raw:
            if key not in allowed:
                self.problem(name, str(key), "unknown field")
        version = raw.get("version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            self.problem(name, "version", "expected a positive integer")
            version = 1
        action = raw.get("action")
        if not isinstance(action, str) or not action:
            self.problem(name, "action", "required, a non-empty string")
        destination = raw.get("destination")
        if destination not in DESTINATIONS:
            self.problem(name, "destination", f"expected one of {', '.join(DESTINATIONS)}")
        priority = raw.get("priority")
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 100:
            self.problem(name, "priority", "expected an integer 0-100")
            priority = 0
        rule_class = raw.get("class")
        if rule_class not in RULE_CLASSES:
            self.problem(name, "class", "expected service or engagement")
        cool_down = None
        if raw.get("cool_down") is not None:
            cool_down = self.duration(name, "cool_down", raw["cool_down"])
        due_by = None
        if raw.get("due_by") is not None:
            due_by = self.duration(name, "due_by", raw["due_by"])
        holdout, defer_for = self.control(name, raw, rule_class)
        when_overdue = None
        if raw.get("when_overdue") is not None:
            when_overdue = self.escalation(name, raw["when_overdue"], due_by)
        reason = raw.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            self.problem(name, "reason", "required: a sentence a care agent can read")
            reason = ""
        else:
            self.template(name, reason)
        details = self.details(name, raw.get("details", {}))
        decide = raw.get("decide", AT_WATERMARK if rule_class == ENGAGEMENT else ON_ARRIVAL)
        if decide not in DECIDE_WHEN:
            self.problem(name, "decide", f"expected one of {', '.join(DECIDE_WHEN)}")
            decide = ON_ARRIVAL
        elif rule_class == ENGAGEMENT and decide != AT_WATERMARK:
            self.problem(
                name,
                "decide",
                "an engagement rule always decides at_watermark (consent, open cases and the "
                "contact cap must know what happened just before, docs/design.md 11.1)",
            )
        pending = raw.get("pending", KEEP)
        if pending not in PENDING_POLICIES:
            self.problem(name, "pending", f"expected one of {', '.join(PENDING_POLICIES)}")
            pending = KEEP
        description = raw.get("description", "")
        if not isinstance(description, str):
            self.problem(name, "description", "expected a string")
            description = ""
        outcome = None
        if raw.get("outcome") is not None:
            outcome = self.outcome(name, raw["outcome"], rule_class)
        when = raw.get("when")
        if not isinstance(when, Mapping):
            self.problem(name, "when", "required: a mapping with a 'kind'")
            return None
        kind_fields = self.when(name, when)
        options = self.options(name, raw, kind_fields, cool_down)
        if kind_fields is None or self.problems_for(name):
            return None
        return Rule(
            id=str(rid),
            version=version,
            action=str(action),
            destination=str(destination),
            priority=priority,
            rule_class=str(rule_class),
            reason=reason,
            cool_down_ms=cool_down,
            due_by_ms=due_by,
            details=details,
            description=description,
            holdout_percent=holdout,
            defer_for_ms=defer_for,
            outcome=outcome,
            pending=str(pending),
            decide=str(decide),
            when_overdue=when_overdue,
            **options,
            **kind_fields,
        )

    def options(
        self,
        name: str,
        raw: Mapping[str, Any],
        kind_fields: dict[str, Any] | None,
        cool_down: int | None,
    ) -> dict[str, Any]:
        """The rule-level options of revision 3 (`RULE_OPTIONS`), each only on a kind that
        can apply it (`Kind.options`)."""
        out: dict[str, Any] = {}
        kind = KINDS[kind_fields["kind"]] if kind_fields is not None else None
        for option in RULE_OPTIONS:
            if raw.get(option) is None:
                continue
            if kind is not None and option not in kind.options:
                self.problem(
                    name,
                    option,
                    f"not an option of kind {kind.name} (kinds that take it: "
                    + ", ".join(k.name for k in KINDS.values() if option in k.options)
                    + ")",
                )
                continue
            value = raw[option]
            if option == "gather":
                gather = self.duration(name, option, value)
                if gather is not None and gather > MAX_GATHER_MS:
                    self.problem(
                        name,
                        option,
                        f"at most {format_duration(MAX_GATHER_MS)} (a gathered candidate "
                        "waits that long before anyone is contacted)",
                    )
                    continue
                out["gather_ms"] = gather
            elif not isinstance(value, bool):
                self.problem(name, option, "expected true or false")
            elif option == "owner" and value and cool_down is None:
                self.problem(name, option, "an owner needs a cool_down: how long it owns")
            else:
                out[option] = value
        return out

    def control(
        self, name: str, raw: Mapping[str, Any], rule_class: Any
    ) -> tuple[float | None, int]:
        """`holdout` (engagement rules only) and `defer_for` (default 7 days)."""
        holdout = None
        if raw.get("holdout") is not None:
            if rule_class == SERVICE:
                self.problem(
                    name,
                    "holdout",
                    "a service rule is an obligation and is never held out; control groups "
                    "are for engagement rules only",
                )
            else:
                try:
                    holdout = parse_percent(raw["holdout"])
                except ValueError as exc:
                    self.problem(name, "holdout", str(exc))
        defer_for = DEFAULT_DEFER_FOR_MS
        if raw.get("defer_for") is not None:
            defer_for = self.duration(name, "defer_for", raw["defer_for"]) or defer_for
        return holdout, defer_for

    def outcome(self, name: str, raw: Any, rule_class: Any) -> Outcome | None:
        if rule_class == SERVICE:
            self.problem(
                name,
                "outcome",
                "only engagement rules have an outcome (a service rule has no control group)",
            )
            return None
        if not isinstance(raw, Mapping):
            self.problem(name, "outcome", "expected a mapping with type, within and better")
            return None
        for key in raw:
            if key not in ("type", "within", "better", "by"):
                self.problem(name, f"outcome.{key}", "unknown field (use type, within, better, by)")
        by = raw.get("by")
        if by is not None and by != "person":
            self.problem(name, "outcome.by", "expected person (only events a person made count)")
        types = self.value_set(name, "outcome.type", raw.get("type"))
        if raw.get("type") is None:
            self.problem(name, "outcome.type", "required: the event type(s) that measure it")
        within = self.duration(name, "outcome.within", raw.get("within"))
        better = raw.get("better")
        if better not in OUTCOME_DIRECTIONS:
            self.problem(name, "outcome.better", "expected fewer or more")
        if types is None or within is None or better not in OUTCOME_DIRECTIONS:
            return None
        return Outcome(types=types, within_ms=within, better=str(better), by_person=by == "person")

    def problems_for(self, name: str) -> bool:
        marker = f"{self.source}: rule {name}: "
        return any(p.startswith(marker) for p in self.problems)

    def when(self, name: str, when: Mapping[str, Any]) -> dict[str, Any] | None:
        """The `Rule` fields of a rule's `when`, read as its kind (kinds.KINDS) says."""
        raw_kind = when.get("kind")
        kind = KINDS.get(raw_kind) if isinstance(raw_kind, str) else None
        if kind is None:
            self.problem(name, "when.kind", f"expected one of {', '.join(KINDS)}")
            return None
        own = {f.yaml for f in kind.fields}
        condition_keys = _CONDITION_KEYS if kind.conditions else ()
        for key in when:
            if key != "kind" and key not in own and key not in condition_keys:
                self.problem(name, f"when.{key}", f"not a field of kind {kind.name}")
        out: dict[str, Any] = {"kind": kind.name}
        if kind.conditions:
            out["pattern"] = self.pattern(name, "when", when)
        for spec in kind.fields:
            raw = when.get(spec.yaml)
            if raw is None and not spec.required:
                if spec.default is not None:
                    out[spec.attr] = spec.default
                continue
            out[spec.attr] = self.when_field(name, f"when.{spec.yaml}", spec.read, raw)
        for fld, message in kind.check(out):
            self.problem(name, fld, message)
        out["key_field"] = kind.key_field(out)
        return out

    def when_field(self, name: str, fld: str, read: str, raw: Any) -> Any:
        """One field of `when`, read the way its kind declares (kinds.WhenField.read)."""
        if read == PATTERN:
            if not isinstance(raw, Mapping):
                self.problem(name, fld, "required: a mapping of conditions")
                return None
            return self.pattern(name, fld, raw)
        if read == DURATION:
            return self.duration(name, fld, raw)
        if read == COUNT:
            return self.positive_int(name, fld, raw)
        if read == CUSTOMER_OR_FIELD and raw == "customer":
            return raw
        if read in (EVENT_FIELD, CUSTOMER_OR_FIELD):
            return self.field_name(name, fld, raw)
        raise ValueError(f"{fld}: unknown way to read a field: {read!r}")

    def pattern(self, name: str, prefix: str, raw: Mapping[str, Any]) -> Pattern:
        if prefix != "when":
            for key in raw:
                if key not in _CONDITION_KEYS:
                    self.problem(name, f"{prefix}.{key}", "not a condition")
        types = self.value_set(name, f"{prefix}.type", raw.get("type"))
        channels = self.value_set(name, f"{prefix}.channel", raw.get("channel"))
        for ch in sorted(channels or ()):
            if ch not in CHANNELS:
                self.problem(name, f"{prefix}.channel", f"unknown channel {ch!r}")
        products = self.value_set(name, f"{prefix}.product", raw.get("product"))
        fields: list[tuple[str, frozenset[str | None]]] = []
        raw_fields = raw.get("fields", {})
        if not isinstance(raw_fields, Mapping):
            self.problem(name, f"{prefix}.fields", "expected a mapping field -> value(s)")
        else:
            for key, value in raw_fields.items():
                if key not in EVENT_FIELDS:
                    self.problem(name, f"{prefix}.fields.{key}", "not an event field")
                    continue
                values = value if isinstance(value, list) else [value]
                fields.append((str(key), frozenset(None if v is None else str(v) for v in values)))
        attributes: list[tuple[str, frozenset[str]]] = []
        raw_attrs = raw.get("attributes", {})
        if not isinstance(raw_attrs, Mapping):
            self.problem(name, f"{prefix}.attributes", "expected a mapping key -> value(s)")
        else:
            for key, value in raw_attrs.items():
                values = value if isinstance(value, list) else [value]
                attributes.append((str(key), frozenset(str(v) for v in values)))
        tenure = raw.get("min_tenure_years")
        if tenure is not None:
            tenure = self.positive_int(name, f"{prefix}.min_tenure_years", tenure)
        by = raw.get("by")
        if by is not None and by != "person":
            self.problem(name, f"{prefix}.by", "expected person (events a person made)")
        predicate_name = raw.get("predicate")
        predicate = None
        if predicate_name is not None:
            predicate = self.predicate(name, f"{prefix}.predicate", predicate_name)
        return Pattern(
            types=types,
            channels=channels,
            products=products,
            fields=tuple(sorted(fields)),
            attributes=tuple(sorted(attributes)),
            min_tenure_years=tenure,
            by_person=by == "person",
            predicate=predicate,
            predicate_name=predicate_name if predicate is not None else None,
        )

    # -- small validators -------------------------------------------------------------

    def value_set(self, name: str, fld: str, raw: Any) -> frozenset[str] | None:
        if raw is None:
            return None
        values = raw if isinstance(raw, list) else [raw]
        if not values or not all(isinstance(v, str) and v for v in values):
            self.problem(name, fld, "expected a non-empty string or list of strings")
            return None
        return frozenset(values)

    def names(self, name: str | None, fld: str, raw: Any) -> list[str] | None:
        if not isinstance(raw, list) or not all(isinstance(v, str) and v for v in raw):
            self.problem(name, fld, "expected a list of names")
            return None
        return list(raw)

    def duration(self, name: str | None, fld: str, raw: Any) -> int | None:
        if raw is None:
            self.problem(name, fld, "required: a duration such as '48h' or '30d'")
            return None
        try:
            ms = parse_duration(raw)
        except ValueError as exc:
            self.problem(name, fld, str(exc))
            return None
        if ms <= 0:
            self.problem(name, fld, "must be longer than zero")
            return None
        if ms > MAX_DURATION_MS:
            self.problem(name, fld, "at most 10 years (3650d)")
            return None
        return ms

    def positive_int(self, name: str, fld: str, raw: Any) -> int | None:
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            self.problem(name, fld, "required: a positive integer")
            return None
        return raw

    def field_name(self, name: str, fld: str, raw: Any) -> str | None:
        if isinstance(raw, str) and (
            raw in EVENT_FIELDS or raw == CASE_KEY_SOURCE or raw.startswith("attributes.")
        ):
            return raw
        self.problem(
            name, fld, "expected an event field (e.g. reference), case or attributes.<key>"
        )
        return None

    def predicate(self, name: str, fld: str, raw: Any) -> Predicate | None:
        if not isinstance(raw, str) or raw.count(":") != 1:
            self.problem(name, fld, "expected 'package.module:function'")
            return None
        module_name, func_name = raw.split(":")
        allowed = self.predicate_modules
        if not any(module_name == m or module_name.startswith(m + ".") for m in allowed):
            # checked before importing: importing a module runs its code
            self.problem(
                name,
                fld,
                f"module {module_name} is not allowed to give predicates (allowed: "
                f"{', '.join(allowed) or 'none'}; set {PREDICATE_MODULES_ENV})",
            )
            return None
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            self.problem(name, fld, f"cannot import {module_name}: {exc}")
            return None
        func = getattr(module, func_name, None)
        if not callable(func) or getattr(func, "__module__", None) != module_name:
            self.problem(name, fld, f"{module_name} defines no function {func_name}")
            return None
        return GuardedPredicate(func)

    def template(self, name: str, template: str) -> None:
        try:
            parts = list(string.Formatter().parse(template))
        except ValueError as exc:
            self.problem(name, "reason", f"bad template: {exc}")
            return
        for _, placeholder, spec, conversion in parts:
            if placeholder is None:
                continue
            if placeholder not in REASON_PLACEHOLDERS or spec or conversion:
                self.problem(
                    name,
                    "reason",
                    f"unknown placeholder {{{placeholder}}}; use one of "
                    + ", ".join(sorted(REASON_PLACEHOLDERS)),
                )

    def details(self, name: str, raw: Any) -> tuple[tuple[str, str], ...]:
        if not isinstance(raw, Mapping):
            self.problem(name, "details", "expected a mapping detail -> source")
            return ()
        out: list[tuple[str, str]] = []
        for key, source in raw.items():
            ok = isinstance(source, str) and (
                source in EVENT_FIELDS
                or source in EVENT_DETAIL_SOURCES
                or source in CUSTOMER_DETAIL_SOURCES
                or (source.startswith("attributes.") and len(source) > len("attributes."))
            )
            if not ok:
                self.problem(
                    name,
                    f"details.{key}",
                    "expected an event field, attributes.<key> or one of "
                    + ", ".join(CUSTOMER_DETAIL_SOURCES),
                )
                continue
            if key in ("relationship_balance", "relationship_positives", "relationship_negatives"):
                self.problem(name, f"details.{key}", "reserved: the engine sets it")
                continue
            out.append((str(key), str(source)))
        return tuple(out)


_CONDITION_KEYS: Final = (
    "type",
    "channel",
    "product",
    "fields",
    "attributes",
    "min_tenure_years",
    "by",
    "predicate",
)
#: Rule-level options of revision 3 (docs/design.md 11), each taken by the kinds whose
#: `Kind.options` name it.
RULE_OPTIONS: Final = ("gather", "latest_only", "needs_products", "owner")
