"""The read API for agent desktops: a customer's timeline as JSON, from PostgreSQL.

`GET /v1/customers/{id}/timeline[?limit=N]` answers 200 with
`{"customer_id", "count", "entries": [...]}` (entries oldest first, as
`sinks.timeline.customer_timeline` returns them; an unknown customer has no
entries), 400 naming a bad parameter, 503 when the database is unreachable.
`GET /v1/customers/{id}/relationship[?limit=N]` answers 200 with the customer's
current positives, negatives, balance and its history (`sinks.relationship`),
404 for a customer with no action yet, 400 and 503 like the timeline.
`GET /healthz` answers 200 when the database answers, else 503.

A small Starlette app served by uvicorn. Read-only: it never writes to the
database and never serves anything but these two routes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from moments.metrics import serve_metrics
from moments.settings import Settings
from sinks.relationship import query_relationship
from sinks.timeline import MAX_LIMIT, query_timeline

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 200
MAX_CUSTOMER_ID_LENGTH = 256


class TimelineSource(Protocol):
    """Where the API reads timelines from (PostgreSQL in production, a list in unit tests)."""

    def timeline(self, customer_id: str, limit: int) -> list[dict[str, Any]]: ...
    def relationship(self, customer_id: str, limit: int) -> dict[str, Any] | None: ...
    def healthy(self) -> bool: ...
    def open(self) -> None: ...
    def close(self) -> None: ...


class DatabaseUnavailable(RuntimeError):
    """The database did not answer in time."""


class PostgresTimelines:
    """Timelines read through a small psycopg connection pool."""

    def __init__(self, conninfo: str, *, max_size: int = 4, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self.pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=timeout_s,
            kwargs={"connect_timeout": max(1, int(timeout_s)), "autocommit": True},
        )

    def open(self) -> None:
        self.pool.open(wait=False)  # start even while the database is down; /healthz tells

    def close(self) -> None:
        self.pool.close()

    def timeline(self, customer_id: str, limit: int) -> list[dict[str, Any]]:
        try:
            with self.pool.connection() as conn:
                return query_timeline(conn, customer_id, limit)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    def relationship(self, customer_id: str, limit: int) -> dict[str, Any] | None:
        try:
            with self.pool.connection() as conn:
                return query_relationship(conn, customer_id, limit)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    def healthy(self) -> bool:
        try:
            with self.pool.connection(timeout=self.timeout_s) as conn:
                conn.execute("SELECT 1")
            return True
        except (PoolTimeout, psycopg.Error):
            return False


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def build_app(source: TimelineSource) -> Starlette:
    """The ASGI app over any timeline source."""

    def customer_and_limit(request: Request) -> tuple[str, int] | JSONResponse:
        customer_id = str(request.path_params["customer_id"])
        if not customer_id.strip() or len(customer_id) > MAX_CUSTOMER_ID_LENGTH:
            return _error(
                400, f"customer id must be 1 to {MAX_CUSTOMER_ID_LENGTH} non-blank characters"
            )
        raw_limit = request.query_params.get("limit", str(DEFAULT_LIMIT))
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            return _error(400, f"limit must be an integer from 1 to {MAX_LIMIT}, got {raw_limit!r}")
        return customer_id, limit

    def relationship(request: Request) -> JSONResponse:
        asked = customer_and_limit(request)
        if isinstance(asked, JSONResponse):
            return asked
        customer_id, limit = asked
        try:
            strength = source.relationship(customer_id, limit)
        except DatabaseUnavailable as exc:
            log.warning("relationship of a customer: database unavailable: %s", exc)
            return _error(503, "database unavailable")
        if strength is None:
            return _error(404, "no relationship recorded for this customer yet")
        return JSONResponse(strength)

    def timeline(request: Request) -> JSONResponse:
        asked = customer_and_limit(request)
        if isinstance(asked, JSONResponse):
            return asked
        customer_id, limit = asked
        try:
            entries = source.timeline(customer_id, limit)
        except DatabaseUnavailable as exc:
            log.warning("timeline of a customer: database unavailable: %s", exc)
            return _error(503, "database unavailable")
        return JSONResponse({"customer_id": customer_id, "count": len(entries), "entries": entries})

    def healthz(request: Request) -> JSONResponse:
        if source.healthy():
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "database unavailable"}, status_code=503)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        source.open()
        try:
            yield
        finally:
            source.close()

    # Plain (sync) endpoints: Starlette runs them in its thread pool, next to the blocking pool.
    return Starlette(
        routes=[
            Route("/v1/customers/{customer_id}/timeline", timeline, methods=["GET"]),
            Route("/v1/customers/{customer_id}/relationship", relationship, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def create_app(conninfo: str) -> Starlette:
    """The read API over the PostgreSQL database at `conninfo`."""
    return build_app(PostgresTimelines(conninfo))


def run_api(settings: Settings, *, host: str = "127.0.0.1", port: int = 8081) -> None:
    """Serve the read API until interrupted (uvicorn handles SIGINT/SIGTERM).

    Serves Prometheus metrics on `settings.metrics_port` when it is set.
    """
    import uvicorn

    if not settings.database_url:
        raise ValueError("no database configured (set MOMENTS_DATABASE_URL)")
    serve_metrics(settings.metrics_port, settings.metrics_host)
    uvicorn.run(create_app(settings.database_url), host=host, port=port, log_level="warning")
