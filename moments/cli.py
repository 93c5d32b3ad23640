"""The `moments` command line: each command wires ready parts together in a few lines.

This is the only module that imports producers, processors and sinks
together. Imports of heavy parts happen inside the commands, so `moments
--help` is fast and one broken part never hides the others. Bad input ends
with one clear line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from moments.report import report_app
from moments.settings import Settings

app = typer.Typer(
    name="moments",
    help="Turn every customer interaction into a chance to build the relationship.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
rules_app = typer.Typer(help="Work with rule packs.", no_args_is_help=True)
sink_app = typer.Typer(help="Deliver actions downstream.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
app.add_typer(sink_app, name="sink")
app.add_typer(report_app, name="report")

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A problem the user can fix; shown as one line."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception classes that mean bad input, not a bug (imported lazily)."""
    from moments.demo import DemoTimeout
    from moments.runtime import ProcessDied
    from moments.topics import BrokerUnavailable

    errors: list[type[BaseException]] = [
        UserError,
        FileNotFoundError,
        IsADirectoryError,
        DemoTimeout,
        ProcessDied,
        BrokerUnavailable,
    ]
    try:
        from schemas.codec import DecodeError, SchemaValidationError

        errors += [SchemaValidationError, DecodeError]
    except ImportError:
        pass
    try:
        from sinks.webhook import WebhookConfigError

        errors.append(WebhookConfigError)
    except ImportError:
        pass
    try:
        from processors.backfill import BackfillError

        errors.append(BackfillError)
    except ImportError:
        pass
    try:
        from producers.adapters.base import MappingError
        from producers.collector import CollectorConfigError

        errors += [MappingError, CollectorConfigError]
    except ImportError:
        pass
    try:
        from producers.publisher import PublishError

        errors.append(PublishError)
    except ImportError:
        pass
    try:
        from processors.engine import RulePackError

        errors.append(RulePackError)
    except ImportError:
        pass
    try:
        from pydantic import ValidationError

        errors.append(ValidationError)
    except ImportError:
        pass
    return tuple(errors)


def friendly(func: F) -> F:
    """Turn bad input into one clear red line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _user_errors() as exc:
            message = str(exc).strip().replace("\n", "; ")
            if isinstance(exc, FileNotFoundError) and exc.filename:
                message = f"{exc.filename}: no such file"
            err_console.print(
                f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def load_settings() -> Settings:
    """Settings from the environment; a bad value is a user error naming the variable."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"MOMENTS_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise UserError(problems) from None


