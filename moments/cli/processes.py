"""The long-running processes: `moments worker`, `moments sink postgres|webhook`, `moments
api`, and `moments forget` (which reaches the workers and the database)."""

from __future__ import annotations

from typing import Annotated

import typer

from moments.cli.common import (
    UserError,
    app,
    console,
    friendly,
    load_settings,
    require_broker,
    require_database,
)

sink_app = typer.Typer(help="Deliver actions downstream.", no_args_is_help=True)


@app.command()
@friendly
def worker() -> None:
    """Run the stream worker (faust-streaming) that hosts the trigger engine."""
    from processors.worker import run_worker

    settings = require_broker(load_settings())
    run_worker(settings)


@sink_app.command("postgres")
@friendly
def sink_postgres() -> None:
    """Write actions, decisions and interaction events to PostgreSQL, idempotently."""
    from sinks.postgres import run_postgres_sink

    settings = require_database(require_broker(load_settings()))
    run_postgres_sink(settings)


@sink_app.command("webhook")
@friendly
def sink_webhook() -> None:
    """POST each action as a signed CloudEvent to its destination's URL."""
    from sinks.webhook import run_webhook_sink

    settings = require_broker(load_settings())
    run_webhook_sink(settings)


@app.command()
@friendly
def api(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default MOMENTS_API_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default MOMENTS_API_PORT, 8081).")
    ] = None,
) -> None:
    """Serve the read API for agent desktops: a customer's timeline and decisions (API key)."""
    from sinks.api import ApiConfigError, run_api

    try:
        run_api(require_database(load_settings()), host=host, port=port)
    except ApiConfigError as exc:
        raise UserError(str(exc)) from None


@app.command()
@friendly
def forget(
    customer_id: Annotated[str, typer.Argument(help="The customer to erase everywhere.")],
) -> None:
    """Erase a customer: rows in PostgreSQL, and engine state through an erasure record."""
    from moments.forget import ForgetError, forget_customer

    settings = require_database(require_broker(load_settings()))
    try:
        erased = forget_customer(settings, customer_id)
    except ForgetError as exc:
        raise UserError(str(exc)) from None
    console.print(
        f"erased customer sha256:{erased.customer_hash[:16]}…: {erased.rows} rows in PostgreSQL "
        f"({', '.join(f'{t} {n}' for t, n in sorted(erased.tables.items())) or 'none'}); "
        "erasure record sent to the workers",
        highlight=False,
    )
