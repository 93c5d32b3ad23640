"""Events in and out: `publish`, `ingest`, `collect`, `simulate`, `topics`, `kcat`,
`timeline`."""

from __future__ import annotations

import contextlib
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from moments.cli.common import (
    UserError,
    app,
    console,
    err_console,
    friendly,
    load_settings,
    parse_time,
    require_broker,
    require_database,
)
from producers.adapters.registry import adapter_kinds


@app.command()
@friendly
def publish(
    file: Annotated[Path, typer.Argument(help="Interaction events, JSON lines.")],
) -> None:
    """Publish events from a JSON-lines file through the publisher SDK."""
    from common.topics import ensure_topics
    from producers.publisher import Publisher
    from schemas.codec import read_events_jsonl

    settings = require_broker(load_settings())
    ensure_topics(settings)
    events = list(read_events_jsonl(file))  # validate the whole file before sending anything
    with Publisher(settings) as publisher:
        for event in events:
            publisher.publish(event)
    console.print(f"published {len(events)} events to {settings.topics.interactions}")


#: Channel exports `moments ingest` understands: the kinds of the registered adapters.
ChannelKind = StrEnum("ChannelKind", [(kind, kind) for kind in adapter_kinds()])  # type: ignore[misc]


@app.command()
@friendly
def ingest(
    kind: Annotated[ChannelKind, typer.Argument(help="Which channel's export.")],
    path: Annotated[Path, typer.Argument(help="File or folder (maildir) to read.")],
    dry_run: Annotated[bool, typer.Option(help="Validate only; publish nothing.")] = False,
    mapping: Annotated[Path | None, typer.Option(help="Mapping file instead of defaults.")] = None,
    customers: Annotated[
        Path | None, typer.Option(help="email: sender address → customer id lookup (CSV).")
    ] = None,
) -> None:
    """Publish a channel's own export (any registered adapter's) as interaction events."""
    from common.topics import ensure_topics
    from producers.adapters.ingest import ingest as ingest_records
    from producers.adapters.ingest import rich_progress
    from producers.publisher import Publisher

    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    settings = load_settings()
    with contextlib.ExitStack() as stack:
        publisher = None
        if not dry_run:
            settings = require_broker(settings)
            ensure_topics(settings)
            publisher = stack.enter_context(Publisher(settings))
        progress = stack.enter_context(rich_progress(f"{kind.value} {path.name}", console))
        summary = ingest_records(
            kind.value,
            path,
            publisher,
            dry_run,
            mapping=mapping,
            customers=customers,
            progress=progress,
            max_future_skew_ms=settings.engine.max_future_skew_ms,
        )
    verb = "valid" if dry_run else "published"
    console.print(
        f"[green]{summary.accepted} {verb}[/], [red]{len(summary.rejected)} rejected[/]"
        f" of {summary.total} records in {escape(str(path))}"
    )
    for rejection in summary.rejected[:50]:  # customer text: printed as text, never as markup
        err_console.print(f"  rejected {escape(str(rejection))}", highlight=False, soft_wrap=True)
    if len(summary.rejected) > 50:
        err_console.print(f"  ... and {len(summary.rejected) - 50} more")


@app.command()
@friendly
def collect(
    insecure: Annotated[
        bool, typer.Option(help="Accept requests without an API key (local tests only).")
    ] = False,
    host: Annotated[str | None, typer.Option(help="Interface (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default MOMENTS_COLLECTOR_PORT).")] = None,
) -> None:
    """Serve the HTTP collector: POST /v1/events (one event or a batch, JSON form)."""
    from common.topics import ensure_topics
    from producers.collector import run_collector

    settings = require_broker(load_settings())
    ensure_topics(settings)
    run_collector(settings, insecure=insecure, host=host, port=port)