def parse_time(value: str | None, option: str) -> int | None:
    """An ISO-8601 time given on the command line, as epoch milliseconds."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"{option}: not an ISO-8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise UserError(f"{option}: give a UTC offset, e.g. {value}+00:00")
    return (parsed - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)  # exact


# --------------------------------------------------------------------------- offline


@app.command()
@friendly
def replay(
    events: Annotated[Path | None, typer.Argument(help="Interaction events, JSON lines.")] = None,
    actions_out: Annotated[Path, typer.Option(help="Where to write actions (JSON lines).")] = Path(
        "actions.jsonl"
    ),
    decisions_out: Annotated[Path | None, typer.Option(help="Also write every decision.")] = None,
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
    rules_change: Annotated[
        list[str] | None,
        typer.Option(
            help="TS=FILE: switch to this rule pack before the first event at or after TS "
            "(ISO-8601); repeatable (DESIGN.md 8)."
        ),
    ] = None,
) -> None:
    """Run the engine offline over a file (or a topic), deterministically; no side effects."""
    from processors.config import engine_config

    settings = load_settings()
    until_ms = parse_time(until, "--until")
    emit_from_ms = parse_time(emit_from, "--emit-from")
    if emit_from_ms is not None:
        settings = settings.model_copy(
            update={"emit_from": datetime.fromtimestamp(emit_from_ms / 1000, tz=UTC)}
        )
    rules_path = rules or settings.rules_path
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
            to_topics=to_topics is not None,
            output_prefix=to_topics,
            rules_path=rules_path,
            until_ms=until_ms,
        )
        console.print(
            f"{backfill.events} events from {from_topic} → {backfill.actions} actions "
            f"({actions_out}), {backfill.decisions} decisions, {backfill.garbage} undecodable, "
            f"{backfill.future_dated} future-dated, in {backfill.seconds:.2f} s "
            f"({backfill.events / max(backfill.seconds, 1e-9):,.0f} events/s)"
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
    )
    console.print(
        f"{summary.events} events → {summary.actions} actions ({actions_out}), "
        f"{summary.decisions} decisions in {summary.seconds:.2f} s "
        f"({summary.events_per_second:,.0f} events/s)"
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


@rules_app.command("check")
@friendly
def rules_check(
    file: Annotated[Path, typer.Argument(help="Rule pack (YAML).")],
    new: Annotated[
        Path | None,
        typer.Argument(
            help="A new version of the pack: every changed rule must raise its version."
        ),
    ] = None,
) -> None:
    """Validate a rule pack; report every problem with file, rule and field.

    With NEW, also validate NEW and refuse it when a rule changed (anything but its
    description) without a higher version."""
    from processors.engine import load_rule_pack
    from processors.engine.lifecycle import compare_packs, version_problems

    pack = load_rule_pack(file)
    if new is None:
        console.print(f"[green]ok[/]: {escape(str(file))}: {len(pack.rules)} rules")
        return
    new_pack = load_rule_pack(new)
    problems = version_problems(pack, new_pack)
    if problems:
        raise UserError("\n".join(problems))
    changes = compare_packs(pack, new_pack)
    console.print(
        f"[green]ok[/]: {escape(str(new))}: {len(new_pack.rules)} rules; "
        f"{len(changes.changed)} changed ({escape(', '.join(changes.changed)) or '-'}), "
        f"{len(changes.added)} added, {len(changes.removed)} removed, "
        f"{len(changes.unchanged)} unchanged"
    )


@rules_app.command("diff")
@friendly
def rules_diff(
    old: Annotated[Path, typer.Argument(help="The rule pack in use (YAML).")],
    new: Annotated[Path, typer.Argument(help="The new version of the pack (YAML).")],
    events: Annotated[
        Path | None, typer.Option(help="History: interaction events, JSON lines.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Advance the clock to this time at the end (ISO-8601).")
    ] = None,
    from_topic: Annotated[
        str | None, typer.Option(help="History: read this Kafka topic from its beginning.")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the comparison as JSON.")
    ] = None,
) -> None:
    """What NEW would change against OLD over the same history (a shadow run of both)."""
    from processors.config import engine_config
    from processors.diff import diff_file, diff_topic
    from processors.engine import load_rule_pack
    from processors.engine.lifecycle import version_problems

    if (events is None) == (from_topic is None):
        raise UserError("give the history as --events FILE or --from-topic TOPIC (one of them)")
    settings = load_settings()
    until_ms = parse_time(until, "--until")
    old_pack, new_pack = load_rule_pack(old), load_rule_pack(new)
    problems = version_problems(old_pack, new_pack)
    if problems:
        raise UserError("\n".join(problems))
    if events is not None:
        result = diff_file(
            events, old_pack, new_pack, until_ms=until_ms, config=engine_config(settings)
        )
    else:
        assert from_topic is not None
        result = diff_topic(
            require_broker(settings), from_topic, old_pack, new_pack, until_ms=until_ms
        )
    _print_diff(result)
    if json_out is not None:
        result.write_json(json_out)
        console.print(f"JSON: {escape(str(json_out))}")


def _pack_name(text: str) -> str:
    import yaml

    document = yaml.safe_load(text)
    name = document.get("name") if isinstance(document, dict) else None
    return name if isinstance(name, str) and name else "default"


def _author(author: str | None) -> str:
    import getpass

    if author:
        return author
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@rules_app.command("publish")
@friendly
def rules_publish(
    file: Annotated[Path, typer.Argument(help="Rule pack (YAML).")],
    author: Annotated[str | None, typer.Option(help="Who publishes (default: the user).")] = None,
) -> None:
    """Validate a pack, check it against the last published one, produce it to `rules`."""
    import yaml

    from moments.rules_topic import pack_history, publish_pack
    from processors.engine import load_rule_pack, parse_rule_pack
    from processors.engine.lifecycle import compare_packs, version_problems

    settings = require_broker(load_settings())
    text = file.read_text(encoding="utf-8")
    pack = load_rule_pack(file)
    name = _pack_name(text)
    history = pack_history(settings, name)
    changes = ""
    if history:
        last = history[-1]
        source = f"{settings.topics.rules}@{last.offset}"
        previous = parse_rule_pack(yaml.safe_load(last.yaml), source=source)
        problems = version_problems(previous, pack)
        if problems:
            raise UserError("\n".join(problems))
        diff = compare_packs(previous, pack)
        changes = (
            f"; {len(diff.changed)} changed, {len(diff.added)} added, {len(diff.removed)} removed"
        )
    published = publish_pack(settings, name, text, _author(author))
    console.print(
        f"published {escape(name)} ({len(pack.rules)} rules) to {settings.topics.rules} "
        f"at offset {published.offset}{changes}"
    )


@rules_app.command("history")
@friendly
def rules_history(
    pack: Annotated[str | None, typer.Option(help="Only this pack (its `name`).")] = None,
) -> None:
    """List the packs published to the `rules` topic, oldest first, with rule versions."""
    import yaml
    from rich.table import Table

    from moments.rules_topic import pack_history
    from processors.engine import parse_rule_pack

    settings = require_broker(load_settings())
    table = Table(title=f"{settings.topics.rules}")
    for column in ("offset", "pack", "published_at", "author", "rules"):
        table.add_column(column, overflow="fold")
    for record in pack_history(settings, pack):
        try:
            rules = parse_rule_pack(yaml.safe_load(record.yaml)).rules
            raised = [f"{r.id} v{r.version}" for r in rules if r.version > 1]
            versions = f"{len(rules)} rules" + (f"; {', '.join(raised)}" if raised else ", all v1")
        except (ValueError, yaml.YAMLError):
            versions = "(invalid pack)"
        table.add_row(
            str(record.offset),
            escape(record.pack),
            record.published_at,
            escape(record.author),
            escape(versions),
        )
    console.print(table)


@rules_app.command("rollback")
@friendly
def rules_rollback(
    pack: Annotated[str, typer.Option(help="The pack to roll back (its `name`).")] = "default",
    author: Annotated[str | None, typer.Option(help="Who rolls back (default: the user).")] = None,
) -> None:
    """Publish the pack published before the current one again."""
    from moments.rules_topic import pack_history, publish_pack

    settings = require_broker(load_settings())
    history = pack_history(settings, pack)
    if len(history) < 2:
        raise UserError(f"{settings.topics.rules}: no earlier publication of pack {pack!r}")
    previous = history[-2]
    published = publish_pack(settings, pack, previous.yaml, _author(author))
    console.print(
        f"rolled back {escape(pack)} to the pack of offset {previous.offset} "
        f"({previous.published_at}); published at offset {published.offset}"
    )


def _print_diff(result: Any) -> None:
    """A table per rule (old, new, added, removed, changed), then example customers."""
    from rich.table import Table

    table = Table(title=f"rules diff over {result.events} events")
    for column in ("rule", "old", "new", "added", "removed", "changed"):
        table.add_column(column, justify="left" if column == "rule" else "right")
    for rule_id, d in sorted(result.rules.items()):
        moved = d.added or d.removed or d.changed
        style = "bold" if moved else "dim"
        table.add_row(
            escape(rule_id),
            *(str(n) for n in (d.old, d.new, d.added, d.removed, d.changed)),
            style=style,
        )
    console.print(table)
    console.print(f"customers affected: {result.customers_affected}")
    if result.examples:
        examples = Table(title="examples")
        for column in ("rule", "kind", "customer", "old reason", "new reason"):
            examples.add_column(column, overflow="fold")
        for ex in result.examples:
            kind = ex["kind"] if "fields" not in ex else f"changed: {', '.join(ex['fields'])}"
            examples.add_row(
                escape(ex["rule"]),
                escape(kind),
                escape(ex["customer_id"]),
                escape(ex["old_reason"] or "-"),
                escape(ex["new_reason"] or "-"),
            )
        console.print(examples)


# --------------------------------------------------------------------------- processes


@app.command()
@friendly
def worker() -> None:
    """Run the stream worker (faust-streaming) that hosts the trigger engine."""
    from processors.worker import run_worker

    settings = require_broker(load_settings())
    run_worker(settings)


@sink_app.command("postgres")
@friendly
def sink_postgres() -> None:
    """Write actions, decisions and interaction events to PostgreSQL, idempotently."""
    from sinks.postgres import run_postgres_sink

    settings = require_database(require_broker(load_settings()))
    run_postgres_sink(settings)


@sink_app.command("webhook")
@friendly
def sink_webhook() -> None:
    """POST each action as a signed CloudEvent to its destination's URL."""
    from sinks.webhook import run_webhook_sink

    settings = require_broker(load_settings())
    run_webhook_sink(settings)


