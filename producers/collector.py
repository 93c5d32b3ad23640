"""The HTTP collector: the web channel's door to the `interactions` topic (an ASGI app on uvicorn).

`POST /v1/events` takes one event (a JSON object in the JSON form of
DESIGN.md section 3), a JSON array of them, or `{"events": [...]}`. Each event
is validated on its own and the answer is 202 with one result per event
(accepted with its event_id, or rejected with the field at fault), even when
every event is rejected. The answer is sent only after the broker acknowledged
every accepted event (one thread flushes the publisher for all waiting requests
at once, so the event loop keeps serving); if it does not, the answer is 503 and
the client may retry with the returned event ids, which makes the retry
idempotent downstream.

A malformed request gets a 4xx naming the problem: 401 without a valid API key
(`Authorization: Bearer <key>` or `X-API-Key: <key>`, compared in constant
time by `moments.privacy.KeyRing`, which the read API shares), 413 for a body
or batch over the limits, 415 for an encoded body, 400 for anything that is
not JSON of the right shape. `GET /healthz` (process up), `GET /readyz`
(broker reachable, topic present) and `GET /metrics` (Prometheus) need no key;
`run_collector` serves the same three on the ops port (`MOMENTS_METRICS_PORT`)
like every other process.

The collector must never accept an event it cannot hand to the broker, never
start without API keys unless told it is insecure on purpose, and never log
event contents or keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final, Protocol

import anyio.to_thread
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from moments.metrics import COLLECTOR_REQUESTS, EVENTS_REJECTED, serve_metrics
from moments.privacy import KeyRing, presented_key
from moments.settings import Settings
from producers.publisher import Publisher, PublishError, new_event_id
from schemas.codec import SchemaValidationError, event_from_json, to_json_line
from schemas.records import InteractionEvent

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


class EventPublisher(Protocol):
    """What the collector needs of `producers.publisher.Publisher`."""

    def publish(self, event: InteractionEvent) -> None: ...

    def flush(self, timeout_s: float = 30.0) -> None: ...


class _Refused(Exception):
    """A request the collector refuses as a whole: status code and a message naming why."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class Acknowledger:
    """Group commit: one thread flushes the publisher for every request waiting at that moment.

    A request publishes its events, then `await ack.wait()`; the flusher thread takes all
    waiting requests, flushes once (every event queued before is then acknowledged or failed)
    and settles them together. Many concurrent requests cost one flush, and the event loop
    never blocks.
    """

    def __init__(self, publisher: EventPublisher, timeout_s: float) -> None:
        self._publisher = publisher
        self._timeout_s = timeout_s
        self._condition = threading.Condition()
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    async def wait(self) -> None:
        """Return once the broker acknowledged everything published before the call;
        raise `PublishError` if a delivery failed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._condition:
            if self._closed:
                raise RuntimeError("collector is shutting down")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="moments-collector-ack", daemon=True
                )
                self._thread.start()
            self._waiting.append((loop, future))
            self._condition.notify()
        await future

    def close(self) -> None:
        """Settle whoever still waits, then stop the thread."""
        with self._condition:
            self._closed = True
            self._condition.notify()
        if self._thread is not None:
            self._thread.join(self._timeout_s + 5)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._waiting and not self._closed:
                    self._condition.wait()
                if not self._waiting:
                    return
                batch, self._waiting = self._waiting, []
            error: BaseException | None = None
            try:
                self._publisher.flush(self._timeout_s)
            except Exception as exc:  # PublishError, or a client that broke down
                error = exc
            for loop, future in batch:
                with contextlib.suppress(RuntimeError):  # that loop is already closed
                    loop.call_soon_threadsafe(_settle, future, error)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


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


def api_keys_of(settings: Settings) -> list[bytes]:
    """The configured API keys as bytes (for constant-time comparison)."""
    return [key.get_secret_value().encode("utf-8") for key in settings.api_keys]


def _required_keys(settings: Settings, insecure: bool) -> KeyRing:
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
) -> Starlette:
    """The collector's ASGI app; refuses to build without API keys unless `insecure`."""
    keys = _required_keys(settings, insecure)
    if max_body_bytes <= 0 or max_batch <= 0:
        raise CollectorConfigError("max_body_bytes and max_batch must be positive")
    max_event_bytes = settings.max_event_bytes
    ready = readiness or BrokerReadiness(settings)
    acknowledger = Acknowledger(publisher, ack_timeout_s)

    def authenticate(request: Request) -> None:
        if not keys:
            return
        given = presented_key(request.headers)
        if not given:
            raise _Refused(
                401,
                "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                {"WWW-Authenticate": 'Bearer realm="moments"'},
            )
        if keys.match(given) is None:  # constant time, against every key
            raise _Refused(
                401, "invalid API key", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )

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

    def accept(items: list[Any], batch: bool, body_size: int) -> tuple[list[dict[str, Any]], int]:
        results: list[dict[str, Any]] = []
        accepted = 0
        for index, item in enumerate(items):
            where = f"events[{index}]" if batch else ""
            try:
                event = event_from_json(item, where=where, new_event_id=new_event_id)
                if body_size > max_event_bytes:
                    size = len(to_json_line(event).encode("utf-8"))
                    if size > max_event_bytes:
                        raise SchemaValidationError(
                            "<event>", f"{size} bytes exceeds the limit of {max_event_bytes}"
                        )
                publisher.publish(event)
            except SchemaValidationError as exc:
                EVENTS_REJECTED.labels(stage="collector").inc()
                results.append(
                    {"index": index, "status": "rejected", "field": exc.field, "error": exc.message}
                )
                continue
            accepted += 1
            results.append({"index": index, "status": "accepted", "event_id": event.event_id})
        return results, accepted

    async def post_events(request: Request) -> Response:
        try:
            authenticate(request)
            body = await read_body(request)
            items, batch = parse_events(body)
        except _Refused as refused:
            return _answer(refused.status, {"error": refused.message}, refused.headers)
        except ClientDisconnect:  # gone before its body arrived: nothing to answer, nothing taken
            COLLECTOR_REQUESTS.labels(code=str(CLIENT_CLOSED)).inc()
            return Response(status_code=CLIENT_CLOSED)
        results, accepted = accept(items, batch, len(body))
        if accepted:
            try:
                await acknowledger.wait()
            except PublishError as exc:
                log.error("collector: broker did not acknowledge %d events: %s", accepted, exc)
                for result in results:
                    if result["status"] == "accepted":
                        result["status"] = "unconfirmed"
                return _answer(
                    503,
                    {
                        "error": f"the broker did not acknowledge the events: {exc.error}; "
                        "retry with the same event_ids",
                        "results": results,
                    },
                )
        return _answer(
            202, {"accepted": accepted, "rejected": len(results) - accepted, "results": results}
        )

    async def healthz(request: Request) -> Response:
        return _answer(200, {"status": "ok"})

    async def readyz(request: Request) -> Response:
        ok, detail = await anyio.to_thread.run_sync(ready)
        return _answer(
            200 if ok else 503, {"status": "ready" if ok else "unavailable", "detail": detail}
        )

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/v1/events", post_events, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )
    app.state.acknowledger = acknowledger
    return app


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
        http="httptools",
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
) -> None:
    """Serve the collector until SIGINT/SIGTERM (binds settings.collector_host, 127.0.0.1 by
    default); flushes the publisher on the way out."""
    keys = _required_keys(settings, insecure)
    readiness = BrokerReadiness(settings)
    with Publisher(settings) as publisher:
        app = create_app(
            settings,
            publisher,
            insecure=insecure,
            max_body_bytes=max_body_bytes,
            max_batch=max_batch,
            readiness=readiness,
        )
        # The ops port too (MOMENTS_METRICS_PORT), where probes and Prometheus look for
        # every process; the collector's own port serves the same three endpoints.
        serve_metrics(settings.metrics_port, settings.metrics_host, ready=readiness)
        bind_host = host or settings.collector_host
        bind_port = settings.collector_port if port is None else port
        if not keys:
            log.warning("collector: no API keys configured, accepting unauthenticated requests")
        _server(app, bind_host, bind_port).run()


@contextlib.contextmanager
def collector_in_thread(
    app: Starlette, host: str = "127.0.0.1", port: int = 0, *, timeout_s: float = 10.0
) -> Iterator[str]:
    """Serve `app` on a background thread (tests, `moments up`); yields its base URL."""
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