@app.command()
@friendly
def simulate(
    customers: Annotated[int, typer.Option(help="Population size.")] = 1000,
    days: Annotated[int, typer.Option(help="Days of history.")] = 30,
    seed: Annotated[int, typer.Option(help="Same seed, same events.")] = 1,
    out: Annotated[Path | None, typer.Option(help="Write JSON lines here.")] = None,
    publish: Annotated[bool, typer.Option("--publish", help="Publish to Kafka.")] = False,
    story_rate: Annotated[
        float | None, typer.Option(help="Share of customers living a seed story.")
    ] = None,
    start: Annotated[str | None, typer.Option(help="First day (ISO-8601).")] = None,
    effect: Annotated[
        list[str] | None,
        typer.Option(
            help="RULE=SIZE: how customers respond to that rule's action (repeatable; "
            "default MOMENTS_SIMULATE_EFFECTS; 0 = no effect)."
        ),
    ] = None,
) -> None:
    """Generate a realistic population's interactions through the channel adapters."""
    from common.topics import ensure_topics
    from moments.report import simulation_rates
    from producers.publisher import Publisher
    from producers.simulator import publish_simulation, write_simulation

    rates = simulation_rates(load_settings(), effect or [])
    if (out is None) == (not publish):
        raise UserError("give exactly one of --out FILE or --publish")
    if customers < 1 or days < 1:
        raise UserError("--customers and --days must be at least 1")
    start_ms = parse_time(start, "--start")
    if out is not None:
        with console.status(f"simulating {customers} customers over {days} days"):
            summary = write_simulation(
                out, customers, days, seed, start=start_ms, story_rate=story_rate, rates=rates
            )
        where = str(out)
    else:
        settings = require_broker(load_settings())
        ensure_topics(settings)
        with (
            console.status(f"publishing {customers} customers over {days} days"),
            Publisher(settings) as publisher,
        ):
            summary = publish_simulation(
                publisher,
                customers,
                days,
                seed,
                start=start_ms,
                story_rate=story_rate,
                rates=rates,
            )
        where = settings.topics.interactions
    console.print(
        f"{summary.events} events → {where} in {summary.seconds:.1f} s "
        f"({summary.events_per_second:,.0f} events/s)"
    )


@app.command()
@friendly
def topics() -> None:
    """Create every moments topic that is missing (idempotent)."""
    from common.topics import ensure_topics

    settings = require_broker(load_settings())
    created = ensure_topics(settings)
    console.print(f"created {len(created)} topics" + (f": {', '.join(created)}" if created else ""))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly
def kcat(
    args: Annotated[list[str] | None, typer.Argument(help="kcat's own arguments.")] = None,
    system_librdkafka: Annotated[
        bool, typer.Option(help="Use kcat's own librdkafka (fine against Apache Kafka).")
    ] = False,
) -> None:
    """Run kcat against this stack: -b filled in, on a librdkafka that can talk to Tansu."""
    import os

    from moments.kcat import KcatError, kcat_command

    settings = load_settings()
    try:
        argv, env = kcat_command(
            args or [],
            bootstrap=settings.kafka.bootstrap,
            data_dir=settings.stack.data_dir,
            base_env=os.environ,
            system_librdkafka=system_librdkafka,
        )
    except KcatError as exc:
        raise UserError(str(exc)) from None
    sys.stdout.flush()
    os.execve(argv[0], argv, env)


@app.command()
@friendly
def timeline(
    customer_id: Annotated[str, typer.Argument(help="The customer.")],
    limit: Annotated[int, typer.Option(help="At most this many entries.")] = 200,
) -> None:
    """Show one customer's events, actions and decisions in time order."""
    from sinks.relationship import customer_relationship, relationship_line
    from sinks.timeline import customer_timeline, timeline_table

    settings = require_database(load_settings())
    rows = customer_timeline(settings.database.database_url or "", customer_id, limit=limit)
    if not rows:
        raise UserError("no timeline for that customer")
    console.print(timeline_table(rows))
    strength = customer_relationship(settings.database.database_url or "", customer_id, limit=1)
    if strength is not None:
        console.print(relationship_line(strength))
