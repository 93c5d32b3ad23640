"""Whole stacks: `moments demo`, `moments up` and `moments bench`; the actions table."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from moments.cli.common import (
    app,
    console,
    friendly,
    load_settings,
)


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

    from common.privacy import redact_url
    from common.topics import ensure_topics
    from moments.endpoints import export_lines, print_endpoints, write_env_file
    from moments.runtime import Supervisor
    from moments.stack import free_port, local_stack
    from sinks.postgres import apply_migrations

    base = load_settings()
    with (
        local_stack(base) as settings,
        Supervisor(settings, base.stack.data_dir / "logs") as sup,
        contextlib.ExitStack() as on_exit,
    ):
        ensure_topics(settings)
        apply_migrations(settings.database.database_url or "")
        api_keys = [key.get_secret_value() for key in settings.api.api_keys]
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
        if settings.sinks.webhook_urls:
            ports["sink-webhook"] = free_port()
            sup.spawn(
                "sink-webhook", "sink", "webhook", MOMENTS_METRICS_PORT=str(ports["sink-webhook"])
            )

        collector = (
            f"http://{settings.collector.collector_host}:{settings.collector.collector_port}"
        )
        rows = [
            ("Kafka bootstrap", str(settings.kafka.bootstrap)),
            ("PostgreSQL", redact_url(str(settings.database.database_url))),
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
        env_file = write_env_file(base.stack.data_dir, exports)
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
