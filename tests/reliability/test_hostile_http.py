"""Hostile HTTP against the collector: thousands of malformed or adversarial requests.

Hypothesis generates requests (bad or missing API keys, bytes that are not
JSON, JSON of every shape, event objects with wrong types, absurd values,
unpaired surrogate escapes, deep nesting, oversized bodies and batches,
encoded bodies, wrong methods and paths). Most go through the ASGI app in
process (fast); a share goes over real HTTP to a uvicorn server publishing to
the real broker, plus raw malformed HTTP on a socket. Every request must be
answered: never a 5xx, a 4xx whose body names the problem, or 202 (docs/design.md,
section 6.3: well-formed JSON of the right shape) with a result per event whose
rejections name the field. Requests without a valid API key are rejected
(401) and publish nothing. API keys are compared with `hmac.compare_digest`,
against every configured key.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import SecretStr

from common.settings import Settings
from moments.stack import free_port
from producers.collector import collector_in_thread, collector_publisher, create_app
from producers.publisher import Publisher
from schemas.codec import codec_for
from schemas.records import CHANNELS, EVENT_TYPES, InteractionEvent
from tests.reliability.harness import SOAK_MARKS, Figures

KEYS = ("k-ivr-4f1c9a52e0b7d4a6", "k-web-0d9e8c7b6a5f4e3d")
MAX_BODY = 64 * 1024
MAX_BATCH = 50
EVENT_FIELDS = (
    "event_id",
    "customer_id",
    "channel",
    "type",
    "occurred_at",
    "source",
    "product",
    "reference",
    "amount",
    "currency",
    "due_date",
    "customer_since",
    "text",
    "attributes",
)


# --------------------------------------------------------------------------- a recording publisher


class RecordingPublisher:
    """Stands in for the publisher in process: encodes each event like the real one, keeps it."""

    def __init__(self) -> None:
        self.codec = codec_for(InteractionEvent)
        self.published = 0

    def submit(self, event: InteractionEvent, report: Callable[[Any], None]) -> None:
        self.codec.encode(event)
        self.published += 1
        report(None)


# --------------------------------------------------------------------------- strategies


@dataclass
class HostileRequest:
    """One generated request and what its answer may be."""

    method: str = "POST"
    path: str = "/v1/events"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: The API key is valid: the answer may be 202 (else it must be 401).
    authorised: bool = True
    #: The request as a whole is well formed: 202 is the only right answer.
    well_formed: bool = False


def good_event(n: int) -> dict[str, Any]:
    return {
        "event_id": f"hostile-{n}",
        "customer_id": f"CUST-{n % 50}",
        "channel": "web",
        "type": "inquiry",
        "occurred_at": "2026-01-05T10:00:00.000+00:00",
        "source": "web",
    }


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
odd_strings = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "null",
        "NaN",
        "2026-13-45T99:99:99Z",
        "2026-01-05T10:00:00",  # no offset
        "2026-01-05",
        "9999-12-31T23:59:59.999+14:00",
        "0001-01-01T00:00:00-14:00",
        "1e400",
        "'; DROP TABLE actions; --",
        "<script>alert(1)</script>",
        "${jndi:ldap://x}",
        "../../etc/passwd",
        "ü" * 40,
        "\u202e\u0000\ufeff",
        "x" * 5000,
    ]
)
field_values = (
    json_scalars
    | odd_strings
    | st.sampled_from([*CHANNELS, *EVENT_TYPES, "CALL", "sms"])
    | st.lists(json_scalars, max_size=3)
    | st.dictionaries(st.text(max_size=6), json_scalars, max_size=3)
    | st.sampled_from([float("nan"), float("inf"), -float("inf"), 2**63, -(2**63) - 1, 10**30])
)


@st.composite
def event_objects(draw: st.DrawFn) -> dict[str, Any]:
    """An event-shaped object: a good event with fields removed, changed or added."""
    event = good_event(draw(st.integers(0, 10_000)))
    for name in draw(st.lists(st.sampled_from(EVENT_FIELDS), max_size=4, unique=True)):
        if draw(st.booleans()):
            event.pop(name, None)
        else:
            event[name] = draw(field_values)
    if draw(st.integers(0, 9)) == 0:
        event[draw(st.text(min_size=1, max_size=10))] = draw(json_scalars)
    return event


def dumps(document: Any) -> bytes:
    # allow_nan: JSON with NaN/Infinity literals is exactly the kind of input to throw at it.
    return json.dumps(document, allow_nan=True).encode()


def with_surrogates(body: bytes, draw: st.DrawFn) -> bytes:
    """Replace the first string's opening quote content with an unpaired surrogate escape."""
    escape = draw(st.sampled_from([b"\\ud800", b"\\udfff", b"\\udbff\\u0041", b"\\ud83d"]))
    index = body.find(b'"', 1)
    if index < 0:
        return b'"' + escape + b'"'
    return body[: index + 1] + escape + body[index + 1 :]


