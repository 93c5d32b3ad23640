"""`moments report uplift`: the command; the report itself is `moments.report`.

Reads the options, builds the report from files or the PostgreSQL sink and shows it
as a rich table, the JSON of docs/design.md, section 9 and, with `--png`, a chart.
The report's module is imported inside the command, so `moments --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from moments.cli.common import UserError, console, friendly, load_settings, require_database

report_app = typer.Typer(help="Reports on what the engine decided.", no_args_is_help=True)


@report_app.command("uplift")
def uplift(
    events: Annotated[
        Path | None, typer.Option(help="Interaction events (JSON lines) that measure outcomes.")
    ] = None,
    decisions: Annotated[
        Path | None, typer.Option(help="Decisions (JSON lines, `replay --decisions-out`).")
    ] = None,
    status: Annotated[
        Path | None,
        typer.Option(
            help="Action status records (JSON lines, `replay --status-out`): adds the done "
            "rate and the median hours to done."
        ),
    ] = None,
    database: Annotated[
        bool, typer.Option("--database", help="Read both from PostgreSQL (MOMENTS_DATABASE_URL).")
    ] = False,
    rules: Annotated[Path | None, typer.Option(help="Rule pack (default: built-in).")] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Write the JSON here; `--json -`: to stdout, no table."),
    ] = None,
    png: Annotated[Path | None, typer.Option(help="Write a chart (PNG) here.")] = None,
) -> None:
    """Per rule with an outcome: treated vs control customers, both rates, uplift, 95% CI, p
    and, with --status or --database, the done rate and median hours to done."""

    @friendly
    def run() -> None:
        from moments.report import (
            uplift_from_database,
            uplift_from_files,
            uplift_table,
            write_uplift_chart,
        )
        from processors.engine import load_rule_pack
        from processors.report.uplift import uplift_json

        settings = load_settings()
        pack = load_rule_pack(rules or settings.engine.rules_path)
        outcomes = {r.id: r.outcome for r in pack.rules if r.outcome is not None}
        if not outcomes:
            raise UserError(f"{pack.source}: no rule has an outcome to measure")
        if database:
            if events is not None or decisions is not None or status is not None:
                raise UserError(
                    "give --events, --decisions (and --status), or --database, not both"
                )
            conninfo = require_database(settings).database.database_url or ""
            results = uplift_from_database(conninfo, outcomes)
        else:
            if events is None or decisions is None:
                raise UserError("give --events FILE and --decisions FILE, or --database")
            results = uplift_from_files(outcomes, decisions, events, status)
        document = json.dumps(uplift_json(results), indent=2) + "\n"
        if json_out == Path("-"):
            sys.stdout.write(document)
        else:
            console.print(uplift_table(results))
        if json_out is not None and json_out != Path("-"):
            json_out.write_text(document, "utf-8")
            console.print(f"JSON → {json_out}")
        if png is not None:
            try:
                write_uplift_chart(results, png)
            except ImportError as exc:
                raise UserError(
                    f"--png needs matplotlib, which is not installed ({exc}); "
                    "install it with: pip install 'moments[bench]'"
                ) from None
            console.print(f"chart → {png}")

    run()
