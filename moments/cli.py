"""The `moments` command line: each command wires ready parts together in a few lines.

This is the only module that imports producers, processors and sinks
together. Imports of heavy parts happen inside the commands, so `moments
--help` is fast and one broken part never hides the others. Bad input ends
with one clear line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

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

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A problem the user can fix; shown as one line."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception classes that mean bad input, not a bug (imported lazily)."""
    errors: list[type[BaseException]] = [UserError, FileNotFoundError, IsADirectoryError]
    try:
        from schemas.codec import DecodeError, SchemaValidationError

        errors += [SchemaValidationError, DecodeError]
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
            err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
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
    return int(parsed.timestamp() * 1000)


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
) -> None:
    """Run the engine offline over a file, deterministically; no broker needed."""
    from processors.engine import EngineConfig
    from processors.replay import replay_file

    if events is None:
        raise UserError("give an events file (JSON lines)")
    settings = load_settings()
    summary = replay_file(
        events,
        actions_out=actions_out,
        decisions_out=decisions_out,
        rules_path=rules or settings.rules_path,
        until_ms=parse_time(until, "--until"),
        partitions=partitions,
        config=engine_config(settings, EngineConfig),
    )
    console.print(summary)


def engine_config(settings: Settings, config_type: type[Any]) -> Any:
    """The engine's knobs from settings (seconds → milliseconds)."""
    return config_type(
        allowed_lateness_ms=int(settings.allowed_lateness_s * 1000),
        contact_cap=settings.contact_cap,
        contact_cap_window_ms=int(settings.contact_cap_window_s * 1000),
        holdout_percent=settings.holdout_percent,
        dedupe_horizon_ms=int(settings.dedupe_horizon_s * 1000),
    )


@rules_app.command("check")
@friendly
def rules_check(
    file: Annotated[Path, typer.Argument(help="Rule pack (YAML).")],
) -> None:
    """Validate a rule pack; report every problem with file, rule and field."""
    from processors.engine import load_rule_pack

    pack = load_rule_pack(file)
    console.print(f"[green]ok[/]: {file}: {len(pack.rules)} rules")


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


@app.command()
@friendly
def timeline(
    customer_id: Annotated[str, typer.Argument(help="The customer.")],
    limit: Annotated[int, typer.Option(help="At most this many entries.")] = 200,
) -> None:
    """Show one customer's events, actions and decisions in time order."""
    from sinks.timeline import customer_timeline, timeline_table

    settings = require_database(load_settings())
    rows = customer_timeline(settings.database_url or "", customer_id, limit=limit)
    if not rows:
        raise UserError(f"no timeline for customer {customer_id!r}")
    console.print(timeline_table(rows))


def main() -> None:
    """Entry point of the `moments` console script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
