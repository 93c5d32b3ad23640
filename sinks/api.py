"""The read API for agent desktops: a customer's timeline and decision trace, from PostgreSQL.

Routes (all JSON):

- `GET /v1/customers/{id}/timeline[?limit=N][&before=CURSOR]`: 200 with
  `{"customer_id", "count", "entries": [...], "next_before"}`: the latest
  `limit` entries before `before` (default: now), oldest first, as
  `sinks.timeline.query_timeline` returns them (an unknown customer has no
  entries). `next_before` is the cursor of the next (older) page, or null on
  the last one; `before` also takes an ISO-8601 time.
- `GET /v1/customers/{id}/decisions[?limit=N][&before=CURSOR]`: the decision
  trace, `{"customer_id", "count", "decisions": [...], "next_before"}`, each
  decision with `blocked_by` (null where the table has no such column yet).
- `GET /v1/customers/{id}/actions[?status=S][&limit=N][&before=CURSOR]`: the
  actions fired for the customer, `{"customer_id", "count", "actions": [...],
  "next_before"}`, each with its status, owner, acknowledged_at, done_at,
  resolution, overdue_at, `overdue` (past due_by and not done) and `late_s`
  (docs/design.md 12); `status` keeps one status (`overdue`: every action
  overdue, whatever its latest change); 400 names an unknown one.
- `GET /v1/customers/{id}/relationship[?limit=N]`: the customer's current
  positives, negatives, balance and the last `limit` points of its history
  (`sinks.relationship`); 404 for a customer with no action yet.
- `GET /healthz` (the process is up), `GET /readyz` (the database answers;
  503 otherwise), `GET /metrics` (Prometheus) and `GET /openapi.json` (this API's
  OpenAPI document, `schemas.openapi`): no key needed.

The customer routes require a read API key (`Authorization: Bearer <key>` or
`X-API-Key: <key>`, compared in constant time: `common.privacy.KeyRing`, the
collector's mechanism) from `MOMENTS_READ_API_KEYS`, never one of the
collector's `MOMENTS_API_KEYS` (which only send events: the API refuses to
start when the two share a key); 401 without a valid one. Failed key attempts
are logged (client address, never the key) and limited per client address
(`api_failed_key_limit` a minute; then 429, whatever key comes). Without keys
the API serves only on loopback: `run_api` refuses any other interface. Each
key gets `api_rate_per_s` requests per second (burst `api_rate_burst`; 429
with `Retry-After` beyond); `limit` is at most `api_max_page` (400 beyond,
naming the parameter). Every authenticated read writes one audit line to the
`moments.audit` logger: route, the customer's keyed hash
(`common.privacy.keyed_customer_hash`), the key's name, status and count; so
does a refused or failed one (a NUL in an id or a cursor is a 400, with its
line). 400 names a bad parameter, 503 means the database is unreachable.
Every connection counts against `MOMENTS_HTTP_CLIENT_CONNECTIONS` per client
address and is closed after `MOMENTS_HTTP_IDLE_TIMEOUT_S` without a request.

The same process serves the agent desk under `/desk` (`sinks.desk`, docs/design.md
13): web pages for the people who do the actions, signed in with `MOMENTS_DESK_KEYS`
(served on loopback only without them).

A small Starlette app served by uvicorn. Read-only: it never writes to the
database (the desk's buttons publish status events), never serves anything but
these routes, and never logs a customer id or a key in clear.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final, Protocol

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from common.http_limits import limited_protocol
from common.metrics import serve_metrics
from common.privacy import (
    KeyRing,
    RateLimiter,
    is_loopback,
    key_name,
    keyed_customer_hash,
    presented_key,
)
from common.settings import Settings
from schemas.openapi import read_api_openapi
from sinks.desk import Desk, DeskKeyError, StatusSender, build_desk, parse_desk_keys
from sinks.pool import DatabaseUnavailable, ReadPool
from sinks.relationship import query_relationship
from sinks.timeline import (
    ACTION_STATUS_FILTERS,
    BadCursor,
    page_cursor,
    parse_cursor,
    query_actions,
    query_decisions,
    query_timeline,
)

log = logging.getLogger(__name__)
#: One line per read of a customer's data: who (key name) read whom (hashed id).
audit_log = logging.getLogger("moments.audit")

DEFAULT_LIMIT: Final = 200
MAX_CUSTOMER_ID_LENGTH: Final = 256
#: Name of the caller in audit lines when the API runs without keys (loopback only).
ANONYMOUS: Final = "anonymous"

Cursor = tuple[datetime, int, str]


class ApiConfigError(RuntimeError):
    """The read API cannot start as configured (e.g. beyond loopback without keys)."""


class CustomerSource(Protocol):
    """Where the API reads customers from (PostgreSQL in production, lists in unit tests)."""

    def timeline(
        self, customer_id: str, limit: int, before: Cursor | None
    ) -> list[dict[str, Any]]: ...
    def decisions(
        self, customer_id: str, limit: int, before: Cursor | None
    ) -> list[dict[str, Any]]: ...
    def actions(
        self, customer_id: str, limit: int, before: Cursor | None, status: str | None
    ) -> list[dict[str, Any]]: ...
    def relationship(self, customer_id: str, limit: int) -> dict[str, Any] | None: ...
    def healthy(self) -> bool: ...
    def open(self) -> None: ...
    def close(self) -> None: ...


class PostgresCustomers(ReadPool):
    """Timelines and decision traces read through a small psycopg connection pool."""

    def timeline(self, customer_id: str, limit: int, before: Cursor | None) -> list[dict[str, Any]]:
        return self.read(lambda conn: query_timeline(conn, customer_id, limit, before))

    def decisions(
        self, customer_id: str, limit: int, before: Cursor | None
    ) -> list[dict[str, Any]]:
        return self.read(lambda conn: query_decisions(conn, customer_id, limit, before))

    def actions(
        self, customer_id: str, limit: int, before: Cursor | None, status: str | None
    ) -> list[dict[str, Any]]:
        return self.read(lambda conn: query_actions(conn, customer_id, limit, before, status))

    def relationship(self, customer_id: str, limit: int) -> dict[str, Any] | None:
        return self.read(lambda conn: query_relationship(conn, customer_id, limit))

    def healthy(self) -> bool:
        try:
            with self.pool.connection(timeout=self.timeout_s) as conn:
                conn.execute("SELECT 1")
            return True
        except (PoolTimeout, psycopg.Error):
            return False


def _answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def build_app(
    source: CustomerSource,
    *,
    keys: KeyRing | None = None,
    rate_per_s: float = 10.0,
    burst: int = 20,
    max_page: int = 500,
    limiter: RateLimiter | None = None,
    failed_key_limit: int = 10,
    desk: Desk | None = None,
) -> Starlette:
    """The ASGI app over any customer source; without `keys`, every caller is anonymous.
    A client address gets `failed_key_limit` failed key attempts a minute, then 429.
    With `desk`, the agent desk's pages are served under /desk (`sinks.desk`)."""
    ring = keys or KeyRing([])
    limiter = limiter or RateLimiter(rate_per_s, burst)
    failures = RateLimiter(failed_key_limit / 60.0, failed_key_limit)
    default_limit = min(DEFAULT_LIMIT, max_page)

    def caller_of(request: Request, what: str) -> str | Response:
        """The key name of the request's caller, or the 401/429 answer (failures logged)."""
        if not ring:
            name = ANONYMOUS
        else:
            client = request.client.host if request.client else "unknown"
            wait_s = failures.waiting(client)
            if wait_s:
                log.warning("read API: client %s is over its failed key attempts", client)
                audit_log.info("refused %s client=%s status=429 (failed keys)", what, client)
                return _answer(
                    429,
                    {"error": "too many failed key attempts from this address: wait"},
                    {"Retry-After": str(max(1, math.ceil(wait_s)))},
                )
            given = presented_key(request.headers)
            found = ring.match(given) if given else None
            if found is None:
                failures.take(client)
                log.warning(
                    "read API: %s API key from client %s", "invalid" if given else "no", client
                )
                audit_log.info("refused %s client=%s status=401", what, client)
                if not given:
                    return _answer(
                        401,
                        {
                            "error": "missing API key: send 'Authorization: Bearer <key>'"
                            " or 'X-API-Key'"
                        },
                        {"WWW-Authenticate": 'Bearer realm="moments"'},
                    )
                return _answer(
                    401,
                    {"error": "invalid API key"},
                    {"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
            name = found
        wait_s = limiter.take(name)
        if wait_s:
            return _answer(
                429,
                {"error": "rate limit exceeded: slow down"},
                {"Retry-After": str(max(1, math.ceil(wait_s)))},
            )
        return name

    def page_of(request: Request) -> tuple[int, Cursor | None] | Response:
        raw_limit = request.query_params.get("limit", str(default_limit))
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= max_page:
            return _answer(400, {"error": f"limit must be an integer from 1 to {max_page}"})
        raw_before = request.query_params.get("before")
        if raw_before is None:
            return limit, None
        try:
            cursor = parse_cursor(raw_before)
        except BadCursor as exc:
            return _answer(400, {"error": f"before: {exc}"})
        if "\x00" in raw_before or "\x00" in cursor[2]:  # PostgreSQL text holds no NUL
            return _answer(400, {"error": "before: holds a NUL character"})
        return limit, cursor

    def audited(
        what: str, serve: Callable[[Request, str], tuple[Response, int]]
    ) -> Callable[[Request], Response]:
        """A customer route: key and rate first, then the read, then one audit line."""

        def handler(request: Request) -> Response:
            caller = caller_of(request, what)
            if isinstance(caller, Response):
                return caller
            customer_id = str(request.path_params["customer_id"])
            if not customer_id.strip() or len(customer_id) > MAX_CUSTOMER_ID_LENGTH:
                message = f"customer id must be 1 to {MAX_CUSTOMER_ID_LENGTH} non-blank characters"
                answer, count = _answer(400, {"error": message}), 0
            elif "\x00" in customer_id:
                answer, count = _answer(400, {"error": "customer id holds a NUL character"}), 0
            else:
                try:
                    answer, count = serve(request, customer_id)
                except Exception as exc:  # the read still gets its audit line
                    log.error("read of %s failed: %s", what, type(exc).__name__)
                    answer, count = _answer(500, {"error": "internal error"}), 0
            audit_log.info(
                "read %s customer=hmac:%s key=%s status=%d count=%d",
                what,
                keyed_customer_hash(customer_id),
                caller,
                answer.status_code,
                count,
            )
            return answer

        return handler

    def unavailable(what: str, exc: Exception) -> tuple[Response, int]:
        log.warning("read of %s: database unavailable (%s)", what, exc)
        return _answer(503, {"error": "database unavailable"}), 0

    def customer_route(
        what: str, read: Callable[[str, int, Cursor | None], list[dict[str, Any]]], items: str
    ) -> Callable[[Request], Response]:
        """A paged customer route: the latest `limit` items before the cursor."""
        return audited(what, paged(what, read, items))

    def paged(
        what: str, read: Callable[[str, int, Cursor | None], list[dict[str, Any]]], items: str
    ) -> Callable[[Request, str], tuple[Response, int]]:
        """What a paged route serves once its caller is known."""

        def serve(request: Request, customer_id: str) -> tuple[Response, int]:
            page = page_of(request)
            if isinstance(page, Response):
                return page, 0
            limit, before = page
            try:
                found = read(customer_id, limit, before)
            except DatabaseUnavailable as exc:
                return unavailable(what, exc)
            next_before = None
            if found and len(found) == limit:  # maybe more: the cursor of the oldest one
                oldest = found[0]
                if items == "entries":
                    next_before = page_cursor(oldest["at"], oldest["kind"], oldest["id"])
                elif items == "actions":
                    next_before = page_cursor(oldest["triggered_at"], "action", oldest["action_id"])
                else:
                    next_before = page_cursor(
                        oldest["decided_at"], "decision", oldest["decision_id"]
                    )
            body = {
                "customer_id": customer_id,
                "count": len(found),
                items: found,
                "next_before": next_before,
            }
            return _answer(200, body), len(found)

        return serve

    def serve_actions(request: Request, customer_id: str) -> tuple[Response, int]:
        status = request.query_params.get("status")
        if status is not None and status not in ACTION_STATUS_FILTERS:
            message = f"status must be one of {', '.join(ACTION_STATUS_FILTERS)}"
            return _answer(400, {"error": message}), 0

        def read(customer_id: str, limit: int, before: Cursor | None) -> list[dict[str, Any]]:
            return source.actions(customer_id, limit, before, status)

        return paged("actions", read, "actions")(request, customer_id)

    def serve_relationship(request: Request, customer_id: str) -> tuple[Response, int]:
        page = page_of(request)
        if isinstance(page, Response):
            return page, 0
        limit, _ = page
        try:
            strength = source.relationship(customer_id, limit)
        except DatabaseUnavailable as exc:
            return unavailable("relationship", exc)
        if strength is None:
            return _answer(404, {"error": "no relationship recorded for this customer yet"}), 0
        return _answer(200, strength), 1

    def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def readyz(request: Request) -> Response:
        if source.healthy():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "database unavailable"}, status_code=503)

    def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        source.open()
        if desk is not None:
            desk.open()
        try:
            yield
        finally:
            if desk is not None:
                desk.close()
            source.close()

    document = read_api_openapi()
    # Plain (sync) endpoints: Starlette runs them in its thread pool, next to the blocking pool.
    return Starlette(
        routes=[
            Route(
                "/v1/customers/{customer_id}/timeline",
                customer_route("timeline", source.timeline, "entries"),
                methods=["GET"],
            ),
            Route(
                "/v1/customers/{customer_id}/decisions",
                customer_route("decisions", source.decisions, "decisions"),
                methods=["GET"],
            ),
            Route(
                "/v1/customers/{customer_id}/actions",
                audited("actions", serve_actions),
                methods=["GET"],
            ),
            Route(
                "/v1/customers/{customer_id}/relationship",
                audited("relationship", serve_relationship),
                methods=["GET"],
            ),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", lambda request: JSONResponse(document), methods=["GET"]),
            *([desk.mount()] if desk is not None else []),
        ],
        lifespan=lifespan,
    )


