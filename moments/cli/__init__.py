"""The `moments` command line: each command wires ready parts together in a few lines.

This is the only module that imports producers, processors and sinks
together. Imports of heavy parts happen inside the commands, so `moments
--help` is fast and one broken part never hides the others. Bad input ends
with one clear line and a non-zero exit, never a traceback.

The commands live in modules by group, registered on the root `app` (`common`) in
the order `moments --help` lists them: `offline` (replay), `rules`, `processes`
(worker, sinks, api, forget), `events` (publish, ingest, collect, simulate, topics,
kcat, timeline) and `stacks` (demo, up, bench).
"""

from __future__ import annotations

import signal
import sys
from typing import Any

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
from moments.report import report_app

# Importing a command module registers its commands: in this order `moments --help` lists them.
# isort: off
from moments.cli import offline  # noqa: F401
from moments.cli import rules
from moments.cli import processes
from moments.cli import events  # noqa: F401
from moments.cli import stacks

# isort: on

actions_table = stacks.actions_table
app.add_typer(rules.rules_app, name="rules")
app.add_typer(processes.sink_app, name="sink")
app.add_typer(report_app, name="report")

__all__ = [
    "UserError",
    "actions_table",
    "app",
    "console",
    "err_console",
    "friendly",
    "load_settings",
    "main",
    "parse_time",
    "require_broker",
    "require_database",
]


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
