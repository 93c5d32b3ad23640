"""`run_bench`: the sections in order on the embedded stack, then the reports."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from common.settings import Settings
from moments.bench.context import FULL, QUICK, Bench
from moments.bench.desk import desk
from moments.bench.kafka import backfill, publisher
from moments.bench.offline import codec, email, engine
from moments.bench.report import REQUIRED_KEYS, judge_targets, markdown_table, write_chart
from moments.bench.sink import sink
from moments.bench.worker import latency, worker
from moments.calibration import (
    calibration,
    load_average,
    python_loop_seconds,
    read_cpu_times,
    run_cpu_seconds,
)
from moments.stack import local_stack
from processors import REPLAY_SHARDS_COMPILED
from processors.engine import ENGINE_COMPILED
from schemas import JSON_FORM_COMPILED

#: The sections in the order they run, each a function of the run's `Bench` that fills its
#: figures (a section that fails loses only its own).
SECTIONS: Final[tuple[tuple[str, Callable[[Bench], None]], ...]] = (
    ("codec", codec),
    ("email", email),
    ("engine", engine),
    ("publisher", publisher),
    ("backfill", backfill),
    ("sink", sink),
    ("desk", desk),
    ("worker", worker),
    ("latency", latency),
)


def run_bench(
    settings: Settings,
    *,
    quick: bool,
    json_path: Path | None = None,
    markdown_path: Path | None = None,
    chart_path: Path | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the suite on the embedded stack; write the reports asked for; return the report."""
    console = console or Console(stderr=True)
    sizes = QUICK if quick else FULL
    began = time.perf_counter()
    report: dict[str, Any] = {key: None for key in REQUIRED_KEYS}
    details: dict[str, Any] = {}
    errors: dict[str, str] = {}
    work = Path(tempfile.mkdtemp(prefix="moments-bench-"))
    cpu_before = read_cpu_times()
    run_cpu_before = run_cpu_seconds()
    console.print("calibrating: a plain 10M-iteration Python loop")
    loop_s = python_loop_seconds()
    with local_stack(settings) as stack_settings:
        base = stack_settings.replace(
            topic_prefix=f"bench-{uuid.uuid4().hex[:8]}.",
            broker_rebalance_timeout_s=3.0,
            broker_session_timeout_s=6.0,
        )
        bench = Bench(base, sizes, work, details)
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("moments bench", total=len(SECTIONS))
            for name, section in SECTIONS:
                progress.update(task, description=f"moments bench: {name}")
                if hasattr(os, "getloadavg"):  # the box is shared: say how busy it was
                    details.setdefault("load_average_at_start", {})[name] = os.getloadavg()[0]
                try:
                    section(bench)
                except Exception as exc:  # one broken section must not lose the others
                    errors[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
                    console.print(f"[red]{name}: {errors[name]}[/red]")
                progress.advance(task)
    report.update(bench.figures)
    report["calibration"] = calibration(
        loop_s,
        cpu_before,
        read_cpu_times(),
        run_cpu_s=run_cpu_seconds() - run_cpu_before,
        load=max([load_average() or 0.0, *details.get("load_average_at_start", {}).values()]),
        cpus=os.cpu_count(),
    )
    report["unmeasured"] = bench.unmeasured
    report["targets"] = judge_targets(report)
    report["details"] = details
    report["errors"] = errors
    report["quick"] = quick
    report["seconds"] = round(time.perf_counter() - began, 1)
    report["machine"] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "engine_compiled": ENGINE_COMPILED,
        "json_form_compiled": JSON_FORM_COMPILED,
        "replay_shards_compiled": REPLAY_SHARDS_COMPILED,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    report["written"], report["not_written"] = [], {}
    if chart_path is not None:  # first: the JSON and markdown say whether it was written
        try:
            write_chart(report, chart_path)
            report["written"].append(str(chart_path))
        except ImportError as exc:
            report["not_written"][str(chart_path)] = (
                f"matplotlib is not installed ({exc}); it is in the bench extra: "
                "run `make bench` (or pip install -e '.[bench]')"
            )
    if json_path is not None:
        report["written"].insert(0, str(json_path))
    if markdown_path is not None:
        report["written"].insert(1 if json_path is not None else 0, str(markdown_path))
        markdown_path.write_text(markdown_table(report))
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    return report