def create_app(
    conninfo: str,
    settings: Settings | None = None,
    *,
    desk_sender: StatusSender | None = None,
    host: str = "127.0.0.1",
) -> Starlette:
    """The read API over the PostgreSQL database at `conninfo`, keys and limits from settings,
    with the agent desk under /desk (its buttons publish through `desk_sender`; HOST is the
    interface bound: without desk keys the desk serves loopback only)."""
    settings = settings or Settings()
    return build_app(
        PostgresCustomers(conninfo),
        keys=api_keys(settings),
        rate_per_s=settings.api.api_rate_per_s,
        burst=settings.api.api_rate_burst,
        max_page=settings.api.api_max_page,
        failed_key_limit=settings.api.api_failed_key_limit,
        desk=build_desk(settings, conninfo, desk_sender, host),
    )


def _secrets(keys: Any) -> set[bytes]:
    return {key.get_secret_value().encode("utf-8") for key in keys}


def api_keys(settings: Settings) -> KeyRing:
    """The keys the read API accepts: `MOMENTS_READ_API_KEYS` (never the collector's)."""
    return KeyRing(sorted(_secrets(settings.api.read_api_keys)))


def check_binding(settings: Settings, host: str) -> KeyRing:
    """The API's keys; `ApiConfigError` when HOST is beyond loopback and there are none,
    when only the collector's keys are set, or when a read key is also another role's."""
    read = _secrets(settings.api.read_api_keys)
    shared = read & (_secrets(settings.api.api_keys) | _secrets(settings.api.desk_keys))
    if shared:
        names = ", ".join(sorted(key_name(key) for key in shared))
        raise ApiConfigError(
            f"MOMENTS_READ_API_KEYS shares {names} with MOMENTS_API_KEYS (the collector's) or"
            " MOMENTS_DESK_KEYS: give the read API keys of its own"
        )
    if not read and settings.api.api_keys:
        raise ApiConfigError(
            "MOMENTS_API_KEYS are the collector's keys and do not open the read API;"
            " set MOMENTS_READ_API_KEYS (a JSON list, e.g. '[\"r1\"]')"
        )
    try:
        parse_desk_keys(key.get_secret_value() for key in settings.api.desk_keys)
    except DeskKeyError as exc:
        raise ApiConfigError(str(exc)) from None
    keys = api_keys(settings)
    if not keys and not is_loopback(host):
        raise ApiConfigError(
            f"the read API serves customer data: it binds {host} only with API keys; "
            "set MOMENTS_READ_API_KEYS (a JSON list, e.g. '[\"r1\"]') or bind 127.0.0.1"
        )
    return keys


