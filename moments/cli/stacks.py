"""Whole stacks: `moments demo`, `moments up` and `moments bench`; the actions table."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from moments.cli.common import (
    UserError,
    app,
    console,
    friendly,
    load_settings,
    printable_rows,
)


@app.command()
@friendly
def demo(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the actions.")] = 150.0,
) -> None:
    """Embedded broker + PostgreSQL, worker and sink; publish the seed stories; show the actions."""
    from moments.demo import run_demo

    with console.status("starting") as status:
        result = run_demo(
            load_settings(adopt_stack=False), timeout_s=timeout, on_status=status.update
        )
    console.print(actions_table(result.rows, title="Actions read back from PostgreSQL"))
    console.print(
        f"[green]{len(result.rows)} actions[/] from {result.events} events "
        f"({result.expected} predicted by replay, all arrived) in {result.seconds:.1f} s; "
        "the embedded stack is stopped."
    )


@app.command()
@friendly
def up(
    collector_port: Annotated[
        int | None,
        typer.Option(
            help="The collector's port (default: MOMENTS_COLLECTOR_PORT if set, else a free"
            " one). A taken port stops `up` before anything starts.",
            min=1,
            max=65535,
        ),
    ] = None,
    keep: Annotated[
        Path | None,
        typer.Option(
            help="Keep the database's data in this directory between runs (the broker's"
            " topics cannot be kept: see the README). Without it, all data is thrown away"
            " when the stack stops.",
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Run the whole stack in the foreground: broker, PostgreSQL, worker, sinks, collector, API."""
    import os
    import time

    from common.privacy import redact_url
    from common.topics import ensure_topics
    from moments.endpoints import (
        PID_VARIABLE,
        export_lines,
        print_endpoints,
        running_stack,
        write_env_file,
    )
    from moments.runtime import Supervisor, with_session_keys
    from moments.stack import KEPT_BROKER_NOTE, check_ports_free, free_port, local_stack
    from sinks.postgres import apply_migrations

    base = load_settings(adopt_stack=False)
    data_dir = base.stack.data_dir
    other = running_stack(data_dir)
    if other:
        raise UserError(
            f"`moments up` already runs from {data_dir} (pid {other.get(PID_VARIABLE)}):"
            " the commands here use it; stop it first, or set MOMENTS_DATA_DIR for another"
        )
    host = base.collector.collector_host
    asked: dict[str, tuple[str, int, str]] = {}
    if collector_port is not None:
        asked["collector"] = (host, collector_port, "--collector-port")
    elif "MOMENTS_COLLECTOR_PORT" in os.environ:
        asked["collector"] = (host, base.collector.collector_port, "MOMENTS_COLLECTOR_PORT")
    if "MOMENTS_API_PORT" in os.environ:
        asked["read API"] = (base.api.api_host, base.api.api_port, "MOMENTS_API_PORT")
    check_ports_free(asked)
    ports = {
        "collector": asked["collector"][1] if "collector" in asked else free_port(),
        "api": asked["read API"][1] if "read API" in asked else free_port(),
    }
    metrics = {name: free_port() for name in ("worker", "sink-postgres", "api", "collector")}
    wanted = with_session_keys(base).replace(
        collector_port=ports["collector"], api_port=ports["api"]
    )
    with (
        local_stack(wanted, keep=keep) as settings,
        Supervisor(settings, data_dir / "logs") as sup,
        contextlib.ExitStack() as on_exit,
    ):
        ensure_topics(settings)
        apply_migrations(settings.database.database_url or "")
        # Every role has its own key (with_session_keys), passed to each child with the rest.
        collector_key = settings.api.api_keys[0].get_secret_value()
        read_key = settings.api.read_api_keys[0].get_secret_value()
        desk_key = settings.api.desk_keys[0].get_secret_value()
        sup.spawn("worker", "worker", MOMENTS_METRICS_PORT=str(metrics["worker"]))
        sup.spawn(
            "sink-postgres", "sink", "postgres", MOMENTS_METRICS_PORT=str(metrics["sink-postgres"])
        )
        sup.spawn("collector", "collect", MOMENTS_METRICS_PORT=str(metrics["collector"]))
        sup.spawn("api", "api", MOMENTS_METRICS_PORT=str(metrics["api"]))
        if settings.sinks.webhook_urls:
            metrics["sink-webhook"] = free_port()
            sup.spawn(
                "sink-webhook", "sink", "webhook", MOMENTS_METRICS_PORT=str(metrics["sink-webhook"])
            )

        collector = f"http://{host}:{ports['collector']}"
        api_url = f"http://{settings.api.api_host}:{ports['api']}"
        metrics_urls = {name: f"http://127.0.0.1:{port}/metrics" for name, port in metrics.items()}
        if keep is None:
            kept = "thrown away when the stack stops (--keep DIR keeps the database)"
        else:
            kept = f"the database is kept in {keep}; {KEPT_BROKER_NOTE}"
        rows = [
            ("Kafka bootstrap", str(settings.kafka.bootstrap)),
            ("PostgreSQL", redact_url(str(settings.database.database_url))),
            ("HTTP collector", f"{collector}/v1/events (X-API-Key: {collector_key})"),
            (
                "read API",
                f"{api_url}/v1/customers/{{id}}/timeline|decisions (X-API-Key: {read_key})",
            ),
            ("agent desk", f"{api_url}/desk/ (sign in with the desk key)"),
            ("desk key", f"{desk_key} (MOMENTS_DESK_KEYS)"),
            *((f"metrics: {name}", url) for name, url in metrics_urls.items()),
            ("logs", str(sup.log_dir)),
            ("data", kept),
        ]
        extra = {
            "MOMENTS_COLLECTOR_URL": collector,
            "MOMENTS_COLLECTOR_KEY": collector_key,
            "MOMENTS_API_URL": api_url,
            "MOMENTS_DESK_URL": f"{api_url}/desk/",
            "MOMENTS_READ_KEY": read_key,
            **{
                f"MOMENTS_METRICS_URL_{name.upper().replace('-', '_')}": url
                for name, url in metrics_urls.items()
            },
            PID_VARIABLE: str(os.getpid()),
        }
        with console.status("waiting for the collector and the read API to answer"):
            sup.wait_until_serving([f"{collector}/healthz", f"{api_url}/healthz"], timeout_s=120)
        exports = export_lines(settings, extra)
        env_file = write_env_file(data_dir, exports)
        on_exit.callback(env_file.unlink, missing_ok=True)
        print_endpoints(console, "moments is up (Ctrl-C stops everything)", rows, exports, env_file)
        try:
            while True:
                sup.check_alive()
                time.sleep(1.0)
        except KeyboardInterrupt:
            console.print("stopping")
    if keep is None:
        console.print("stopped: the broker's topics and the database are gone", highlight=False)
    else:
        console.print(
            f"stopped: the database is kept in {keep}; {KEPT_BROKER_NOTE}", highlight=False
        )


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
        load_settings(adopt_stack=False),  # its own embedded stack unless MOMENTS_BOOTSTRAP
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
    shown = printable_rows(rows)  # customer text: no control characters reach the terminal
    for row in sorted(shown, key=lambda r: (-int(r["priority"]), str(r["customer_id"]))):
        table.add_row(
            str(row["priority"]),
            Text(f"{row['rule']} → {row['destination']}"),
            Text(str(row["customer_id"])),
            Text(str(row["reason"])),
        )
    return table
