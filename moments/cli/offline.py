"""`moments replay`: the engine offline over a file or a topic, deterministically."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from moments.cli.common import (
    UserError,
    app,
    console,
    friendly,
    load_settings,
    parse_time,
    require_broker,
)


@app.command()
@friendly
def replay(
    events: Annotated[Path | None, typer.Argument(help="Interaction events, JSON lines.")] = None,
    actions_out: Annotated[Path, typer.Option(help="Where to write actions (JSON lines).")] = Path(
        "actions.jsonl"
    ),
    decisions_out: Annotated[Path | None, typer.Option(help="Also write every decision.")] = None,
    late_out: Annotated[
        Path | None,
        typer.Option(
            help="Also write the events too late to apply (older than their partition's "
            "watermark minus MOMENTS_MAX_LATENESS; not applied), JSON lines in the order read. "
            "Replays in one process."
        ),
    ] = None,
    status_out: Annotated[
        Path | None,
        typer.Option(
            help="Also write every change of an action's status (open, acknowledged, "
            "reassigned, overdue, done, lapsed), JSON lines: the records the worker sends to "
            "action-status (with --from-topic too). Replays in one process."
        ),
    ] = None,
    rules: Annotated[Path | None, typer.Option(help="Rule pack (default: built-in).")] = None,
    until: Annotated[
        str | None, typer.Option(help="Advance the clock to this time at the end (ISO-8601).")
    ] = None,
    partitions: Annotated[int, typer.Option(help="Keep one watermark per partition.")] = 1,
    emit_from: Annotated[
        str | None,
        typer.Option(
            help="History warm-up: candidates before this time (ISO-8601) build state but emit "
            "nothing (decision suppressed, reason warm_up). Default: MOMENTS_EMIT_FROM."
        ),
    ] = None,
    from_topic: Annotated[
        str | None,
        typer.Option(help="Backfill / shadow run: read this Kafka topic instead of a file."),
    ] = None,
    to_topics: Annotated[
        str | None,
        typer.Option(help="With --from-topic: also produce to topics with this prefix."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Processes sharing a file replay (same output as one): 0 = one per CPU on "
            "files of a few MB, 1 = one process. Default: MOMENTS_REPLAY_WORKERS.",
            min=0,
        ),
    ] = None,
    processes: Annotated[
        int,
        typer.Option(
            help="With --from-topic: processes sharing the topic's partitions (same output "
            "as one): 0 = one per usable CPU, at most one per partition.",
            min=0,
        ),
    ] = 0,
    rules_change: Annotated[
        list[str] | None,
        typer.Option(
            help="TS=FILE: switch to this rule pack before the first event at or after TS "
            "(ISO-8601); repeatable (docs/design.md 8.4)."
        ),
    ] = None,
) -> None:
    """Run the engine offline over a file (or a topic), deterministically; no side effects."""
    from processors.config import engine_config

    settings = load_settings()
    until_ms = parse_time(until, "--until")
    emit_from_ms = parse_time(emit_from, "--emit-from")
    if emit_from_ms is not None:
        settings = settings.replace(emit_from=datetime.fromtimestamp(emit_from_ms / 1000, tz=UTC))
    rules_path = rules or settings.engine.rules_path
    if from_topic is not None:
        from processors.backfill import backfill_topic

        if events is not None:
            raise UserError("give an events file or --from-topic, not both")
        if rules_change:
            raise UserError(
                "--rules-change replays an events file; it does not work with --from-topic yet"
            )
        backfill = backfill_topic(
            require_broker(settings),  # engine_config(settings) there: --emit-from holds too
            from_topic,
            actions_out=actions_out,
            decisions_out=decisions_out,
            late_out=late_out,
            status_out=status_out,
            to_topics=to_topics is not None,
            output_prefix=to_topics,
            rules_path=rules_path,
            until_ms=until_ms,
            processes=processes,
        )
        console.print(
            f"{backfill.events} events from {from_topic} → {backfill.actions} actions "
            f"({actions_out}), {backfill.decisions} decisions, {backfill.garbage} undecodable, "
            f"{backfill.future_dated} future-dated, {backfill.too_late} too late (not applied"
            f"{f', in {late_out}' if late_out is not None else ''}), "
            f"{backfill.erased} of erased customers dropped, "
            f"in {backfill.seconds:.2f} s "
            f"({backfill.events / max(backfill.seconds, 1e-9):,.0f} events/s, "
            f"{backfill.processes} process{'es' if backfill.processes > 1 else ''})"
        )
        return
    from processors.replay import replay_file

    if events is None:
        raise UserError("give an events file (JSON lines) or --from-topic TOPIC")
    changes = _rules_changes(rules_change or [], rules_path)
    summary = replay_file(
        events,
        actions_out=actions_out,
        decisions_out=decisions_out,
        rules_path=rules_path,
        until_ms=until_ms,
        partitions=partitions,
        config=engine_config(settings),
        changes=changes,
        workers=settings.engine.replay_workers if workers is None else workers,
        late_out=late_out,
        status_out=status_out,
    )
    shared = f", {summary.workers} processes" if summary.workers > 1 else ""
    late = f", {summary.too_late} too late ({late_out})" if late_out is not None else ""
    console.print(
        f"{summary.events} events → {summary.actions} actions ({actions_out}), "
        f"{summary.decisions} decisions{late} in {summary.seconds:.2f} s "
        f"({summary.events_per_second:,.0f} events/s{shared})"
    )


def _rules_changes(specs: list[str], first: Path | None) -> list[tuple[int, Any]]:
    """`--rules-change TS=FILE` options as (time, pack), each pack checked against the one
    before it in time order (a changed rule must raise its version) unless it is one of the
    packs before it again (a rollback)."""
    from processors.engine import load_rule_pack
    from processors.engine.lifecycle import same_rules, version_problems

    parsed = []
    for spec in specs:
        ts, sep, file = spec.partition("=")
        if not sep or not file:
            raise UserError(f"--rules-change {spec!r}: expected TS=FILE")
        at = parse_time(ts, "--rules-change")
        assert at is not None
        parsed.append((at, load_rule_pack(file)))
    parsed.sort(key=lambda change: change[0])
    previous = load_rule_pack(first)
    earlier = [previous]
    for _, pack in parsed:
        problems = version_problems(previous, pack)
        if problems and not any(same_rules(before, pack) for before in earlier):
            raise UserError("\n".join(problems))
        previous = pack
        earlier.append(pack)
    return parsed