def run_api(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    desk_sender: StatusSender | None = None,
) -> None:
    """Serve the read API until interrupted (uvicorn handles SIGINT/SIGTERM).

    Binds `host`/`port` (default `MOMENTS_API_HOST`, 127.0.0.1, and `MOMENTS_API_PORT`,
    8081); that port also serves /healthz, /readyz and /metrics, and the agent desk under
    /desk (its buttons publish through `desk_sender`). Serves Prometheus metrics on
    `settings.metrics.metrics_port` as well when it is set.
    """
    import uvicorn

    bind_host = host or settings.api.api_host
    bind_port = settings.api.api_port if port is None else port
    keys = check_binding(settings, bind_host)
    if not settings.database.database_url:
        raise ApiConfigError("no database configured (set MOMENTS_DATABASE_URL)")
    if not keys:
        log.warning("read API: no API keys configured, serving loopback without keys")
    audit_to_stderr()
    serve_metrics(
        settings.metrics.metrics_port,
        settings.metrics.metrics_host,
        client_connections=settings.api.http_client_connections,
        idle_timeout_s=settings.api.http_idle_timeout_s,
    )
    uvicorn.run(
        create_app(
            settings.database.database_url, settings, desk_sender=desk_sender, host=bind_host
        ),
        host=bind_host,
        port=bind_port,
        log_level="warning",
        access_log=False,  # the access log holds paths: customer ids
        http=limited_protocol(
            settings.api.http_idle_timeout_s, settings.api.http_client_connections
        ),
        timeout_keep_alive=5,
    )


def audit_to_stderr() -> None:
    """Write the audit lines to stderr (one per read, with the time) unless logging is set up."""
    if audit_log.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    audit_log.addHandler(handler)
    audit_log.setLevel(logging.INFO)
    audit_log.propagate = False
