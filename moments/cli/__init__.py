"""The `moments` command line: each command wires ready parts together in a few lines.

The CLI (this package and what its commands run: `moments.demo`, `moments.bench`,
`moments.stack`, `moments.report`) is the top layer, the only one that imports
producers, processors and sinks together. Imports of heavy parts happen inside the
commands, so `moments --help` is fast and one broken part never hides the others. Bad
input ends with one clear line and a non-zero exit, never a traceback.

The commands live in modules by group, registered on the root `app` (`common`) in
the order `moments --help` lists them: `offline` (replay), `rules`, `processes`
(worker, sinks, api, forget), `events` (publish, ingest, collect, simulate, topics,
kcat, timeline), `stacks` (demo, up, bench) and `report` (uplift).
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from moments.cli.common import app

# Importing a command module registers its commands: in this order `moments --help` lists them.
# isort: off
from moments.cli import offline  # noqa: F401
from moments.cli import rules
from moments.cli import processes
from moments.cli import events  # noqa: F401
from moments.cli import stacks  # noqa: F401
from moments.cli import report

# isort: on

app.add_typer(rules.rules_app, name="rules")
app.add_typer(processes.sink_app, name="sink")
app.add_typer(report.report_app, name="report")

__all__ = ["app", "main"]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Entry point of the `moments` console script."""
    # SIGTERM unwinds like Ctrl-C, so embedded servers and child processes are always stopped.
    # SIGINT is taken explicitly: a process started with it ignored (a background job of a
    # shell script, some supervisors) would otherwise never stop on Ctrl-C or `kill -INT`.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
