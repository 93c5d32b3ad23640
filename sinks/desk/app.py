"""The agent desk: server-rendered pages under `/desk` of `moments api` (docs/design.md 13).

Pages: sign-in and sign-out, the queue of a destination (overdue first, then
priority, then due_by; "mine"; pages of `PAGE_SIZE`), a customer page (timeline,
decisions, products, owner, preferences, the 90-day balance chart) and the buttons
Take, Done and Reassign, which publish the status events of docs/design.md 12 through
a `StatusSender` and never write to the database: a row shows "pending" until its
status comes back through the worker and the PostgreSQL sink.

Every page view and every button writes one line to the `moments.audit` logger (the
agent, the customer's keyed hash, status), like the read API. Customer text is
hostile: Jinja2 autoescapes every template, the Content-Security-Policy allows no
script and no outside asset, and an error page never holds a traceback (503 when the
database does not answer). Without desk keys the desk serves loopback only.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from importlib import resources
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from common.privacy import RateLimiter, is_loopback, keyed_customer_hash
from common.settings import Settings
from schemas.records import (
    DESTINATIONS,
    RESOLUTIONS,
    STATUS_ACKNOWLEDGED,
    STATUS_DONE,
    STATUS_LAPSED,
    STATUS_REASSIGNED,
)
from sinks.desk.auth import (
    MAX_AGENT_LENGTH,
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    DeskAuth,
    Session,
    parse_desk_keys,
)
from sinks.desk.chart import balance_svg
from sinks.desk.queries import (
    BALANCE_DAYS,
    DeskSource,
    PostgresDesk,
    due_text,
)
from sinks.pool import DatabaseUnavailable

log = logging.getLogger(__name__)
audit_log = logging.getLogger("moments.audit")

PREFIX: Final = "/desk"
PAGE_SIZE: Final = 50
MAX_PAGE: Final = 2000
MAX_ID_LENGTH: Final = 256
#: How long a row shows "pending" at most when its status never comes back.
PENDING_TTL_S: Final = 600.0
#: The status each button says (docs/design.md 12).
BUTTON_STATUS: Final = {
    "take": STATUS_ACKNOWLEDGED,
    "done": STATUS_DONE,
    "reassign": STATUS_REASSIGNED,
}
_DESTINATION = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_FORM_LIMIT: Final = 8192

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the URLs hold customer ids
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


class StatusNotSent(RuntimeError):
    """The broker did not confirm a status event (nothing was changed; press again)."""


class StatusSender(Protocol):
    """Publishes the status event of one button (docs/design.md 12: STATUS is
    `acknowledged`, `reassigned` or `done`) and returns its event id once the broker
    confirmed it; raises `StatusNotSent` otherwise. The moments CLI gives the publisher
    SDK's (`moments.desk`)."""

    def send(
        self,
        status: str,
        action_id: str,
        customer_id: str,
        *,
        owner: str | None = None,
        resolution: str | None = None,
    ) -> str: ...


@dataclass(frozen=True, slots=True)
class Pending:
    """A button pressed here whose status has not come back from PostgreSQL yet."""

    kind: str
    owner: str | None
    since: float


def _bad_id(text: str) -> bool:
    return not text.strip() or len(text) > MAX_ID_LENGTH or "\x00" in text


def _local_path(target: str | None) -> str:
    """TARGET when it is a path of the desk, else the desk's start page (no open redirect)."""
    if (
        target
        and target.startswith(PREFIX + "/")
        and not any(bad in target for bad in ("\\", "\n", "\r", "//"))
    ):
        return target
    return PREFIX + "/"


