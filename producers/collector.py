"""The HTTP collector: the web channel's door to the `interactions` topic (an ASGI app on uvicorn).

`POST /v1/events` takes one event (a JSON object in the JSON form of
docs/design.md 3.5), a JSON array of them, or `{"events": [...]}`. Each event
is validated on its own and the answer is 202 with one result per event
(accepted with its event_id, or rejected with the field at fault); when every
event is rejected it is 422 with the same results. An accepted event whose type
no rule of the running pack names carries a `warning` in its result. An event
is "accepted" only once its OWN delivery report came back from the broker (a
future per event); an event the broker refuses for what it is (e.g. too large
for the topic) is "rejected". When the broker does not acknowledge an event in
time, when the producer's (bounded) queue is full or no broker is reachable,
the answer is 503 with `Retry-After` and the client may retry: an event sent
without an event_id gets the id derived from its content
(`schemas.json_form.event_content_id`, as file replay derives it;
docs/design.md 3.2), so a retry, with the returned ids or without any, is a
duplicate downstream. Nothing here blocks the event loop, so `/healthz` keeps
answering while the broker is away.

`POST /v1/actions/{action_id}/status` takes `{customer_id, status, owner?,
resolution?, note?, occurred_at?}` (status `acknowledged`, `reassigned` or
`done`; docs/design.md 12) and sends the status event it stands for
(`action_acknowledged`, `action_reassigned`, `action_done`, channel `other`,
`reference` = the action id, owner and resolution as attributes, the note as
text, `occurred_at` now unless given) exactly as `/v1/events` sends one event:
same key and scope, limits and answers; a field it cannot take is a 422 naming
it. A webhook receiver can answer an action without knowing the event format.

Events dated more than `MOMENTS_MAX_FUTURE_SKEW` ahead of now are rejected
(field `occurred_at`). Optional per-key policy: `MOMENTS_COLLECTOR_RATE_LIMIT`
events per second per key (429 with `Retry-After` beyond it) and
`MOMENTS_COLLECTOR_KEY_CHANNELS`, each key's scope by key name
(`common.privacy.key_name`): the channels, event types and sources it may send
(`KeyScope`). A request holding an event beyond its key's scope is refused as a
whole with 403 naming what the key may not send; none of its events is sent.
uvicorn runs with a connection limit, each client address holds at most
`MOMENTS_HTTP_CLIENT_CONNECTIONS` connections (`common.http_limits`), and a
client must send its headers within `MOMENTS_COLLECTOR_HEADER_TIMEOUT_S` and
its body within `MOMENTS_COLLECTOR_BODY_TIMEOUT_S` (408).

A malformed request gets a 4xx naming the problem: 401 without a valid API key
(`Authorization: Bearer <key>` or `X-API-Key: <key>`, one of
`MOMENTS_API_KEYS`, compared in constant time by `common.privacy.KeyRing`; the
read API has keys of its own), 413 for a body
or batch over the limits, 415 for an encoded body, 400 for anything that is
not JSON of the right shape. `GET /healthz` (process up), `GET /readyz`
(broker reachable, topic present), `GET /metrics` (Prometheus) and `GET
/openapi.json` (`schemas.openapi`) need no key;
`run_collector` serves the same three on the ops port (`MOMENTS_METRICS_PORT`)
like every other process.

The collector must never accept an event it cannot hand to the broker, never
start without API keys unless told it is insecure on purpose, and never log
event contents or keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import anyio.to_thread
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from common.http_limits import limited_protocol
from common.metrics import COLLECTOR_REQUESTS, EVENTS_REJECTED, serve_metrics
from common.privacy import KeyRing, RateLimiter, key_name, presented_key, printable
from common.settings import Settings
from producers.publisher import (
    Publisher,
    PublisherBusy,
    PublishError,
    RecordRefused,
    action_status_json,
)
from schemas.codec import SchemaValidationError, event_from_json, to_json_line
from schemas.openapi import collector_openapi
from schemas.records import EVENT_TYPES, STATUS_EVENT_TYPES, InteractionEvent

log = logging.getLogger(__name__)

#: Status recorded for a request whose client disconnected before sending its body
#: (nginx's convention; the client never sees it).
CLIENT_CLOSED: Final = 499
#: A request body above this many bytes is refused with 413 before it is parsed.
DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024
#: A batch with more events than this is refused with 413.
DEFAULT_MAX_BATCH: Final = 1000
#: How long a request waits for the broker's acknowledgement before answering 503.
DEFAULT_ACK_TIMEOUT_S: Final = 15.0


class CollectorConfigError(RuntimeError):
    """The collector cannot start as configured (e.g. no API keys and not told to be insecure)."""


#: Seconds a client is told to wait (`Retry-After`) when the broker cannot take events now.
RETRY_AFTER_S: Final = 5


class EventPublisher(Protocol):
    """What the collector needs of `producers.publisher.Publisher` (made with confirm=True)."""

    def submit(
        self, event: InteractionEvent, report: Callable[[PublishError | None], None]
    ) -> None: ...


class _Reports:
    """The delivery reports of one request's events, as they come in (from the reports
    thread); the request's task is woken once, when the last one is in."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.errors: dict[int, PublishError] = {}
        self.arrived: set[int] = set()
        self._loop = loop
        self._all_in: asyncio.Future[None] = loop.create_future()
        self._lock = threading.Lock()
        self._waiting = 0
        self._sealed = False

    def expect(self) -> None:
        with self._lock:
            self._waiting += 1

    def forget(self) -> None:
        """The event expected last was not sent after all."""
        with self._lock:
            self._waiting -= 1

    def report(self, index: int, error: PublishError | None) -> None:
        with self._lock:
            self.arrived.add(index)
            if error is not None:
                self.errors[index] = error
            self._waiting -= 1
            last = self._sealed and self._waiting == 0
        if last:
            with contextlib.suppress(RuntimeError):  # the loop is gone
                self._loop.call_soon_threadsafe(_resolve, self._all_in)

    async def wait(self, timeout_s: float) -> None:
        """Every event is sent: wait (at most `timeout_s`) for the reports still out."""
        with self._lock:
            self._sealed = True
            last = self._waiting == 0
        if last:
            _resolve(self._all_in)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_in, timeout_s)


