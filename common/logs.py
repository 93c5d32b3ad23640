"""Logging of every moments process, set up in one place, and the start and stop lines.

`MOMENTS_LOG_LEVEL` (default INFO) and `MOMENTS_LOG_FORMAT` (`text`, default, or `json`:
one JSON object a line) apply to the worker, both sinks, the collector and the read API
alike; times are ISO-8601 in UTC with milliseconds. The worker's Faust host takes the
same configuration (`logging_config`), so its lines look like everyone else's.

`lifecycle` writes the line a process logs when it starts (what it serves, and where)
and when it stops. Those lines name topics, ports and hosts, never a customer, a key or
a password (database URLs are passed through `common.privacy.redact_url` by callers).
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.config
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS: Final = ("text", "json")

log = logging.getLogger("moments")


def iso_time(created: float) -> str:
    """A log record's time (epoch seconds) as ISO-8601 UTC with milliseconds."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


def iso_ms(epoch_ms: object) -> str:
    """Epoch milliseconds (event time, watermarks) as ISO-8601 UTC, for log lines (`-` for
    none; anything else as it is)."""
    if epoch_ms is None:
        return "-"
    if not isinstance(epoch_ms, int) or isinstance(epoch_ms, bool):
        return str(epoch_ms)
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """`TIME LEVEL LOGGER: message`, the time in ISO-8601 UTC."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_time(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def logging_config(level: str = "INFO", fmt: str = "text") -> dict[str, Any]:
    """A `logging.config.dictConfig` document: one stderr handler on the root logger."""
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"moments": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "moments",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["default"]},
    }


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Set up the root logger of this process (idempotent)."""
    logging.config.dictConfig(logging_config(level, fmt))


@contextlib.contextmanager
def lifecycle(process: str, serving: str) -> Iterator[None]:
    """Log `PROCESS started: SERVING` now and `PROCESS stopped` when the block ends
    (`stopped after an error` when it raised)."""
    log.info("%s started: %s", process, serving)
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        log.info("%s stopped", process)
        raise
    except BaseException as exc:
        log.error("%s stopped after an error: %s", process, type(exc).__name__)
        raise
    log.info("%s stopped", process)