class Desk:
    """The desk's pages over a source and a sender; `mount()` gives the routes under /desk."""

    def __init__(
        self,
        source: DeskSource,
        sender: StatusSender | None,
        auth: DeskAuth,
        *,
        enabled: bool = True,
        disabled_reason: str = "",
        failed_key_limit: int = 10,
        clock: Callable[[], float] = time.time,
        destinations: tuple[str, ...] = DESTINATIONS,
    ) -> None:
        self.source = source
        self.sender = sender
        self.auth = auth
        self.enabled = enabled
        self.disabled_reason = disabled_reason
        self.clock = clock
        self.destinations = destinations
        self.failures = RateLimiter(failed_key_limit / 60.0, failed_key_limit)
        self._pending: dict[str, Pending] = {}
        self._lock = threading.Lock()
        self.templates = Environment(
            loader=PackageLoader("sinks.desk", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals.update(prefix=PREFIX, resolutions=RESOLUTIONS, quote=quote)
        self._css = resources.files("sinks.desk").joinpath("static/desk.css").read_bytes()

    def open(self) -> None:
        if self.enabled:
            self.source.open()

    def close(self) -> None:
        if self.enabled:
            self.source.close()

    # -- plumbing

    def _page(self, name: str, code: int = 200, **values: Any) -> HTMLResponse:
        html = self.templates.get_template(name).render(**values)
        return HTMLResponse(html, status_code=code, headers=SECURITY_HEADERS)

    def _error(self, status: int, title: str, message: str, session: Session | None) -> Response:
        values: dict[str, Any] = {"title": title, "message": message, "status": status}
        if session is not None:
            values.update(self._chrome(session))
        return self._page("error.html", status, **values)

    def _chrome(self, session: Session) -> dict[str, Any]:
        return {
            "agent": session.agent,
            "csrf": self.auth.csrf_token(session),
            "destinations": self.destinations,
        }

    def _session(self, request: Request) -> Session | str | None:
        return self.auth.session(request.cookies.get(SESSION_COOKIE), self.clock())

    def _to_signin(self, request: Request, expired: bool) -> Response:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        # After sign-in the browser GETs `next`: a button (POST) starts again at the queues.
        query = {"next": here if request.method == "GET" else PREFIX + "/"}
        if expired:
            query["expired"] = "1"
        response = RedirectResponse(f"{PREFIX}/signin?{urlencode(query)}", status_code=303)
        if expired:
            response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    async def _form(self, request: Request) -> dict[str, str] | None:
        """The urlencoded form of a POST (first value of each field), None when too big."""
        body = await request.body()
        if len(body) > _FORM_LIMIT:
            return None
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {name: values[0] for name, values in parsed.items()}

    def page(
        self, handler: Callable[[Request, Session], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A page that needs a session: sign-in first (saying so when it expired)."""

        async def serve(request: Request) -> Response:
            if not self.enabled:
                return self._error(403, "The desk is off", self.disabled_reason, None)
            session = self._session(request)
            if not isinstance(session, Session):
                return self._to_signin(request, expired=session == "expired")
            try:
                return await handler(request, session)
            except DatabaseUnavailable as exc:
                log.warning("desk: database unavailable (%s)", exc)
                return self._error(
                    503,
                    "Database unavailable",
                    "The database does not answer. Nothing was changed; try again shortly.",
                    session,
                )
            except Exception as exc:  # the page says so, without a traceback
                log.error("desk: a page failed: %s", type(exc).__name__)
                return self._error(500, "Something went wrong", "The page failed.", session)

        return serve

    # -- sign-in

    async def signin_form(self, request: Request) -> Response:
        if not self.enabled:
            return self._error(403, "The desk is off", self.disabled_reason, None)
        nonce = self.auth.signin_nonce()
        response = self._page(
            "signin.html",
            token=self.auth.signin_token(nonce),
            next=_local_path(request.query_params.get("next")),
            expired=request.query_params.get("expired") == "1",
            signed_out=request.query_params.get("out") == "1",
            error="",
            open_desk=self.auth.open,
        )
        self._cookie(request, response, SIGNIN_COOKIE, nonce, max_age=3600)
        return response

    async def signin(self, request: Request) -> Response:
        if not self.enabled:
            return self._error(403, "The desk is off", self.disabled_reason, None)
        form = await self._form(request)
        if form is None or not self.auth.signin_ok(
            request.cookies.get(SIGNIN_COOKIE), form.get("csrf")
        ):
            audit_log.info("desk signin refused status=403 (csrf)")
            return self._error(403, "Refused", "The form was stale or forged: reload it.", None)
        client = request.client.host if request.client else "unknown"
        wait_s = self.failures.waiting(client)
        if wait_s:
            audit_log.info("desk signin client=%s status=429 (failed keys)", client)
            response = self._error(429, "Too many attempts", "Wait a minute and try again.", None)
            response.headers["Retry-After"] = str(max(1, math.ceil(wait_s)))
            return response
        if self.auth.open:
            agent: str | None = form.get("agent", "").strip()[:MAX_AGENT_LENGTH] or None
            if agent is not None and (not agent.isprintable() or "|" in agent):
                agent = None
        else:
            agent = self.auth.agent_of_key(form.get("key", ""))
        if agent is None:
            self.failures.take(client)
            log.warning("desk: failed sign-in from client %s", client)
            audit_log.info("desk signin client=%s status=401", client)
            nonce = self.auth.signin_nonce()
            response = self._page(
                "signin.html",
                401,
                token=self.auth.signin_token(nonce),
                next=_local_path(form.get("next")),
                expired=False,
                signed_out=False,
                error="That key is not a desk key." if not self.auth.open else "Give a name.",
                open_desk=self.auth.open,
            )
            self._cookie(request, response, SIGNIN_COOKIE, nonce, max_age=3600)
            return response
        audit_log.info("desk signin agent=%s status=303", agent)
        response = RedirectResponse(_local_path(form.get("next")), status_code=303)
        # A browser-session cookie: its expiry is signed inside, so an expired session is
        # still presented and the sign-in page can say it expired.
        self._cookie(request, response, SESSION_COOKIE, self.auth.issue(agent, self.clock()))
        response.delete_cookie(SIGNIN_COOKIE, path=PREFIX)
        return response

    def _cookie(
        self,
        request: Request,
        response: Response,
        name: str,
        value: str,
        max_age: int | None = None,
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            # Behind a TLS proxy the scheme is http: its X-Forwarded-Proto only ever adds Secure.
            secure=request.url.scheme == "https"
            or request.headers.get("x-forwarded-proto", "").lower() == "https",
        )

    async def signout(self, request: Request, session: Session) -> Response:
        form = await self._form(request)
        if form is None or not self.auth.csrf_ok(session, form.get("csrf")):
            audit_log.info("desk signout agent=%s status=403 (csrf)", session.agent)
            return self._error(403, "Refused", "The form was stale or forged: reload it.", session)
        audit_log.info("desk signout agent=%s status=303", session.agent)
        response = RedirectResponse(f"{PREFIX}/signin?out=1", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    # -- pages

    async def home(self, request: Request, session: Session) -> Response:
        return RedirectResponse(f"{PREFIX}/queue/{self.destinations[0]}", status_code=303)

    async def queue(self, request: Request, session: Session) -> Response:
        destination = str(request.path_params["destination"])
        if not _DESTINATION.fullmatch(destination):
            audit_log.info("desk queue agent=%s status=400", session.agent)
            return self._error(400, "No such queue", "That is not a destination name.", session)
        mine = request.query_params.get("mine") == "1"
        try:
            page = int(request.query_params.get("page", "1"))
        except ValueError:
            page = 0
        if not 1 <= page <= MAX_PAGE:
            audit_log.info(
                "desk queue destination=%s agent=%s status=400", destination, session.agent
            )
            return self._error(400, "Bad page", f"page must be from 1 to {MAX_PAGE}.", session)
        owner = session.agent if mine else None

        def read() -> tuple[list[dict[str, Any]], dict[str, int]]:
            rows = self.source.queue(destination, owner, PAGE_SIZE + 1, (page - 1) * PAGE_SIZE)
            return rows, self.source.queue_counts(destination, owner)

        rows, counts = await run_in_threadpool(read)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        now = datetime.fromtimestamp(self.clock(), UTC)
        for row in rows:
            row["due"] = due_text(row["due_by"], row["overdue_at"], now)
            row["late"] = row["overdue_at"] is not None or (
                row["due_by"] is not None and row["due_by"] < now
            )
            row["pending"] = self._pending_of(row)
        here = f"{PREFIX}/queue/{destination}" + ("?mine=1" if mine else "")
        if page > 1:
            here += ("&" if mine else "?") + f"page={page}"
        audit_log.info(
            "desk queue destination=%s agent=%s status=200 count=%d",
            destination,
            session.agent,
            len(rows),
        )
        return self._page(
            "queue.html",
            **self._chrome(session),
            destination=destination,
            rows=rows,
            counts=counts,
            mine=mine,
            page=page,
            more=more,
            here=here,
            notice=self._notice(request),
        )

    async def customer(self, request: Request, session: Session) -> Response:
        customer_id = str(request.path_params["customer_id"])
        if _bad_id(customer_id):
            audit_log.info("desk customer agent=%s status=400", session.agent)
            return self._error(
                400,
                "Bad customer id",
                f"A customer id is 1 to {MAX_ID_LENGTH} characters, none of them NUL.",
                session,
            )
        found = await run_in_threadpool(self.source.customer, customer_id)
        now = datetime.fromtimestamp(self.clock(), UTC)
        for row in found["actions"]:
            row["due"] = due_text(row["due_by"], row["overdue_at"], now)
            row["late"] = row["overdue_at"] is not None or (
                row["due_by"] is not None and row["due_by"] < now
            )
            row["pending"] = self._pending_of(row)
        # Markup: the chart holds only numbers and dates, formatted and escaped by chart.py.
        chart = Markup(balance_svg(found["balance"], BALANCE_DAYS))
        audit_log.info(
            "desk customer customer=hmac:%s agent=%s status=200 count=%d",
            keyed_customer_hash(customer_id),
            session.agent,
            len(found["timeline"]),
        )
        return self._page(
            "customer.html",
            **self._chrome(session),
            customer_id=customer_id,
            here=f"{PREFIX}/customers/{quote(customer_id, safe='')}",
            chart=chart,
            balance_days=BALANCE_DAYS,
            notice=self._notice(request),
            **found,
        )

    # -- buttons

    def button(self, kind: str) -> Callable[[Request, Session], Awaitable[Response]]:
        async def press(request: Request, session: Session) -> Response:
            return await self._press(kind, request, session)

        return press

    async def _press(self, kind: str, request: Request, session: Session) -> Response:
        form = await self._form(request)
        if form is None or not self.auth.csrf_ok(session, form.get("csrf")):
            audit_log.info("desk %s agent=%s status=403 (csrf)", kind, session.agent)
            return self._error(403, "Refused", "The form was stale or forged: reload it.", session)
        back = _local_path(form.get("back"))
        action_id = str(request.path_params["action_id"])
        if _bad_id(action_id):
            audit_log.info("desk %s agent=%s status=400", kind, session.agent)
            return self._error(400, "Bad action id", "That is not an action id.", session)
        owner = resolution = ""
        if kind == "done":
            resolution = form.get("resolution", "")
            if resolution not in RESOLUTIONS:
                audit_log.info("desk done agent=%s status=400 (resolution)", session.agent)
                return self._error(
                    400, "Bad resolution", f"Choose one of: {', '.join(RESOLUTIONS)}.", session
                )
        elif kind == "reassign":
            owner = form.get("owner", "").strip()
            if not owner or len(owner) > MAX_AGENT_LENGTH or not owner.isprintable():
                audit_log.info("desk reassign agent=%s status=400 (owner)", session.agent)
                return self._error(
                    400,
                    "Bad owner",
                    f"Give the new owner's name, 1 to {MAX_AGENT_LENGTH} characters.",
                    session,
                )
        else:
            owner = session.agent
        action = await run_in_threadpool(self.source.action, action_id)
        if action is None:
            audit_log.info("desk %s agent=%s status=404", kind, session.agent)
            return self._error(404, "No such action", "That action is not known here.", session)
        customer = keyed_customer_hash(str(action["customer_id"]))
        if action["status"] in (STATUS_DONE, STATUS_LAPSED):
            audit_log.info(
                "desk %s action=%s customer=hmac:%s agent=%s status=409 (%s)",
                kind,
                action_id,
                customer,
                session.agent,
                action["status"],
            )
            return self._redirect(back, "already-" + action["status"], action)
        try:
            if self.sender is None:
                raise StatusNotSent("no broker configured")
            event_id = await run_in_threadpool(
                partial(
                    self.sender.send,
                    BUTTON_STATUS[kind],
                    action_id,
                    str(action["customer_id"]),
                    owner=owner or None,
                    resolution=resolution or None,
                )
            )
        except StatusNotSent as exc:
            log.warning("desk: a %s was not sent: %s", kind, exc)
            audit_log.info(
                "desk %s action=%s customer=hmac:%s agent=%s status=503 (not sent)",
                kind,
                action_id,
                customer,
                session.agent,
            )
            return self._redirect(back, "not-sent", action)
        with self._lock:
            self._pending[action_id] = Pending(kind, owner or None, self.clock())
        audit_log.info(
            "desk %s action=%s customer=hmac:%s agent=%s status=303 event=%s",
            kind,
            action_id,
            customer,
            session.agent,
            event_id,
        )
        return self._redirect(back, "sent-" + kind, action)

    def _redirect(self, back: str, notice: str, action: dict[str, Any]) -> Response:
        glue = "&" if "?" in back else "?"
        target = f"{back}{glue}{urlencode({'notice': notice, 'action': action['action_id']})}"
        return RedirectResponse(target, status_code=303)

    def _notice(self, request: Request) -> dict[str, str] | None:
        code = request.query_params.get("notice")
        action_id = request.query_params.get("action", "")
        text = NOTICES.get(code or "")
        if text is None:
            return None
        return {"code": code or "", "text": text, "action": action_id[:MAX_ID_LENGTH]}

    def _pending_of(self, row: dict[str, Any]) -> str | None:
        """What the row waits for ("take", "done", "reassign"), until PostgreSQL shows it."""
        with self._lock:
            pending = self._pending.get(row["action_id"])
            if pending is None:
                return None
            arrived = (
                row["status"] in (STATUS_DONE, STATUS_LAPSED)
                if pending.kind == "done"
                else row["owner"] == pending.owner and row["status"] != "open"
            )
            if arrived or self.clock() - pending.since > PENDING_TTL_S:
                del self._pending[row["action_id"]]
                return None
            return pending.kind

    async def css(self, request: Request) -> Response:
        return Response(
            self._css,
            media_type="text/css",
            headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    def mount(self) -> Mount:
        """The desk's routes under /desk."""
        return Mount(
            PREFIX,
            routes=[
                Route("/", self.page(self.home), methods=["GET"]),
                Route("/signin", self.signin_form, methods=["GET"]),
                Route("/signin", self.signin, methods=["POST"]),
                Route("/signout", self.page(self.signout), methods=["POST"]),
                Route("/queue/{destination}", self.page(self.queue), methods=["GET"]),
                Route("/customers/{customer_id:path}", self.page(self.customer), methods=["GET"]),
                Route(
                    "/actions/{action_id}/take", self.page(self.button("take")), methods=["POST"]
                ),
                Route(
                    "/actions/{action_id}/done", self.page(self.button("done")), methods=["POST"]
                ),
                Route(
                    "/actions/{action_id}/reassign",
                    self.page(self.button("reassign")),
                    methods=["POST"],
                ),
                Route("/static/desk.css", self.css, methods=["GET"]),
            ],
        )


#: What the page says after a button (the codes travel in the redirect, never free text).
NOTICES: Final = {
    "sent-take": "Taken: the status was sent. The row shows “pending” until it comes back.",
    "sent-done": "Done: the status was sent. The row shows “pending” until it comes back.",
    "sent-reassign": "Reassigned: the status was sent. The row shows “pending” until it comes"
    " back.",
    "not-sent": "Could not be sent: the broker did not confirm it. Nothing was changed;"
    " press the button again.",
    "already-done": "Already completed by someone else: nothing was sent.",
    "already-lapsed": "This action has lapsed: nothing was sent.",
}


def build_desk(settings: Settings, conninfo: str, sender: StatusSender | None, host: str) -> Desk:
    """The desk of `moments api`: keys from `MOMENTS_DESK_KEYS` (`DeskKeyError` when one is
    malformed); without keys it serves only a loopback HOST, and says so on every page."""
    keys = parse_desk_keys(key.get_secret_value() for key in settings.api.desk_keys)
    enabled = bool(keys) or is_loopback(host)
    reason = (
        ""
        if enabled
        else f"The desk serves {host} only with desk keys: set MOMENTS_DESK_KEYS"
        " (a JSON list of name=key) or bind 127.0.0.1."
    )
    if not enabled:
        log.warning("desk: no MOMENTS_DESK_KEYS, so the desk is off on %s", host)
    return Desk(
        PostgresDesk(conninfo),
        sender,
        DeskAuth(keys),
        enabled=enabled,
        disabled_reason=reason,
        failed_key_limit=settings.api.api_failed_key_limit,
    )
