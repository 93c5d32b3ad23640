"""The long-running processes: `moments worker`, `moments sink postgres|webhook`, `moments
api`, and `moments forget` (which reaches the workers and, with `--wait`, the sinks)."""

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
    serving,
)

sink_app = typer.Typer(help="Deliver actions downstream.", no_args_is_help=True)


@app.command()
@friendly
def worker() -> None:
    """Run the stream worker (faust-streaming) that hosts the trigger engine."""
    from processors.worker import run_worker

    settings = require_broker(load_settings())
    topic = settings.topics.interactions
    with serving(
        settings, "worker", f"consuming {topic} from {settings.kafka.bootstrap}", role="worker"
    ):
        run_worker(settings)


@sink_app.command("postgres")
@friendly
def sink_postgres() -> None:
    """Write actions, decisions and interaction events to PostgreSQL, idempotently."""
    from common.privacy import redact_url
    from sinks.postgres import run_postgres_sink

    settings = require_database(require_broker(load_settings()))
    database = redact_url(str(settings.database.database_url))
    with serving(
        settings,
        "sink postgres",
        f"from {settings.kafka.bootstrap} into {database}",
        role="sink-postgres",
    ):
        run_postgres_sink(settings)


@sink_app.command("webhook")
@friendly
def sink_webhook() -> None:
    """POST each action as a signed CloudEvent to its destination's URL."""
    from sinks.webhook import run_webhook_sink

    settings = require_broker(load_settings())
    destinations = ", ".join(sorted(settings.sinks.webhook_urls)) or "none configured"
    with serving(
        settings,
        "sink webhook",
        f"from {settings.kafka.bootstrap} to destinations {destinations}",
        role="sink-webhook",
    ):
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
    """Serve the read API for agent desktops (a customer's timeline and decisions, API key)
    and the agent desk under /desk (desk keys; its buttons publish status events)."""
    from common.privacy import redact_url
    from moments.desk import PublisherStatusSender
    from sinks.api import ApiConfigError, run_api

    settings = require_database(load_settings())
    where = f"http://{host or settings.api.api_host}:{port or settings.api.api_port}"
    database = redact_url(str(settings.database.database_url))
    sender = PublisherStatusSender(settings)
    try:
        with serving(settings, "read API", f"{where}/v1/customers/ from {database}", role="api"):
            run_api(settings, host=host, port=port, desk_sender=sender)
    except ApiConfigError as exc:
        raise UserError(str(exc)) from None
    finally:
        sender.close()


@app.command()
@friendly
def forget(
    customer_id: Annotated[str, typer.Argument(help="The customer to erase everywhere.")],
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Return once every sink of this configuration confirmed the erasure (the"
            " PostgreSQL sink if MOMENTS_DATABASE_URL is set, the webhook sink if"
            " MOMENTS_WEBHOOK_URLS names destinations) and say what was removed.",
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds --wait waits for the confirmations.", min=1)
    ] = 120.0,
) -> None:
    """Erase a customer: erasure registry, engine state, and every sink's rows, in order."""
    from common.erasures import ErasureRegistryError
    from moments.forget import ForgetError, request_erasure, wait_for_erasure
    from producers.publisher import PublishError

    settings = require_broker(load_settings())
    try:
        request = request_erasure(settings, customer_id)
    except (ErasureRegistryError, PublishError) as exc:
        raise UserError(str(exc)) from None
    name = f"customer {request.customer_hash[:16]}…"
    if not wait:
        console.print(
            f"erasure of {name} requested: registry and erasure record sent; the worker and"
            " the sinks delete when they reach it (`--wait` to see them confirm)",
            highlight=False,
        )
        return
    try:
        report = wait_for_erasure(settings, request, timeout_s=timeout)
    except ForgetError as exc:
        raise UserError(str(exc)) from None
    if not report.expected:
        raise UserError(
            f"erasure of {name} requested, but no sink to wait for: set MOMENTS_DATABASE_URL"
            " and/or MOMENTS_WEBHOOK_URLS as the sinks have them"
        )
    removed = report.removed
    lines = [f"erasure of {name} complete" if report.complete else f"erasure of {name}"]
    if "postgres" in report.expected:
        rows = ", ".join(f"{t} {n}" for t, n in sorted(removed.items())) or "none"
        lines.append(
            f"  PostgreSQL: {sum(removed.values())} rows removed ({rows}); "
            f"{len(report.postgres)}/{len(report.expected['postgres'])} topics confirmed"
        )
    if "webhook" in report.expected:
        # one destination per action topic (action-status's marker goes to all of them)
        per_destination = {
            t: ok for t, ok in report.webhook.items() if t != settings.topics.action_status
        }
        delivered = sum(per_destination.values())
        failed = len(per_destination) - delivered
        lines.append(
            f"  webhook: customer.forgotten acknowledged by {delivered} destination(s)"
            + (f", dead-lettered for {failed}" if failed else "")
            + f"; {len(report.webhook)}/{len(report.expected['webhook'])} topics confirmed"
        )
    console.print("\n".join(lines), highlight=False)
    if not report.complete:
        waiting = "; ".join(f"{sink}: {', '.join(t)}" for sink, t in report.missing.items())
        raise UserError(
            f"not confirmed within {timeout:g} s by {waiting} (is that sink running? the"
            " erasure completes when it gets there)"
        )
