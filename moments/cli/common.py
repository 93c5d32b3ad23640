"""What every command shares: the root `app`, the consoles, `friendly` (bad input as one
clear line, exit code 2), the settings and the checks that a broker or database is set."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from common.settings import Settings, SettingsError

app = typer.Typer(
    name="moments",
    help="Turn every customer interaction into a chance to build the relationship.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A problem the user can fix; shown as one line."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception classes that mean bad input, not a bug (imported lazily)."""
    from common.topics import BrokerUnavailable
    from moments.demo import DemoTimeout
    from moments.runtime import ProcessDied

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
    try:
        return Settings()
    except SettingsError as exc:
        raise UserError(str(exc)) from None


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
        raise UserError("MOMENTS_BOOTSTRAP is not set (or use `moments up` for the embedded stack)")
    return settings


def require_database(settings: Settings) -> Settings:
    if not settings.database.database_url:
        raise UserError("MOMENTS_DATABASE_URL is not set (or use `moments up`)")
    return settings


def require_raised_versions(old: Any, new: Any) -> None:
    """NEW (a rule pack) may replace OLD only if every rule it changed has a higher version;
    else a user error naming each such rule."""
    from processors.engine.lifecycle import version_problems

    problems = version_problems(old, new)
    if problems:
        raise UserError("\n".join(problems))