@app.command()
@friendly
def api(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default MOMENTS_API_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default MOMENTS_API_PORT, 8081).")
    ] = None,
) -> None:
    """Serve the read API for agent desktops: a customer's timeline and decisions (API key)."""
    from sinks.api import ApiConfigError, run_api

    try:
        run_api(require_database(load_settings()), host=host, port=port)
    except ApiConfigError as exc:
        raise UserError(str(exc)) from None


@app.command()
@friendly
def forget(
    customer_id: Annotated[str, typer.Argument(help="The customer to erase everywhere.")],
) -> None:
    """Erase a customer: rows in PostgreSQL, and engine state through an erasure record."""
    from moments.forget import ForgetError, forget_customer

    settings = require_database(require_broker(load_settings()))
    try:
        erased = forget_customer(settings, customer_id)
    except ForgetError as exc:
        raise UserError(str(exc)) from None
    console.print(
        f"erased customer sha256:{erased.customer_hash[:16]}…: {erased.rows} rows in PostgreSQL "
        f"({', '.join(f'{t} {n}' for t, n in sorted(erased.tables.items())) or 'none'}); "
        "erasure record sent to the workers",
        highlight=False,
    )


def require_broker(settings: Settings) -> Settings:
    if not settings.bootstrap:
        raise UserError("MOMENTS_BOOTSTRAP is not set (or use `moments up` for the embedded stack)")
    return settings