def collector_producer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka options of the collector's producer: a bounded queue (memory) and a
    bounded delivery time, so a broker outage becomes 503s, never a blocked loop or an OOM."""
    return {
        "queue.buffering.max.kbytes": settings.collector.collector_queue_max_kbytes,
        "queue.buffering.max.messages": settings.collector.collector_queue_max_messages,
        "message.timeout.ms": round(settings.collector.collector_message_timeout_s * 1000),
        # Every request waits for its reports: send at once (requests batch one another).
        "linger.ms": 1,
    }


def collector_publisher(settings: Settings, **config: Any) -> Publisher:
    """The publisher the collector needs: per-event delivery reports, bounded queue."""
    return Publisher(
        settings, confirm=True, config={**collector_producer_config(settings), **config}
    )


class _Refused(Exception):
    """A request the collector refuses as a whole: status code and a message naming why."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class BrokerReadiness:
    """Is the broker reachable and the interactions topic there? Cached for a second."""

    def __init__(self, settings: Settings, *, timeout_s: float = 2.0, cache_s: float = 1.0) -> None:
        self._settings = settings
        self._topic = settings.topics.interactions
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._answer: tuple[bool, str] = (False, "not checked yet")

    def __call__(self) -> tuple[bool, str]:
        with self._lock:
            if time.monotonic() - self._checked_at < self._cache_s:
                return self._answer
            self._answer = self._check()
            self._checked_at = time.monotonic()
            return self._answer

    def _check(self) -> tuple[bool, str]:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        try:
            # A fresh client per check (they are cached for a second): a long-lived one would
            # retry a dead broker forever in the background.
            admin = AdminClient(self._settings.kafka_config(logger=log))
            metadata = admin.list_topics(topic=self._topic, timeout=self._timeout_s)
        except KafkaException as exc:
            return False, f"broker unreachable: {exc.args[0]}"
        except RuntimeError as exc:  # no bootstrap configured
            return False, str(exc)
        topic = metadata.topics.get(self._topic)
        if topic is None or topic.error is not None or not topic.partitions:
            return False, f"topic {self._topic} is not available"
        return True, f"broker reachable, topic {self._topic} has {len(topic.partitions)} partitions"


