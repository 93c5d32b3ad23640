"""The agent desk: web pages for the people who do the actions (docs/design.md 13).

Served by `moments api` under `/desk` (`sinks.api` mounts `build_desk`). Reads
PostgreSQL, never writes it: its buttons publish status events through a
`StatusSender` the CLI gives it.
"""

from __future__ import annotations

from sinks.desk.app import PREFIX, Desk, StatusNotSent, StatusSender, build_desk
from sinks.desk.auth import DeskAuth, DeskKeyError, parse_desk_keys
from sinks.desk.queries import DeskSource, PostgresDesk
from sinks.pool import DatabaseUnavailable

__all__ = [
    "PREFIX",
    "DatabaseUnavailable",
    "Desk",
    "DeskAuth",
    "DeskKeyError",
    "DeskSource",
    "PostgresDesk",
    "StatusNotSent",
    "StatusSender",
    "build_desk",
    "parse_desk_keys",
]
