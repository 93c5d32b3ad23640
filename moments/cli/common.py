"""What every command shares: the root `app`, the consoles, `friendly` (bad input as one
clear line, exit code 2), the settings, the checks that a broker or database is set, and
`printable_rows` (customer text with its control characters removed before it is printed:
text from a channel may hold terminal escape sequences)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from common.privacy import printable
from common.settings import Settings, SettingsError

app = typer.Typer(
    name="moments",
    help="Turn every customer interaction into a chance to build the relationship.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: Width of output that is not a terminal (a pipe, a file, CI): wide enough that rich wraps
#: nothing a reader would want on one line (COLUMNS, when set, wins).
UNWRAPPED_WIDTH = 10_000


def make_console(*, stderr: bool = False) -> Console:
    """A console for stdout (or stderr): a terminal's own width, else `UNWRAPPED_WIDTH` with
    soft wrap, so piped or redirected output is never folded at 80 columns."""
    stream = sys.stderr if stderr else sys.stdout
    if os.environ.get("COLUMNS") or (hasattr(stream, "isatty") and stream.isatty()):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=UNWRAPPED_WIDTH, soft_wrap=True)


console = make_console()
err_console = make_console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("moments")
        except PackageNotFoundError:  # run from a checkout that was never installed
            number = "unknown (not installed)"
        typer.echo(f"moments {number}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version, is_eager=True
    ),
) -> None:
    """Turn every customer interaction into a chance to build the relationship."""


F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A problem the user can fix; shown as one line."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception classes that mean bad input, not a bug (imported lazily)."""
    from common.erasures import ErasureRegistryError
    from common.topics import BrokerUnavailable
    from moments.demo import DemoTimeout
    from moments.runtime import ProcessDied
    from moments.stack import StackError

    errors: list[type[BaseException]] = [
        UserError,
        FileNotFoundError,
        IsADirectoryError,
        DemoTimeout,
        ProcessDied,
        StackError,
        BrokerUnavailable,
        ErasureRegistryError,
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
        from moments.report import EffectsError

        errors.append(EffectsError)
    except ImportError:
        pass
    errors.append(SettingsError)
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
            message = str(exc).strip()
            if isinstance(exc, FileNotFoundError) and exc.filename:
                message = f"{exc.filename}: no such file"
            for line in message.splitlines() or [""]:  # one error per line
                if line.strip():
                    err_console.print(
                        f"[bold red]error:[/] {escape(printable(line.strip()))}",
                        highlight=False,
                        soft_wrap=True,
                    )
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def printable_value(value: Any) -> Any:
    """VALUE with every string in it (in dicts and lists too) made `printable`."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {key: printable_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [printable_value(item) for item in value]
    return value


def printable_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows read back (events, actions, timeline entries) with every string made printable."""
    return [printable_value(row) for row in rows]


def load_settings(*, adopt_stack: bool = True) -> Settings:
    """Settings from the environment; a bad value is a user error naming the variable.

    With ADOPT_STACK, a `moments up` running from the same directory (`MOMENTS_DATA_DIR`,
    `.moments`) fills in every variable it wrote to its env file that is not set here: the
    commands find it without `source .moments/env`."""
    if adopt_stack:
        adopt_running_stack()
    try:
        return Settings()
    except SettingsError as exc:
        raise UserError(str(exc)) from None


def stack_directory() -> Path:
    """Where `moments up` keeps its env file and logs (`MOMENTS_DATA_DIR`, `.moments`)."""
    return Path(os.environ.get("MOMENTS_DATA_DIR") or ".moments")


def adopt_running_stack() -> dict[str, str]:
    """Set (in this process) the variables of a running `moments up` of this directory that
    are not set already; the variables that stack wrote ({} when none runs)."""
    from moments.endpoints import running_stack

    found = running_stack(stack_directory())
    for name, value in found.items():
        if name.startswith("MOMENTS_"):
            os.environ.setdefault(name, value)
    return found


def serving(
    settings: Settings, process: str, what: str, *, role: str
) -> AbstractContextManager[None]:
    """Set up this process's logging (`common.logs`), say in its metrics which process it is
    (`moments_process_info{process=ROLE}`) and log its start line, saying WHAT it serves and
    where; its stop line when the returned context ends."""
    from common.logs import configure_logging, lifecycle
    from common.metrics import PROCESS_INFO, PROCESSES

    configure_logging(settings.metrics.log_level, settings.metrics.log_format)
    assert role in PROCESSES, role  # a bounded label: one of the processes moments runs
    PROCESS_INFO.labels(role).set(1)
    ops = settings.metrics
    where = f"{what}; ops port {ops.metrics_host}:{ops.metrics_port}" if ops.metrics_port else what
    return lifecycle(process, where)


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


def require_broker(settings: Settings) -> Settings:
    if not settings.kafka.bootstrap:
        raise UserError(
            "MOMENTS_BOOTSTRAP is not set and no `moments up` runs from this directory"
            f" ({stack_directory()}): start one, or set MOMENTS_BOOTSTRAP"
        )
    return settings


def require_database(settings: Settings) -> Settings:
    if not settings.database.database_url:
        raise UserError(
            "MOMENTS_DATABASE_URL is not set and no `moments up` runs from this directory"
            f" ({stack_directory()}): start one, or set MOMENTS_DATABASE_URL"
        )
    return settings


def require_raised_versions(old: Any, new: Any) -> None:
    """NEW (a rule pack) may replace OLD only if every rule it changed has a higher version;
    else a user error naming each such rule."""
    from processors.engine.lifecycle import version_problems

    problems = version_problems(old, new)
    if problems:
        raise UserError("\n".join(problems))