def require_database(settings: Settings) -> Settings:
    if not settings.database_url:
        raise UserError("MOMENTS_DATABASE_URL is not set (or use `moments up`)")
    return settings


@app.command()
@friendly
def publish(
    file: Annotated[Path, typer.Argument(help="Interaction events, JSON lines.")],
) -> None:
    """Publish events from a JSON-lines file through the publisher SDK."""
    from moments.topics import ensure_topics
    from producers.publisher import Publisher
    from schemas.codec import read_events_jsonl

    settings = require_broker(load_settings())
    ensure_topics(settings)
    events = list(read_events_jsonl(file))  # validate the whole file before sending anything
    with Publisher(settings) as publisher:
        for event in events:
            publisher.publish(event)
    console.print(f"published {len(events)} events to {settings.topics.interactions}")


class ChannelKind(StrEnum):
    """Channel exports `moments ingest` understands."""

    calls = "calls"
    email = "email"
    billing = "billing"


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
    """Publish a channel's own records (calls, email, billing) as interaction events."""
    from moments.topics import ensure_topics
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
            max_future_skew_ms=settings.max_future_skew_ms,
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
    from moments.topics import ensure_topics
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
    from moments.report import simulation_rates
    from moments.topics import ensure_topics
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
    from moments.topics import ensure_topics

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
            bootstrap=settings.bootstrap,
            data_dir=settings.data_dir,
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
    rows = customer_timeline(settings.database_url or "", customer_id, limit=limit)
    if not rows:
        raise UserError("no timeline for that customer")
    console.print(timeline_table(rows))
    strength = customer_relationship(settings.database_url or "", customer_id, limit=1)
    if strength is not None:
        console.print(relationship_line(strength))


# --------------------------------------------------------------------------- stacks


@app.command()
@friendly
def demo(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the actions.")] = 150.0,
) -> None:
    """Embedded broker + PostgreSQL, worker and sink; publish the seed stories; show the actions."""
    from moments.demo import run_demo

    with console.status("starting") as status:
        result = run_demo(load_settings(), timeout_s=timeout, on_status=status.update)
    console.print(actions_table(result.rows, title="Actions read back from PostgreSQL"))
    console.print(
        f"[green]{len(result.rows)} actions[/] from {result.events} events "
        f"({result.expected} predicted by replay, all arrived) in {result.seconds:.1f} s; "
        "the embedded stack is stopped."
    )