@dataclass(frozen=True, slots=True)
class KeyScope:
    """What one collector key may send (None: that part is not limited)."""

    channels: frozenset[str] | None = None
    event_types: frozenset[str] | None = None
    sources: frozenset[str] | None = None

    @classmethod
    def of(cls, configured: list[str] | Mapping[str, list[str]]) -> KeyScope:
        """A scope as `MOMENTS_COLLECTOR_KEY_CHANNELS` gives it: a list of channels (the
        original form) or {"channels", "event_types", "sources"}, each part optional."""
        if isinstance(configured, list):
            return cls(channels=frozenset(configured))
        parts = {name: frozenset(values) for name, values in configured.items()}
        return cls(
            channels=parts.get("channels"),
            event_types=parts.get("event_types"),
            sources=parts.get("sources"),
        )

    def refusal(self, event: InteractionEvent) -> str | None:
        """What of EVENT this key may not send, with what it may (e.g. "event type
        'account_closed' (it may send event types: inquiry)"), or None."""
        for part, allowed, value in (
            ("channel", self.channels, event.channel),
            ("event type", self.event_types, event.type),
            ("source", self.sources, event.source),
        ):
            if allowed is not None and value not in allowed:
                shown = ", ".join(sorted(allowed)) or "none"
                return f"{part} {value!r} (it may send {part}s: {shown})"
        return None


def key_scopes(settings: Settings) -> dict[str, KeyScope]:
    """Each limited collector key's scope, by key name."""
    return {
        name: KeyScope.of(configured)
        for name, configured in settings.collector.collector_key_channels.items()
    }


def api_keys_of(settings: Settings) -> list[bytes]:
    """The configured API keys as bytes (for constant-time comparison)."""
    return [key.get_secret_value().encode("utf-8") for key in settings.api.api_keys]


def shared_keys(settings: Settings) -> list[str]:
    """The names of the collector keys that are also read API or desk keys (each role has
    keys of its own: a key that sends events must not read customers)."""
    collector = set(api_keys_of(settings))
    others = {
        key.get_secret_value().encode("utf-8")
        for key in (*settings.api.read_api_keys, *settings.api.desk_keys)
    }
    return sorted(key_name(key) for key in collector & others)


def _required_keys(settings: Settings, insecure: bool) -> KeyRing:
    shared = shared_keys(settings)
    if shared:
        raise CollectorConfigError(
            f"MOMENTS_API_KEYS (the collector's keys) shares {', '.join(shared)} with"
            " MOMENTS_READ_API_KEYS or MOMENTS_DESK_KEYS: give each role keys of its own"
        )
    keys = KeyRing(api_keys_of(settings))
    if not keys and not insecure:
        raise CollectorConfigError(
            "no API keys configured: set MOMENTS_API_KEYS (a JSON list, e.g. '[\"k1\"]'), "
            "or start the collector with --insecure to accept unauthenticated requests"
        )
    return keys


