"""The uplift report: did the small moments pay off? Treated versus control.

Reads decisions and interaction events from JSON-lines files (what `moments replay`
writes and reads) or from the PostgreSQL sink, hands them to the pure
`processors.report.uplift`, and renders the result as a rich table or a chart
(docs/design.md, section 9). `simulation_rates` sizes the simulator's effects so the
report has a true effect to find. The command is `moments.cli.report`; this module
knows no CLI: bad input is an error value (`EffectsError`, `SchemaValidationError`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from functools import partial
from pathlib import Path

from rich.table import Table

from common.settings import Settings
from processors.engine.customer import made_by_person, person_made
from processors.engine.ids import in_holdout
from processors.engine.rules import Outcome, format_duration
from processors.report.uplift import (
    ActionRow,
    EventRow,
    RuleUplift,
    measure_uplift,
    wilson_interval,
)
from producers.simulator import Effects, Rates
from producers.simulator.teams import RaisedAction, Teams, Watch
from schemas.codec import (
    SchemaValidationError,
    action_status_from_json,
    decision_from_json,
    read_events_jsonl,
)
from schemas.records import InteractionEvent


class EffectsError(ValueError):
    """Simulated effects that cannot be: an unknown rule, a size that is no number or out
    of range."""


def uplift_from_files(
    outcomes: Mapping[str, Outcome], decisions: Path, events: Path, status: Path | None = None
) -> dict[str, RuleUplift]:
    """The report from a decisions file and an events file (JSON lines) and, for the done
    rates, the action status records (`replay --status-out`)."""
    actions = None if status is None else action_rows_from_status(status, set(outcomes))
    return measure_uplift(
        outcomes, _decision_rows(decisions, set(outcomes)), _event_rows(events), actions
    )


def action_rows_from_status(path: Path, rules: set[str]) -> list[ActionRow]:
    """(customer_id, rule, opened at, done at or None) per action of `rules` from a file of
    status records; an action is done when a `done` record exists (the engine never
    records one after the action lapsed). A bad line names itself."""
    opened: dict[str, tuple[str, str, int]] = {}
    done: dict[str, int] = {}
    with path.open("rb") as lines:
        for lineno, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(raw)
            except ValueError as exc:
                raise SchemaValidationError("<line>", f"not valid JSON: {exc}", where) from None
            if isinstance(obj, dict) and (
                obj.get("rule") not in rules or obj.get("status") not in ("open", "done")
            ):
                continue
            record = action_status_from_json(obj, where=where)
            if record.status == "open":
                opened.setdefault(record.action_id, (record.customer_id, record.rule, record.at))
            else:
                done.setdefault(record.action_id, record.at)
    return [
        (customer_id, rule, at, done.get(action_id))
        for action_id, (customer_id, rule, at) in opened.items()
    ]


def uplift_from_database(conninfo: str, outcomes: Mapping[str, Outcome]) -> dict[str, RuleUplift]:
    """The report from the PostgreSQL sink's tables."""
    import psycopg  # only a report from the database needs the driver

    from sinks.outcomes import action_rows, decision_rows, event_rows

    types = sorted(set().union(*(o.types for o in outcomes.values())))
    with psycopg.connect(conninfo) as conn:
        # No action row at all: the sink holds no actions (decisions only), so no done rate.
        actions = list(action_rows(conn, sorted(outcomes))) or None
        return measure_uplift(
            outcomes,
            decision_rows(conn, sorted(outcomes)),
            _by_person(event_rows(conn, types)),
            actions,
        )


def _decision_rows(path: Path, rules: set[str]) -> Iterator[tuple[str, str, str, int, str]]:
    """Fired / held_out decisions of `rules` from a JSON-lines file; a bad line names itself."""
    with path.open("rb") as lines:
        for lineno, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(raw)
            except ValueError as exc:
                raise SchemaValidationError("<line>", f"not valid JSON: {exc}", where) from None
            if isinstance(obj, dict) and (
                obj.get("rule") not in rules or obj.get("outcome") not in ("fired", "held_out")
            ):
                continue
            d = decision_from_json(obj, where=where)
            yield d.customer_id, d.rule, d.outcome, d.decided_at, d.decision_id


def _event_rows(path: Path) -> Iterator[EventRow]:
    for event in read_events_jsonl(path):
        yield event.customer_id, event.type, event.occurred_at, made_by_person(event)


def _by_person(rows: Iterable[tuple[str, str, int, str, str | None]]) -> Iterator[EventRow]:
    """Rows of the sink (channel and `attributes.submitted_by` last) as uplift event rows."""
    for customer_id, event_type, occurred_at, channel, submitted_by in rows:
        yield customer_id, event_type, occurred_at, person_made(channel, submitted_by)


