"""Events in and out: `publish`, `ingest`, `collect`, `simulate`, `topics`, `kcat`,
`timeline`."""

from __future__ import annotations

import contextlib
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
    printable_rows,
    require_broker,
    require_database,
    serving,
)
from producers.adapters.registry import adapter_kinds

if TYPE_CHECKING:
    from common.settings import Settings


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
    out: Annotated[
        Path | None,
        typer.Option(help="Write the events here as JSON lines (what replay reads); no broker."),
    ] = None,
    evaluate: Annotated[
        Path | None,
        typer.Option(
            help="Labels CSV (message_id,type): print precision, recall and confusion per "
            "type instead of publishing."
        ),
    ] = None,
) -> None:
    """Publish a channel's own export (any registered adapter's) as interaction events."""
    from common.topics import ensure_topics
    from producers.adapters.ingest import JsonLinesOut, rich_progress
    from producers.adapters.ingest import ingest as ingest_records
    from producers.publisher import Publisher

    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if sum(option is not None and option is not False for option in (out, evaluate, dry_run)) > 1:
        raise UserError("give at most one of --dry-run, --out FILE and --evaluate LABELS")
    if evaluate is not None:
        _evaluate(kind.value, path, evaluate, mapping, customers)
        return
    settings = load_settings()
    with contextlib.ExitStack() as stack:
        publisher: JsonLinesOut | Publisher | None = None
        if out is not None:
            try:
                publisher = stack.enter_context(JsonLinesOut(out))
            except OSError as exc:
                raise UserError(f"{out}: cannot write: {exc.strerror}") from None
        elif not dry_run:
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
    verb = "valid" if dry_run else "written" if out is not None else "published"
    skipped = summary.skipped_by_reason
    console.print(
        f"[green]{summary.accepted} {verb}[/], [red]{len(summary.rejected)} rejected[/]"
        + "".join(f", {count} skipped ({reason})" for reason, count in sorted(skipped.items()))
        + f" of {summary.total} records in {escape(str(path))}"
        + (f" → {escape(str(out))}" if out is not None else "")
    )
    for rejection in summary.rejected[:50]:  # customer text: printed as text, never as markup
        err_console.print(f"  rejected {escape(str(rejection))}", highlight=False, soft_wrap=True)
    if len(summary.rejected) > 50:
        err_console.print(f"  ... and {len(summary.rejected) - 50} more")