def create_app(
    settings: Settings,
    publisher: EventPublisher,
    *,
    insecure: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_batch: int = DEFAULT_MAX_BATCH,
    ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
    readiness: Callable[[], tuple[bool, str]] | None = None,
    named_types: Collection[str] | None = None,
) -> Starlette:
    """The collector's ASGI app; refuses to build without API keys unless `insecure`.

    NAMED_TYPES: the event types some rule of the running pack names (None: every type
    may matter); an accepted event of another type gets a `warning` in its result."""
    keys = _required_keys(settings, insecure)
    if max_body_bytes <= 0 or max_batch <= 0:
        raise CollectorConfigError("max_body_bytes and max_batch must be positive")
    max_event_bytes = settings.engine.max_event_bytes
    skew_ms = settings.engine.max_future_skew_ms
    body_timeout_s = settings.collector.collector_body_timeout_s
    ready = readiness or BrokerReadiness(settings)
    limiter = RateLimiter(settings.collector.collector_rate_limit)
    scopes = key_scopes(settings)

    def authenticate(request: Request) -> str:
        """The name of the request's key (`common.privacy.key_name`; "" when unauthenticated)."""
        if not keys:
            return ""
        given = presented_key(request.headers)
        if not given:
            raise _Refused(
                401,
                "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                {"WWW-Authenticate": 'Bearer realm="moments"'},
            )
        name = keys.match(given)  # constant time, against every key
        if name is None:
            raise _Refused(
                401, "invalid API key", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        return name

    async def read_body(request: Request) -> bytes:
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise _Refused(415, f"Content-Encoding {encoding} is not supported; send plain JSON")
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise _Refused(400, f"invalid Content-Length {declared!r}")
            if int(declared) > max_body_bytes:
                raise _Refused(
                    413,
                    f"request body of {int(declared)} bytes exceeds the limit of {max_body_bytes}",
                )
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise _Refused(413, f"request body exceeds the limit of {max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def parse_events(body: bytes) -> tuple[list[Any], bool]:
        if not body.strip():
            raise _Refused(400, "empty body: expected one event (a JSON object) or a batch")
        try:
            document = json.loads(body.decode("utf-8-sig"))
            if _SURROGATE_ESCAPE.search(body) and _holds_lone_surrogate(document):
                raise _Refused(
                    400,
                    "body holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), "
                    "which is not Unicode text",
                )
        except UnicodeDecodeError as exc:
            raise _Refused(400, f"body is not UTF-8 text (byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise _Refused(
                400, f"body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
        except RecursionError:
            raise _Refused(400, "body is JSON nested too deeply to be events") from None
        if isinstance(document, list):
            items, batch = document, True
        elif isinstance(document, dict) and set(document) == {"events"}:
            items, batch = document["events"], True
            if not isinstance(items, list):
                raise _Refused(400, "'events' must be a JSON array of events")
        elif isinstance(document, dict):
            items, batch = [document], False
        else:
            raise _Refused(
                400,
                f'expected one event (a JSON object), an array of events or {{"events": [...]}}, '
                f"got {type(document).__name__}",
            )
        if not items:
            raise _Refused(400, "empty batch: send at least one event")
        if len(items) > max_batch:
            raise _Refused(413, f"batch of {len(items)} events exceeds the limit of {max_batch}")
        return items, batch

    def check_scope(items: list[Any], batch: bool, scope: KeyScope | None) -> None:
        """403 when any event of the request is beyond its key's scope (nothing is sent)."""
        if scope is None:
            return
        for index, item in enumerate(items):
            where = f"events[{index}]" if batch else "the event"
            try:
                event = event_from_json(item, where=where)
            except SchemaValidationError:
                continue  # rejected on its own below
            refused = scope.refusal(event)
            if refused is not None:
                raise _Refused(
                    403,
                    f"this API key may not send {refused}: {where}; no event of this request"
                    " was accepted",
                )

    def check(event: InteractionEvent, body_size: int) -> None:
        """What the collector adds to the codec's checks: time, size."""
        if event.occurred_at > time.time_ns() // 1_000_000 + skew_ms:
            raise SchemaValidationError(
                "occurred_at",
                f"lies more than {skew_ms / 1000:g} s in the future (MOMENTS_MAX_FUTURE_SKEW)",
            )
        if body_size > max_event_bytes:
            size = len(to_json_line(event).encode("utf-8"))
            if size > max_event_bytes:
                raise SchemaValidationError(
                    "<event>", f"{size} bytes exceeds the limit of {max_event_bytes}"
                )

    def submit_all(
        items: list[Any],
        batch: bool,
        body_size: int,
        reports: _Reports,
    ) -> tuple[list[dict[str, Any]], list[int], str | None]:
        """A result per event and the indexes of those sent; the reason the producer
        refused to take more (the rest of the batch is then not sent), or None."""
        results: list[dict[str, Any]] = []
        sent: list[int] = []
        for index, item in enumerate(items):
            where = f"events[{index}]" if batch else ""
            try:
                event = event_from_json(item, where=where)
                check(event, body_size)
                reports.expect()
                try:
                    publisher.submit(event, functools.partial(reports.report, index))
                except BaseException:
                    reports.forget()
                    raise
            except SchemaValidationError as exc:
                results.append(_rejected(index, exc.field, exc.message))
                continue
            except RecordRefused as exc:
                results.append(_rejected(index, "<event>", f"the broker refused it: {exc.error}"))
                continue
            except (PublisherBusy, PublishError) as exc:
                results += [{"index": i, "status": "unconfirmed"} for i in range(index, len(items))]
                return results, sent, str(exc)
            sent.append(index)
            result = {"index": index, "status": "accepted", "event_id": event.event_id}
            if (
                named_types is not None
                and event.type not in named_types
                and event.type not in STATUS_EVENT_TYPES  # the engine's own, no rule's
            ):
                result["warning"] = unnamed_type_warning(event.type)
            results.append(result)
        return results, sent, None

    async def settle(
        results: list[dict[str, Any]], sent: list[int], reports: _Reports
    ) -> list[str]:
        """Wait for each sent event's own report; mark those not acknowledged (their errors)."""
        await reports.wait(ack_timeout_s)
        errors: list[str] = []
        for index in sent:
            if index not in reports.arrived:
                results[index]["status"] = "unconfirmed"
                errors.append(f"not acknowledged within {ack_timeout_s:g} s")
                continue
            failure = reports.errors.get(index)
            if isinstance(failure, RecordRefused):
                results[index] = _rejected(
                    index, "<event>", f"the broker refused it: {failure.error}"
                )
            elif failure is not None:
                results[index]["status"] = "unconfirmed"
                errors.append(failure.error)
        return errors

    def take_rate(key: str, events: int) -> None:
        """Spend `events` of the key's rate; `_Refused` (429, Retry-After) when it is spent."""
        wait_s = limiter.take(key, events)
        if wait_s > 0:
            raise _Refused(
                429,
                f"rate limit of {limiter.rate:g} events per second for this key exceeded",
                {"Retry-After": str(max(1, math.ceil(wait_s)))},
            )

    def refusal(refused: _Refused | TimeoutError) -> Response:
        """The answer to a request refused before its events were looked at."""
        if isinstance(refused, TimeoutError):
            return _answer(
                408,
                {"error": f"request body not received within {body_timeout_s:g} s"},
                {"Connection": "close"},
            )
        return _answer(refused.status, {"error": refused.message}, refused.headers)

    async def post_events(request: Request) -> Response:
        try:
            key = authenticate(request)
            body = await asyncio.wait_for(read_body(request), body_timeout_s)
            items, batch = parse_events(body)
            check_scope(items, batch, scopes.get(key))
            take_rate(key, len(items))
        except (_Refused, TimeoutError) as refused:
            return refusal(refused)
        except ClientDisconnect:  # gone before its body arrived: nothing to answer, nothing taken
            COLLECTOR_REQUESTS.labels(code=str(CLIENT_CLOSED)).inc()
            return Response(status_code=CLIENT_CLOSED)
        return await publish_items(items, batch, len(body))

    async def publish_items(
        items: list[Any], batch: bool, body_size: int, *, name_field: bool = False
    ) -> Response:
        """Send the events of an admitted request; 202, 422 or 503 with a result per event.
        NAME_FIELD: a 422's error names the first field at fault."""
        reports = _Reports(asyncio.get_running_loop())
        results, sent, busy = submit_all(items, batch, body_size, reports)
        errors = await settle(results, sent, reports)
        if busy is not None:
            errors.insert(0, busy)
        rejected = sum(result["status"] == "rejected" for result in results)
        EVENTS_REJECTED.labels(stage="collector").inc(rejected)
        if errors:
            log.warning(
                "collector: %d events not acknowledged (%s); answering 503", len(errors), errors[0]
            )
            return _answer(
                503,
                {
                    "error": f"the broker did not take every event: {errors[0]}; "
                    "retry the unconfirmed ones with the same event_ids",
                    "results": results,
                },
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        accepted = len(results) - rejected
        answer: dict[str, Any] = {"accepted": accepted, "rejected": rejected, "results": results}
        if results and accepted == 0:  # nothing taken is a client error; partial success: 202
            error = "every event was rejected (see results)"
            if name_field:
                error = f"{results[0]['field']}: {results[0]['error']}"
            answer = {"error": error, **answer}
            return _answer(422, answer)
        return _answer(202, answer)

    async def post_action_status(request: Request) -> Response:
        """`POST /v1/actions/{action_id}/status`: the status event it stands for, sent as
        `/v1/events` sends one (same key, scope, limits and answers)."""
        try:
            key = authenticate(request)
            body = await asyncio.wait_for(read_body(request), body_timeout_s)
            try:
                item = status_event_json(str(request.path_params["action_id"]), body)
            except SchemaValidationError as exc:
                answer = {
                    "error": f"{exc.field}: {exc.message}",
                    "accepted": 0,
                    "rejected": 1,
                    "results": [_rejected(0, exc.field, exc.message)],
                }
                EVENTS_REJECTED.labels(stage="collector").inc()
                return _answer(422, answer)
            check_scope([item], False, scopes.get(key))
            take_rate(key, 1)
        except (_Refused, TimeoutError) as refused:
            return refusal(refused)
        except ClientDisconnect:
            COLLECTOR_REQUESTS.labels(code=str(CLIENT_CLOSED)).inc()
            return Response(status_code=CLIENT_CLOSED)
        return await publish_items([item], False, len(body), name_field=True)

    async def healthz(request: Request) -> Response:
        return _answer(200, {"status": "ok"})

    async def readyz(request: Request) -> Response:
        ok, detail = await anyio.to_thread.run_sync(ready)
        return _answer(
            200 if ok else 503, {"status": "ready" if ok else "unavailable", "detail": detail}
        )

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    document = collector_openapi()

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    app = Starlette(
        routes=[
            Route("/v1/events", post_events, methods=["POST"]),
            Route("/v1/actions/{action_id}/status", post_action_status, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ]
    )
    app.state.settings = settings
    return app


#: The fields of a status request (docs/design.md 12); `occurred_at` defaults to now.
STATUS_FIELDS: Final = ("customer_id", "status", "owner", "resolution", "note", "occurred_at")


def status_event_json(action_id: str, body: bytes) -> dict[str, Any]:
    """The JSON form of the status event a status request stands for
    (`producers.publisher.action_status_json`). `SchemaValidationError` names the field at
    fault (never its value)."""
    try:
        document = json.loads(body.decode("utf-8-sig")) if body.strip() else None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise SchemaValidationError("<body>", "is not a JSON object") from None
    if not isinstance(document, dict):
        raise SchemaValidationError("<body>", "must be a JSON object {customer_id, status, ...}")
    unknown = sorted(set(document) - set(STATUS_FIELDS))
    if unknown:
        raise SchemaValidationError(
            printable(unknown[0])[:64], f"is not a field here (known: {', '.join(STATUS_FIELDS)})"
        )
    for name in ("customer_id", "status"):
        if document.get(name) in (None, ""):
            raise SchemaValidationError(name, "is required")
        if not isinstance(document[name], str):
            raise SchemaValidationError(name, "must be a string")
    return action_status_json(
        action_id,
        document["customer_id"],
        document["status"],
        owner=document.get("owner"),
        resolution=document.get("resolution"),
        note=document.get("note"),
        occurred_at=document.get("occurred_at"),
    )


def unnamed_type_warning(event_type: str) -> str:
    """The warning of an accepted event whose type no rule of the running pack names."""
    known = "" if event_type in EVENT_TYPES else " (nor is it one of the event types)"
    return (
        f"no rule of the running pack names type {printable(event_type)[:64]!r}{known}: the"
        " event is kept, but only rules on every event (tenure) see it (docs/design.md 3.2)"
    )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _rejected(index: int, field: str, error: str) -> dict[str, Any]:
    return {"index": index, "status": "rejected", "field": field, "error": error}


# A JSON escape of a UTF-16 surrogate: only bodies holding one need the (costlier) full check.
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _holds_lone_surrogate(document: Any) -> bool:
    """Whether a parsed JSON document holds a surrogate no pair completed (not encodable text)."""
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    COLLECTOR_REQUESTS.labels(code=str(status)).inc()
    return JSONResponse(body, status_code=status, headers=headers)


def _server(app: Starlette, host: str, port: int) -> uvicorn.Server:
    settings: Settings = app.state.settings
    protocol = limited_protocol(
        settings.collector.collector_header_timeout_s, settings.api.http_client_connections
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        # With h11, a malformed body that arrives with its headers makes uvicorn answer 400
        # and close while the app's task answers too: an "Exception in ASGI application"
        # in the log for a request that was handled. httptools has no such race.
        http=protocol,
        # Beyond this many connections (or running requests) uvicorn answers 503 at once.
        limit_concurrency=settings.collector.collector_max_connections,
        timeout_keep_alive=5,
    )
    return uvicorn.Server(config)


def run_collector(
    settings: Settings,
    *,
    insecure: bool = False,
    host: str | None = None,
    port: int | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_batch: int = DEFAULT_MAX_BATCH,
    named_types: Collection[str] | None = None,
) -> None:
    """Serve the collector until SIGINT/SIGTERM (binds settings.collector.collector_host,
    127.0.0.1 by default); flushes the publisher on the way out. NAMED_TYPES: see
    `create_app`."""
    keys = _required_keys(settings, insecure)
    readiness = BrokerReadiness(settings)
    with collector_publisher(settings) as publisher:
        app = create_app(
            settings,
            publisher,
            insecure=insecure,
            max_body_bytes=max_body_bytes,
            max_batch=max_batch,
            readiness=readiness,
            named_types=named_types,
        )
        # The ops port too (MOMENTS_METRICS_PORT), where probes and Prometheus look for
        # every process; the collector's own port serves the same three endpoints.
        serve_metrics(
            settings.metrics.metrics_port,
            settings.metrics.metrics_host,
            ready=readiness,
            client_connections=settings.api.http_client_connections,
            idle_timeout_s=settings.api.http_idle_timeout_s,
        )
        bind_host = host or settings.collector.collector_host
        bind_port = settings.collector.collector_port if port is None else port
        if not keys:
            log.warning("collector: no API keys configured, accepting unauthenticated requests")
        _server(app, bind_host, bind_port).run()


@contextlib.contextmanager
def collector_in_thread(
    app: Starlette,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    timeout_s: float = 10.0,
) -> Iterator[str]:
    """Serve `app` (made by `create_app`) on a background thread (tests, `moments up`);
    yields its base URL."""
    server = _server(app, host, port)
    thread = threading.Thread(target=server.run, name="moments-collector", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise CollectorConfigError(f"collector did not start on {host}:{port}")
        time.sleep(0.02)
    bound = port
    for listener in server.servers:
        for sock in listener.sockets:
            bound = sock.getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