def _pts(share: float) -> str:
    """A difference of shares in signed percentage points, never "-0.0"."""
    return f"{round(share * 100, 1) + 0.0:+.1f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def uplift_table(results: Mapping[str, RuleUplift]) -> Table:
    """The report as a rich table, one row per rule."""
    table = Table(title="Did it pay off? Treated vs control (95% CI: Newcombe hybrid score)")
    for name, justify in (
        ("rule: outcome", "left"),
        ("treated", "right"),
        ("control", "right"),
        ("treated rate", "right"),
        ("control rate", "right"),
        ("uplift [95% CI]", "right"),
        ("p", "right"),
        ("done", "right"),
        ("median h to done", "right"),
        ("verdict", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    both = 0
    for rule in sorted(results):
        r = results[rule]
        both += r.both
        ci = r.ci95
        uplift_text = (
            "–"
            if r.uplift is None or ci is None
            else f"{_pts(r.uplift)} pts\n[{_pts(ci[0])}, {_pts(ci[1])}]"
        )
        verdict = r.verdict
        style = "green" if verdict.startswith("pays") else "red" if "backfires" in verdict else ""
        verdict = verdict.split(" (")[0]
        table.add_row(
            f"[bold]{rule}[/]\n[dim]{r.outcome.better} {' / '.join(sorted(r.outcome.types))} "
            f"within {format_duration(r.outcome.within_ms)}[/]",
            f"{r.treated:,}",
            f"{r.control:,}",
            _pct(r.treated_rate),
            _pct(r.control_rate),
            uplift_text,
            "–" if r.p_value is None else f"{r.p_value:.3g}",
            _pct(r.done_rate),
            "–" if r.median_hours_to_done is None else f"{r.median_hours_to_done:.1f}",
            f"[{style}]{verdict}[/]" if style else verdict,
        )
    table.caption = (
        "rate = share of customers with at least one outcome event after the first decision; "
        "uplift > 0 is good (intention to treat: every treated customer counts, done or not); "
        "done = treated customers whose action was done before it lapsed"
        + (f"; {both} customers in both groups left out" if both else "")
    )
    return table


def write_uplift_chart(results: Mapping[str, RuleUplift], path: Path) -> None:
    """A PNG a manager reads: per rule, both rates with their 95% intervals, and the verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = sorted(results)
    fig, ax = plt.subplots(figsize=(10, 1.6 * max(len(rules), 1) + 1.2))
    labelled: set[str] = set()
    for row, rule in enumerate(reversed(rules)):
        r = results[rule]
        arms: list[tuple[str, int, int, float, str]] = [
            ("with the action", r.treated_with_outcome, r.treated, 0.18, "tab:blue"),
            ("control (held out)", r.control_with_outcome, r.control, -0.18, "tab:gray"),
        ]
        for label, x, n, offset, colour in arms:
            if n == 0:
                continue
            low, high = wilson_interval(x, n)
            rate = x / n
            ax.errorbar(
                rate * 100,
                row + offset,
                xerr=[[(rate - low) * 100], [(high - rate) * 100]],
                fmt="o",
                color=colour,
                capsize=4,
                label=None if label in labelled else label,
            )
            labelled.add(label)
            ax.annotate(
                f"{rate * 100:.1f}% of {n:,}",
                (high * 100, row + offset),
                xytext=(6, -3),
                textcoords="offset points",
                fontsize=8,
            )
        ci = r.ci95
        note = r.verdict
        if r.uplift is not None and ci is not None:
            note += f"  (uplift {_pts(r.uplift)} pts, 95% CI {_pts(ci[0])} to {_pts(ci[1])})"
        ax.text(0.01, row - 0.45, note, transform=ax.get_yaxis_transform(), fontsize=8.5)
    ax.set_yticks(range(len(rules)))
    labels = []
    for rule in reversed(rules):
        outcome = results[rule].outcome
        labels.append(f"{rule}\n{outcome.better} {', '.join(sorted(outcome.types))}")
    ax.set_yticklabels(labels, fontsize=8.5)
    ax.set_ylim(-0.7, len(rules) - 0.4)
    ax.set_xlim(left=min(0.0, ax.get_xlim()[0]), right=ax.get_xlim()[1] * 1.15)
    ax.set_xlabel("customers with the outcome (%), with 95% interval")
    ax.set_title("Did it pay off? Customers who got the action vs the control group")
    ax.grid(axis="x", alpha=0.3)
    if labelled:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def simulation_rates(settings: Settings, overrides: list[str], *, teams: bool = True) -> Rates:
    """The simulator's rates with the effects of the settings and `--effect RULE=SIZE`.

    Who would receive an action is decided by the engine's own holdout membership
    (`in_holdout`, with MOMENTS_HOLDOUT_PERCENT), so the simulated response and the
    report's control group agree. Raises `EffectsError` for effects that cannot be.
    """
    sizes = dict(settings.simulator.simulate_effects)
    for item in overrides:
        rule, sep, size = item.partition("=")
        try:
            sizes[rule.strip()] = float(size)
        except ValueError:
            sep = ""
        if not sep:
            raise EffectsError(
                f"--effect: expected RULE=SIZE, e.g. explain_first_bill=0.5, got {item!r}"
            )
    known = ("explain_first_bill", "thank_meter_reading", "recognize_tenure")
    unknown = sorted(set(sizes) - set(known))
    if unknown:
        raise EffectsError(
            f"simulated effects: no effect for {', '.join(unknown)}; known: {', '.join(known)}"
        )
    try:
        effects = Effects(
            **sizes, held_out=partial(in_holdout, percent=settings.engine.holdout_percent)
        )
    except ValueError as exc:
        raise EffectsError(str(exc)) from None
    if not teams:
        return Rates(effects=effects)
    return Rates(effects=effects, teams=Teams(watch=partial(_engine_watch, settings)))


def _engine_watch(settings: Settings) -> Watch:
    """The engine of `moments replay` (same pack, same settings, one partition) as the
    simulated teams' watch: each event in, the actions it raised out."""
    from processors.config import engine_config
    from processors.engine import Engine, load_rule_pack
    from processors.replay import Replayer

    engine = Engine(load_rule_pack(settings.engine.rules_path), engine_config(settings))
    feed = Replayer(engine).feeder()

    def watch(event: InteractionEvent) -> list[RaisedAction]:
        return [
            (a.action_id, a.customer_id, a.rule, a.destination, a.triggered_at, a.evidence)
            for a in feed(event).actions
        ]

    return watch