@app.command()
@friendly
def up() -> None:
    """Run the whole stack in the foreground: broker, PostgreSQL, worker, sinks, collector, API."""
    import json
    import secrets
    import time

    from moments.endpoints import export_lines, print_endpoints, write_env_file
    from moments.privacy import redact_url
    from moments.runtime import Supervisor
    from moments.stack import free_port, local_stack
    from moments.topics import ensure_topics
    from sinks.postgres import apply_migrations

    base = load_settings()
    with (
        local_stack(base) as settings,
        Supervisor(settings, base.data_dir / "logs") as sup,
        contextlib.ExitStack() as on_exit,
    ):
        ensure_topics(settings)
        apply_migrations(settings.database_url or "")
        api_keys = [key.get_secret_value() for key in settings.api_keys]
        if not api_keys:  # a fresh key for this session rather than an open collector
            api_keys = [secrets.token_urlsafe(18)]
        ports = {name: free_port() for name in ("worker", "sink-postgres", "api")}
        api_port = free_port()
        sup.spawn("worker", "worker", MOMENTS_METRICS_PORT=str(ports["worker"]))
        sup.spawn(
            "sink-postgres", "sink", "postgres", MOMENTS_METRICS_PORT=str(ports["sink-postgres"])
        )
        sup.spawn("collector", "collect", MOMENTS_API_KEYS=json.dumps(api_keys))
        sup.spawn(
            "api",
            "api",
            "--port",
            str(api_port),
            MOMENTS_METRICS_PORT=str(ports["api"]),
            MOMENTS_API_KEYS=json.dumps(api_keys),
        )
        if settings.webhook_urls:
            ports["sink-webhook"] = free_port()
            sup.spawn(
                "sink-webhook", "sink", "webhook", MOMENTS_METRICS_PORT=str(ports["sink-webhook"])
            )

        collector = f"http://{settings.collector_host}:{settings.collector_port}"
        rows = [
            ("Kafka bootstrap", str(settings.bootstrap)),
            ("PostgreSQL", redact_url(str(settings.database_url))),
            ("HTTP collector", f"{collector}/v1/events (X-API-Key: {api_keys[0]})"),
            ("metrics: collector", f"{collector}/metrics"),
            (
                "read API",
                f"http://127.0.0.1:{api_port}/v1/customers/{{id}}/timeline|decisions (same key)",
            ),
            *(
                (f"metrics: {name}", f"http://127.0.0.1:{port}/metrics")
                for name, port in ports.items()
            ),
            ("logs", str(sup.log_dir)),
        ]
        exports = export_lines(settings)
        env_file = write_env_file(base.data_dir, exports)
        on_exit.callback(env_file.unlink, missing_ok=True)
        print_endpoints(console, "moments is up (Ctrl-C stops everything)", rows, exports, env_file)
        try:
            while True:
                sup.check_alive()
                time.sleep(1.0)
        except KeyboardInterrupt:
            console.print("stopping")


@app.command()
@friendly
def bench(
    quick: Annotated[bool, typer.Option(help="Smaller sizes: under 3 minutes.")] = False,
    json_path: Annotated[Path, typer.Option("--json", help="JSON report.")] = Path(
        "bench-report.json"
    ),
    markdown: Annotated[Path, typer.Option(help="Markdown table.")] = Path("bench-report.md"),
    chart: Annotated[Path, typer.Option(help="PNG chart.")] = Path("bench-report.png"),
) -> None:
    """Measure every stage beside its reference on the embedded stack; write the reports."""
    from moments.bench import print_summary, run_bench

    report = run_bench(
        load_settings(),
        quick=quick,
        json_path=json_path,
        markdown_path=markdown,
        chart_path=chart,
        console=console,
    )
    print_summary(report, console)


def actions_table(rows: list[dict[str, Any]], title: str) -> Any:
    """Actions as a rich table, highest priority first."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_lines=True)
    table.add_column("prio", justify="right")
    table.add_column("rule → destination", ratio=2, overflow="fold")
    table.add_column("customer", ratio=2, overflow="fold")
    table.add_column("reason", ratio=5)
    for row in sorted(rows, key=lambda r: (-int(r["priority"]), str(r["customer_id"]))):
        table.add_row(
            str(row["priority"]),
            Text(f"{row['rule']} → {row['destination']}"),
            Text(str(row["customer_id"])),
            Text(str(row["reason"])),
        )
    return table


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Entry point of the `moments` console script."""
    # SIGTERM unwinds like Ctrl-C, so embedded servers and child processes are always stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