AUTHORISED = {"X-API-Key": KEYS[0]}


@st.composite
def hostile_requests(draw: st.DrawFn) -> HostileRequest:
    kind = draw(
        st.sampled_from(
            [
                "auth",
                "bytes",
                "json",
                "event",
                "batch",
                "wrapper",
                "surrogates",
                "nesting",
                "oversized",
                "big_batch",
                "encoding",
                "method",
                "content_type",
            ]
        )
    )
    headers = {"Content-Type": "application/json", **AUTHORISED}
    good = dumps(good_event(draw(st.integers(0, 100))))
    if kind == "auth":
        scheme = draw(st.sampled_from(["none", "bearer", "x-api-key", "basic", "both-wrong"]))
        wrong = draw(
            st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40)
            | st.sampled_from([KEYS[0][:-1], KEYS[0] + "x", KEYS[0].upper(), KEYS[1][1:], "null"])
        ).strip()
        assert wrong not in KEYS
        headers = {"Content-Type": "application/json"}
        if scheme == "bearer":
            # an empty key leaves "Bearer" alone: h11 refuses to send a trailing space
            headers["Authorization"] = f"Bearer {wrong}".strip()
        elif scheme == "x-api-key":
            headers["X-API-Key"] = wrong
        elif scheme == "basic":
            headers["Authorization"] = f"Basic {KEYS[0]}"  # a right key in the wrong scheme
        elif scheme == "both-wrong":
            headers["Authorization"] = f"Token {KEYS[0]}"
            headers["X-API-Key"] = wrong
        return HostileRequest(headers=headers, body=good, authorised=False)
    if kind == "bytes":
        body = draw(st.binary(max_size=300))
        return HostileRequest(headers=headers, body=body)
    if kind == "json":
        return HostileRequest(headers=headers, body=dumps(draw(json_values)))
    if kind == "event":
        return HostileRequest(headers=headers, body=dumps(draw(event_objects())), well_formed=True)
    if kind == "batch":
        items = draw(st.lists(event_objects() | json_values, min_size=1, max_size=8))
        return HostileRequest(headers=headers, body=dumps(items), well_formed=True)
    if kind == "wrapper":
        inner = draw(st.lists(event_objects(), max_size=3) | json_values)
        return HostileRequest(headers=headers, body=dumps({"events": inner}))
    if kind == "surrogates":
        document = draw(event_objects() | st.lists(event_objects(), min_size=1, max_size=3))
        return HostileRequest(headers=headers, body=with_surrogates(dumps(document), draw))
    if kind == "nesting":
        depth = draw(st.sampled_from([100, 1_000, 5_000, 50_000, 60_000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        body = opener * depth + b"1" + closer * depth
        return HostileRequest(headers=headers, body=body[:MAX_BODY])
    if kind == "oversized":
        size = draw(st.integers(MAX_BODY + 1, MAX_BODY * 3))
        text = "x" * size
        body = dumps({**good_event(1), "text": text})
        return HostileRequest(headers=headers, body=body)
    if kind == "big_batch":
        count = draw(st.integers(MAX_BATCH + 1, MAX_BATCH + 20))
        body = dumps([good_event(n) for n in range(count)])
        return HostileRequest(headers=headers, body=body)
    if kind == "encoding":
        encoding = draw(st.sampled_from(["gzip", "br", "deflate", "x-unknown", "gzip, identity"]))
        return HostileRequest(headers={**headers, "Content-Encoding": encoding}, body=good)
    if kind == "method":
        method, path = draw(
            st.sampled_from(
                [
                    ("GET", "/v1/events"),
                    ("PUT", "/v1/events"),
                    ("DELETE", "/v1/events"),
                    ("POST", "/v1/event"),
                    ("POST", "/v1/events/../admin"),
                    ("POST", "/healthz"),
                    ("GET", "/v2/events"),
                    ("POST", "/%00"),
                ]
            )
        )
        return HostileRequest(method=method, path=path, headers=headers, body=good)
    content_type = draw(
        st.sampled_from(["text/plain", "application/xml", "", "multipart/form-data; boundary=x"])
    )
    return HostileRequest(
        headers={**headers, "Content-Type": content_type}, body=good, well_formed=True
    )


def mutations(request: HostileRequest, seed: int) -> list[HostileRequest]:
    """The request as drawn, plus two cheap variants: a damaged body and a near-miss key."""
    rng = random.Random(seed)
    body = bytearray(request.body)
    if body and rng.random() < 0.5:
        del body[rng.randrange(len(body)) :]  # truncated mid-document
    else:
        for _ in range(rng.randint(1, 4)):
            if body:
                body[rng.randrange(len(body))] = rng.randrange(256)
    damaged = replace(request, body=bytes(body), well_formed=False)
    near_miss = rng.choice([KEYS[0][:-1], KEYS[0] + " x", KEYS[1].swapcase(), "", KEYS[0][::-1]])
    headers = {k: v for k, v in request.headers.items() if k.lower() != "x-api-key"}
    value = near_miss if rng.random() < 0.5 else f"Bearer {near_miss}"
    headers[rng.choice(["X-API-Key", "Authorization"])] = value.strip()  # h11 sends no edge spaces
    stranger = replace(request, headers=headers, authorised=False, well_formed=False)
    return [request, damaged, stranger]


hostile_triples = st.builds(mutations, hostile_requests(), st.integers(0, 2**32))


# --------------------------------------------------------------------------- the judge


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


def judge(request: HostileRequest, status: int, body: bytes, tally: Tally) -> None:
    """Record the answer; note a problem when it breaks the collector's promises."""
    tally.statuses[status] += 1
    where = f"{request.method} {request.path} {request.headers} {request.body[:120]!r}"
    if status >= 500:
        tally.problems.append(f"{status} for {where}: {body[:200]!r}")
        return
    if status in (202, 422):  # 422: every event rejected, with the same results
        if not request.authorised:
            tally.problems.append(f"{status} without a valid API key: {where}")
            return
        answer = json.loads(body)
        results = answer.get("results")
        if not isinstance(results, list) or not results:
            tally.problems.append(f"{status} without results: {where}")
            return
        for result in results:
            if result["status"] == "rejected" and not (
                isinstance(result.get("field"), str) and result.get("error")
            ):
                tally.problems.append(f"rejection that names no field: {result} for {where}")
            if result["status"] == "accepted" and not result.get("event_id"):
                tally.problems.append(f"accepted without an event_id: {result}")
        return
    if not 400 <= status < 500:
        tally.problems.append(f"{status} (neither 202 nor 4xx) for {where}")
        return
    if (
        not request.authorised
        and status != 401
        and (request.method, request.path)
        == (
            "POST",
            "/v1/events",
        )
    ):
        tally.problems.append(f"{status} instead of 401 without a valid key: {where}")
    if request.well_formed and request.authorised:
        tally.problems.append(f"{status} for a well-formed request: {where}: {body[:200]!r}")
    text = body.decode("utf-8", "replace")
    try:
        message = json.loads(text).get("error", "")
    except (ValueError, AttributeError):
        message = text  # Starlette's own 404/405 answers are plain text ("Not Found")
    if len(message.strip()) < 8:
        tally.problems.append(f"{status} whose body names no problem ({text!r}): {where}")


# --------------------------------------------------------------------------- in process


@pytest.fixture
def keyed_settings() -> Settings:
    return Settings(bootstrap="127.0.0.1:9", api_keys=[SecretStr(k) for k in KEYS])


def collector_app(settings: Settings, publisher: RecordingPublisher) -> Any:
    return create_app(
        settings,
        publisher,
        max_body_bytes=MAX_BODY,
        max_batch=MAX_BATCH,
        readiness=lambda: (True, "in process"),
    )


class InProcess:
    """The collector's ASGI app called in process (httpx ASGI transport) on a loop of our own."""

    def __init__(self, settings: Settings, publisher: RecordingPublisher) -> None:
        self.loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(
            app=collector_app(settings, publisher), raise_app_exceptions=False
        )
        self.client = httpx.AsyncClient(transport=transport, base_url="http://collector")

    def send(self, request: HostileRequest) -> tuple[int, bytes]:
        response = self.loop.run_until_complete(
            self.client.request(
                request.method, request.path, content=request.body, headers=request.headers
            )
        )
        return response.status_code, response.content

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


def send(client: httpx.Client, request: HostileRequest) -> tuple[int, bytes]:
    response = client.request(
        request.method, request.path, content=request.body, headers=request.headers
    )
    return response.status_code, response.content


# Each example is three requests (as drawn, damaged body, near-miss key).
IN_PROCESS_EXAMPLES = 3_400
OVER_HTTP_EXAMPLES = 400


@pytest.mark.parametrize(
    "scale", [pytest.param(1, id="short"), pytest.param(3, id="soak", marks=SOAK_MARKS)]
)
def test_thousands_of_hostile_requests_in_process(
    scale: int, keyed_settings: Settings, figures: Figures
) -> None:
    publisher = RecordingPublisher()
    tally = Tally()
    started = time.monotonic()
    app = InProcess(keyed_settings, publisher)
    unauthorised_published: list[int] = []
    try:

        @hsettings(
            max_examples=IN_PROCESS_EXAMPLES * scale,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(hostile_triples)
        def throw(requests: list[HostileRequest]) -> None:
            for request in requests:
                before = publisher.published
                status, body = app.send(request)
                judge(request, status, body, tally)
                if not request.authorised and publisher.published != before:
                    unauthorised_published.append(status)

        throw()
        # The app still answers normally after all that.
        ok_status, ok_body = app.send(
            HostileRequest(headers=AUTHORISED, body=dumps(good_event(1)), well_formed=True)
        )
    finally:
        app.close()
    figures.update(
        requests=tally.requests,
        **{f"HTTP {code}": n for code, n in sorted(tally.statuses.items())},
        **{"5xx": sum(n for c, n in tally.statuses.items() if c >= 500)},
        **{"problems": len(tally.problems), "published": publisher.published},
        **{"duration s": round(time.monotonic() - started, 1)},
    )
    assert ok_status == 202 and json.loads(ok_body)["accepted"] == 1
    assert tally.requests >= 10_000 * scale
    assert not tally.problems, "\n".join(tally.problems[:10])
    assert not unauthorised_published
    assert tally.statuses[401] > 0 and tally.statuses[202] > 0 and tally.statuses[400] > 0


# --------------------------------------------------------------------------- over real HTTP


RAW_REQUESTS = [
    b"GARBAGE\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nhello\r\n0\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    b"POST /v1/events HTTP/9.9\r\nHost: x\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",  # truncated
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-API-Key: "
    + KEYS[0].encode()
    + b"\r\nContent-Length: 999999999\r\n\r\n{}",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),  # a TLS hello
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-API-Key: \xff\xfe\r\nContent-Length: 2\r\n\r\n{}",
]


def raw_exchange(host: str, port: int, payload: bytes, timeout_s: float = 5.0) -> bytes:
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return b""  # the server closed early (e.g. headers too large): also an answer
        chunks: list[bytes] = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


@pytest.fixture
def real_collector(settings: Settings) -> Iterator[tuple[str, Publisher]]:
    keyed = settings.replace(api_keys=[SecretStr(k) for k in KEYS])
    with collector_publisher(keyed) as publisher:
        app = create_app(keyed, publisher, max_body_bytes=MAX_BODY, max_batch=MAX_BATCH)
        with collector_in_thread(app, port=free_port()) as url:
            yield url, publisher


@pytest.mark.parametrize(
    "scale", [pytest.param(1, id="short"), pytest.param(3, id="soak", marks=SOAK_MARKS)]
)
def test_hostile_requests_over_real_http(
    scale: int, real_collector: tuple[str, Publisher], figures: Figures
) -> None:
    url, _ = real_collector
    tally = Tally()
    raw_answers: Counter[str] = Counter()
    started = time.monotonic()
    host, port = url.removeprefix("http://").split(":")
    with httpx.Client(base_url=url, timeout=30) as client:

        @hsettings(
            max_examples=OVER_HTTP_EXAMPLES * scale,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(hostile_triples)
        def throw(requests: list[HostileRequest]) -> None:
            for request in requests:
                status, body = send(client, request)
                judge(request, status, body, tally)

        throw()
        for payload in RAW_REQUESTS:
            answer = raw_exchange(host, int(port), payload)
            status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
            raw_answers[status_line.split(" ", 2)[1] if status_line.count(" ") else "closed"] += 1
            assert not status_line.startswith("HTTP/1.1 5"), (payload[:80], answer[:300])
        health = client.get("/healthz")
        accepted = client.post("/v1/events", json=good_event(7), headers=AUTHORISED)
    figures.update(
        requests=tally.requests + len(RAW_REQUESTS),
        **{f"HTTP {code}": n for code, n in sorted(tally.statuses.items())},
        **{f"raw {answer}": n for answer, n in sorted(raw_answers.items())},
        **{"5xx": sum(n for c, n in tally.statuses.items() if c >= 500)},
        **{"problems": len(tally.problems)},
        **{"duration s": round(time.monotonic() - started, 1)},
    )
    assert not tally.problems, "\n".join(tally.problems[:10])
    assert health.status_code == 200, "the collector stopped answering"
    assert accepted.status_code == 202 and accepted.json()["accepted"] == 1


def test_malformed_http_on_a_socket_never_raises_in_the_collector(
    real_collector: tuple[str, Publisher], caplog: pytest.LogCaptureFixture
) -> None:
    """Every raw payload, twice, logs no server error: with h11, a bad chunk that arrived
    with its headers made uvicorn answer 400 and close while the app answered too
    (\"Exception in ASGI application\": LocalProtocolError, state MUST_CLOSE)."""
    url, _ = real_collector
    host, port = url.removeprefix("http://").split(":")
    with caplog.at_level(logging.WARNING):
        for payload in RAW_REQUESTS * 2:
            raw_exchange(host, int(port), payload)
        time.sleep(0.3)  # the app's tasks of the last requests finish
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert any("Invalid HTTP request" in r.getMessage() for r in caplog.records)


def test_a_client_gone_before_its_body_arrived_takes_nothing_and_raises_nothing(
    keyed_settings: Settings,
) -> None:
    publisher = RecordingPublisher()
    app = collector_app(keyed_settings, publisher)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/events",
        "headers": [(b"authorization", f"Bearer {KEYS[0]}".encode()), (b"content-length", b"400")],
        "query_string": b"",
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
    }
    messages = [{"type": "http.request", "body": b'{"customer_id": "C', "more_body": True}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # an exception here is what uvicorn logged as a crash
    assert sent[0]["status"] == 499  # recorded as "client closed", never a 5xx
    assert publisher.published == 0


# --------------------------------------------------------------------------- constant time


def test_api_keys_are_compared_in_constant_time_against_every_key(
    keyed_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    app = InProcess(keyed_settings, RecordingPublisher())
    try:
        body = dumps(good_event(1))
        wrong = app.send(HostileRequest(headers={"X-API-Key": "guess"}, body=body))
        calls_for_wrong, calls[:] = list(calls), []
        right = app.send(HostileRequest(headers={"Authorization": f"Bearer {KEYS[0]}"}, body=body))
    finally:
        app.close()
    assert wrong[0] == 401 and "invalid API key" in json.loads(wrong[1])["error"]
    assert right[0] == 202
    # Every configured key is compared, with compare_digest, whether or not one matched early.
    assert calls_for_wrong == [(b"guess", k.encode()) for k in KEYS]
    assert calls == [(KEYS[0].encode(), k.encode()) for k in KEYS]