def _evaluate(
    kind: str, path: Path, labels_path: Path, mapping: Path | None, customers: Path | None
) -> None:
    """`ingest --evaluate`: the adapter's types against labels, as two rich tables."""
    from rich.box import SIMPLE_HEAD
    from rich.table import Table

    from producers.adapters.evaluation import evaluate, read_labels

    labels = read_labels(labels_path)
    with console.status(f"classifying {path.name}"):
        result, _ = evaluate(kind, path, labels, mapping=mapping, customers=customers)
    if not result.pairs:
        raise UserError(f"no record of {path} has a label in {labels_path}")

    def figure(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    scores = Table(title=f"{kind}: {len(result.pairs)} labelled records")
    for column in ("type", "precision", "recall", "support"):
        scores.add_column(column, justify="left" if column == "type" else "right")
    for event_type in result.types:
        precision, recall, support = result.precision_recall(event_type)
        scores.add_row(escape(event_type), figure(precision), figure(recall), str(support))
    console.print(scores)
    confusion = result.confusion()
    table = Table(
        title="confusion: rows expected, columns predicted",
        box=SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    table.add_column("expected", no_wrap=True)
    for event_type in result.types:  # a type's first letters: the table fits 80 columns
        table.add_column(escape(event_type[:5]), justify="right", min_width=5, no_wrap=True)
    for expected in result.types:
        cells = [confusion.get((expected, predicted), 0) for predicted in result.types]
        table.add_row(
            escape(expected),  # a labels file's words: text, never markup
            *(
                f"[bold]{n}[/]" if e == expected and n else (str(n) if n else "[dim]·[/]")
                for n, e in zip(cells, result.types, strict=True)
            ),
        )
    console.print(table)
    console.print(
        f"accuracy {result.accuracy:.3f}; not scored: {result.unlabelled} without a label,"
        f" {result.unmatched} rejected or skipped without an id,"
        f" {result.missing} labels with no record here"
    )


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
    where = (
        f"http://{host or settings.collector.collector_host}:"
        f"{settings.collector.collector_port if port is None else port}/v1/events"
    )
    with serving(
        settings, "collector", f"{where} into {settings.topics.interactions}", role="collector"
    ):
        run_collector(
            settings, insecure=insecure, host=host, port=port, named_types=pack_types(settings)
        )


def pack_types(settings: Settings) -> frozenset[str]:
    """The event types some rule of the pack the worker starts with names: its patterns, the
    patterns they follow or miss, their outcomes, the relationship ledger (a rule on every
    event, such as tenure, names none), and those the engine reads itself (cases, products,
    contact preferences, what engagement never answers)."""
    from processors.engine import load_rule_pack
    from processors.engine.core import NO_ENGAGEMENT, SPECIAL_TYPES

    pack = load_rule_pack(
        settings.engine.rules_path, predicate_modules=settings.engine.predicate_modules
    )
    named = set(pack.relationship.positive | pack.relationship.negative)
    named |= SPECIAL_TYPES | NO_ENGAGEMENT
    for rule in pack.rules:
        for pattern in (rule.pattern, rule.follow):
            if pattern is not None and pattern.types is not None:
                named |= pattern.types
        if rule.outcome is not None:
            named |= rule.outcome.types
    return frozenset(named)


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
    teams: Annotated[
        bool,
        typer.Option(
            help="Simulate the teams that act on the actions (acknowledge, complete, leave "
            "some undone: status events; effects only for done actions). --no-teams: every "
            "action counts as done and no status event is written (twice as fast)."
        ),
    ] = True,
) -> None:
    """Generate a realistic population's interactions through the channel adapters."""
    from common.topics import ensure_topics
    from moments.report import simulation_rates
    from producers.publisher import Publisher
    from producers.simulator import publish_simulation, write_simulation

    rates = simulation_rates(load_settings(), effect or [], teams=teams)
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


@app.command()
@friendly
def consume(
    topic: Annotated[
        str, typer.Argument(help="e.g. actions.care, decisions, interactions, actions.dlq.")
    ],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest record (else the end).")
    ] = False,
    max_records: Annotated[
        int | None, typer.Option("--max", help="Stop after this many records.", min=1)
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="At the end, wait for more (until Ctrl-C or --max).")
    ] = False,
) -> None:
    """Print a topic's records decoded, one JSON object a line (dead letters with their
    error headers)."""
    from moments.topic_reader import ConsumeOptions, TopicReaderError, consume_lines

    if not (from_beginning or follow):
        raise UserError(
            "nothing to read: --from-beginning reads what the topic holds, --follow waits"
            " for new records (both: the two)"
        )
    settings = require_broker(load_settings())
    options = ConsumeOptions(from_beginning=from_beginning, follow=follow, max_records=max_records)
    try:
        for line in consume_lines(settings, topic, options, stop=lambda: False):
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
    except TopicReaderError as exc:
        raise UserError(str(exc)) from None
    except BrokenPipeError:  # the reader (head, a pager) is gone: nothing left to do
        sys.stderr.close()


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
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help='One JSON object: {"entries": [...], "relationship": {...} or null}.'
        ),
    ] = False,
) -> None:
    """Show one customer's events, actions and decisions in time order, each action with its
    status, owner and lateness (docs/design.md 12)."""
    import json

    from sinks.relationship import customer_relationship, relationship_line
    from sinks.timeline import customer_timeline, timeline_table

    settings = require_database(load_settings())
    rows = customer_timeline(settings.database.database_url or "", customer_id, limit=limit)
    if not rows:
        raise UserError("no timeline for that customer")
    strength = customer_relationship(settings.database.database_url or "", customer_id, limit=1)
    if as_json:  # JSON escapes every control character: safe on a terminal as it is
        document = {"entries": rows, "relationship": strength}
        sys.stdout.write(json.dumps(document, default=str) + "\n")
        return
    # Channel text may hold terminal escape sequences: none reaches the terminal.
    console.print(timeline_table(printable_rows(rows)))
    if strength is not None:
        console.print(relationship_line(strength))
