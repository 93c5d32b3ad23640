"""Webhook sink without a broker: CloudEvent shape, signing, retries, backoff, settings, TLS."""

from __future__ import annotations

import json
import logging
import random
import shlex
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from common.metrics import WEBHOOK_DELIVERIES
from common.settings import Settings
from schemas.codec import to_json_dict
from schemas.records import ActionEvent, ActionStatus
from sinks.consume import Offsets, Progress
from sinks.signing import (
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    sign,
    signature_headers,
    verify_signature,
)
from sinks.webhook import (
    MAX_LANE_BACKLOG,
    DeliveryCancelled,
    Forgotten,
    RetryPolicy,
    WebhookConfigError,
    WebhookDelivery,
    WebhookSink,
    _Lane,
    cloud_event,
    cloud_event_body,
    redact_url,
    retry_after_s,
    status_body,
    status_cloud_event,
)
from tests.support.sinks import FakeLetters, FakeMessage

SECRET = "s3cret-for-tests"
URL = "http://hooks.test/care/T0KEN?key=abc"
HTTPS_URL = "https://hooks.test/care/T0KEN?key=abc"


def an_action(**overrides: object) -> ActionEvent:
    values: dict[str, object] = {
        "action_id": "act-1",
        "customer_id": "c-42",
        "rule": "life_event_check_in",
        "action": "life_event_check_in",
        "rule_version": 1,
        "destination": "care",
        "priority": 80,
        "reason": "Asked to cancel; check whether a life event is behind it.",
        "evidence": ["e-1"],
        "channel_hint": "call",
        "triggered_at": 1_767_225_600_000,  # 2026-01-01T00:00:00Z
        "due_by": None,
        "details": {"product": "gas"},
    }
    values.update(overrides)
    return ActionEvent(**values)  # type: ignore[arg-type]


class RecordingWait(threading.Event):
    """A cancellation event that records the backoff waits instead of sleeping."""

    def __init__(self, cancel_after: int | None = None) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.cancel_after = cancel_after

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        return self.cancel_after is not None and len(self.waits) >= self.cancel_after


def delivery_with(
    answers: list[httpx.Response | Exception], policy: RetryPolicy | None = None
) -> tuple[WebhookDelivery, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    remaining = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = remaining.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = httpx.Client(transport=httpx.MockTransport(handler))
    delivery = WebhookDelivery(
        {"care": URL},
        SECRET,
        policy=policy or RetryPolicy(max_attempts=4, base_delay_s=0.1, max_delay_s=1.0),
        client=client,
        rng=random.Random(7),
    )
    return delivery, seen


def count(destination: str, outcome: str) -> float:
    return WEBHOOK_DELIVERIES.labels(destination, outcome)._value.get()


# --------------------------------------------------------------------------- CloudEvent


def test_cloud_event_is_structured_cloudevents_1_0_with_the_action_as_data() -> None:
    action = an_action()
    event = cloud_event(action)
    assert event == {
        "specversion": "1.0",
        "id": "act-1",
        "source": "moments/life_event_check_in",
        "type": "moments.action.life_event_check_in",
        "subject": "c-42",
        "time": "2026-01-01T00:00:00.000+00:00",
        "datacontenttype": "application/json",
        "partitionkey": "c-42",
        "data": to_json_dict(action),
    }
    assert json.loads(cloud_event_body(action)) == event


def test_cloud_event_body_is_deterministic() -> None:
    assert cloud_event_body(an_action()) == cloud_event_body(an_action())


# --------------------------------------------------------------------------- signing


def test_signature_round_trip_and_what_it_rejects() -> None:
    body = cloud_event_body(an_action())
    headers = signature_headers(SECRET, body, URL, "k1", timestamp=1_000_000)
    assert headers[SIGNATURE_HEADER].startswith("sha256=")
    assert headers[KEY_ID_HEADER] == "k1"
    assert verify_signature(SECRET, body, headers, url=URL, now=1_000_010) == 1_000_000
    lower = {k.lower(): v for k, v in headers.items()}
    assert verify_signature(SECRET, body, lower, url=URL, now=1_000_010) == 1_000_000

    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, body + b" ", headers, url=URL, now=1_000_010)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature("other-secret", body, headers, url=URL, now=1_000_010)
    with pytest.raises(SignatureError, match="stale or replayed"):
        verify_signature(SECRET, body, headers, url=URL, now=1_000_000 + 301)
    replayed = {**headers, TIMESTAMP_HEADER: "1000500"}  # fresh timestamp, old signature
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, body, replayed, url=URL, now=1_000_500)
    with pytest.raises(SignatureError, match="missing X-Moments-Signature"):
        verify_signature(SECRET, body, {TIMESTAMP_HEADER: "1"}, url=URL, now=1)
    with pytest.raises(SignatureError, match="sha256=<hex>"):
        verify_signature(
            SECRET, body, {**headers, SIGNATURE_HEADER: "md5=00"}, url=URL, now=1_000_000
        )


def test_a_request_signed_for_one_destination_does_not_verify_at_another() -> None:
    body = cloud_event_body(an_action())
    headers = signature_headers(SECRET, body, URL, "k1", timestamp=1_000_000)
    other = "https://billing.test/hook"  # same secret, another receiver
    with pytest.raises(SignatureError, match="destination URL"):
        verify_signature(SECRET, body, headers, url=other, now=1_000_000)


def test_rotation_any_listed_key_verifies_and_the_key_id_picks_it() -> None:
    body = b'{"id": "a"}'
    keys = {"2026-07": "new-secret", "2026-01": "old-secret"}
    for key_id, secret in keys.items():
        headers = signature_headers(secret, body, URL, key_id, timestamp=50)
        assert verify_signature(keys, body, headers, url=URL, now=50) == 50
        # Without the key id header, any listed secret may match.
        bare = {k: v for k, v in headers.items() if k != KEY_ID_HEADER}
        assert verify_signature(keys, body, bare, url=URL, now=50) == 50
    # A retired key no longer verifies; a key id naming another key does not match.
    retired = signature_headers("retired-secret", body, URL, "2025-07", timestamp=50)
    with pytest.raises(SignatureError, match="does not hold"):
        verify_signature(keys, body, retired, url=URL, now=50)
    mislabelled = signature_headers("old-secret", body, URL, "2026-07", timestamp=50)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(keys, body, mislabelled, url=URL, now=50)


def test_signature_is_hmac_sha256_of_timestamp_url_and_body() -> None:
    import hashlib
    import hmac

    signed = b"123\n" + URL.encode() + b"\n" + b"{}"
    expected = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert sign(SECRET, b"{}", 123, URL) == f"sha256={expected}"


# --------------------------------------------------------------------------- delivery


def test_delivered_on_first_2xx_with_signed_cloudevent_request() -> None:
    delivery, seen = delivery_with([httpx.Response(202)])
    before = count("care", "delivered")
    assert delivery.deliver(an_action(), RecordingWait()) is None
    assert count("care", "delivered") == before + 1
    (request,) = seen
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/cloudevents+json; charset=utf-8"
    assert request.headers["x-moments-delivery-attempt"] == "1"
    assert request.headers["x-moments-key-id"] == "default"
    verify_signature(SECRET, request.content, dict(request.headers), url=URL)
    assert json.loads(request.content)["id"] == "act-1"


def test_retries_5xx_and_timeouts_then_delivers() -> None:
    delivery, seen = delivery_with(
        [
            httpx.Response(500),
            httpx.ConnectTimeout("slow"),
            httpx.Response(503),
            httpx.Response(200),
        ]
    )
    wait = RecordingWait()
    before_retried = count("care", "retried")
    assert delivery.deliver(an_action(), wait) is None
    assert [r.headers["x-moments-delivery-attempt"] for r in seen] == ["1", "2", "3", "4"]
    assert len(wait.waits) == 3
    assert count("care", "retried") == before_retried + 3
    # Each attempt is signed afresh (new timestamp), over the same body.
    assert len({r.content for r in seen}) == 1


def test_400_is_permanent_and_not_retried() -> None:
    delivery, seen = delivery_with([httpx.Response(400, text="unknown customer")])
    before = count("care", "failed")
    failure = delivery.deliver(an_action(), RecordingWait())
    assert failure is not None
    assert failure.http_status == 400 and failure.attempts == 1
    assert failure.error_class == "HTTPStatusError"
    assert "400" in failure.message and "unknown customer" in failure.message
    assert "T0KEN" not in failure.message and "key=abc" not in failure.message
    assert len(seen) == 1
    assert count("care", "failed") == before + 1


def test_no_secret_or_url_token_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    delivery, _ = delivery_with([httpx.Response(500), httpx.Response(400)])
    assert delivery.deliver(an_action(), RecordingWait()) is not None
    assert caplog.records  # it did log the retry and the failure
    assert "T0KEN" not in caplog.text and SECRET not in caplog.text


def test_retries_are_bounded() -> None:
    delivery, seen = delivery_with([httpx.Response(502)] * 4)
    failure = delivery.deliver(an_action(), RecordingWait())
    assert failure is not None
    assert failure.attempts == 4 and len(seen) == 4
    assert failure.message.startswith("gave up after 4 attempts")


def test_429_honours_retry_after() -> None:
    delivery, _ = delivery_with(
        [httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200)]
    )
    wait = RecordingWait()
    assert delivery.deliver(an_action(), wait) is None
    assert wait.waits == [7.0]


def test_retry_after_is_capped() -> None:
    policy = RetryPolicy(max_attempts=2, base_delay_s=0.1, max_retry_after_s=60.0)
    delivery, _ = delivery_with(
        [httpx.Response(503, headers={"Retry-After": "86400"}), httpx.Response(200)], policy
    )
    wait = RecordingWait()
    assert delivery.deliver(an_action(), wait) is None
    assert wait.waits == [60.0]


def test_cancellation_during_backoff_raises() -> None:
    delivery, seen = delivery_with([httpx.Response(500), httpx.Response(200)])
    with pytest.raises(DeliveryCancelled):
        delivery.deliver(an_action(), RecordingWait(cancel_after=1))
    assert len(seen) == 1


def test_unrouted_destination_is_a_permanent_failure() -> None:
    delivery, seen = delivery_with([])
    failure = delivery.deliver(an_action(destination="crm"), RecordingWait())
    assert failure is not None and failure.error_class == "NoRoute" and not seen


def test_backoff_is_full_jitter_and_exponential() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=8.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (9, 8.0)]:
        samples = [policy.backoff_s(attempt, rng) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # spread over the whole range
        assert min(samples) < ceiling * 0.2


def test_retry_after_parsing() -> None:
    assert retry_after_s("12") == 12.0
    assert retry_after_s(None) is None
    assert retry_after_s("soon") is None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    http_date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_s(http_date, now=now.timestamp()) == pytest.approx(30.0)


def test_redact_url_keeps_only_scheme_host_and_port() -> None:
    assert (
        redact_url("https://hooks.test:8443/services/T0KEN?key=abc") == "https://hooks.test:8443/…"
    )


# --------------------------------------------------------------------------- settings


def webhook_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "bootstrap": "127.0.0.1:1",
        "webhook_secret": SecretStr(SECRET),
        "webhook_urls": {"care": HTTPS_URL},
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"webhook_secret": None}, "MOMENTS_WEBHOOK_SECRET is not set"),
        ({"webhook_urls": {}}, "MOMENTS_WEBHOOK_URLS is empty"),
        ({"webhook_urls": {"sales": "http://x.test/"}}, "unknown destination 'sales'"),
        ({"webhook_urls": {"care": "ftp://x.test/T0KEN"}}, r"MOMENTS_WEBHOOK_URLS\[care\]"),
        (
            {"webhook_urls": {"care": URL}},
            r"MOMENTS_WEBHOOK_URLS\[care\]: http://hooks.test/… is plain http; use https",
        ),
        ({"webhook_secrets": {"sales": [("k1", SECRET)]}}, "unknown destination 'sales'"),
        ({"webhook_secrets": {"care": []}}, r"MOMENTS_WEBHOOK_SECRETS\[care\] is empty"),
        ({"webhook_secrets": {"care": [("bad id", SECRET)]}}, r"\[care\]\[0\]: the key id"),
        ({"webhook_secrets": {"care": [("k1", "")]}}, r"\[care\]\[0\] \(key id k1\)"),
        (
            {"webhook_secret": None, "webhook_secrets": {"billing": [("k1", SECRET)]}},
            "MOMENTS_WEBHOOK_SECRETS has no key for care",
        ),
        ({"webhook_ca_bundle": "/nonexistent/ca.pem"}, "MOMENTS_WEBHOOK_CA_BUNDLE: .*no such"),
    ],
)
def test_unusable_settings_are_one_clear_error(overrides: dict[str, object], problem: str) -> None:
    with pytest.raises(WebhookConfigError, match=problem) as info:
        WebhookSink(webhook_settings(**overrides))
    assert "T0KEN" not in str(info.value) and SECRET not in str(info.value)


def test_a_ca_bundle_that_is_not_pem_is_one_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(
        WebhookConfigError, match=r"MOMENTS_WEBHOOK_CA_BUNDLE: .*not a readable PEM"
    ):
        WebhookSink(webhook_settings(webhook_ca_bundle=junk))


def test_plain_http_only_when_allowed() -> None:
    sink = WebhookSink(webhook_settings(webhook_urls={"care": URL}, webhook_allow_http=True))
    assert sink.delivery.urls == {"care": URL}


def test_each_destination_signs_with_its_first_key_others_with_the_default() -> None:
    settings = webhook_settings(
        webhook_urls={"care": HTTPS_URL, "billing": "https://billing.test/hook"},
        webhook_secrets={"care": [("2026-07", "care-new"), ("2026-01", "care-old")]},
    )
    sink = WebhookSink(settings)
    assert sink.delivery.key_id("care") == "2026-07"
    assert sink.delivery.key_id("billing") == "default"
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    sink.delivery.client = httpx.Client(transport=httpx.MockTransport(handler))
    for destination in ("care", "billing"):
        assert sink.delivery.deliver(an_action(destination=destination), RecordingWait()) is None
    care, billing = seen
    rotating = {"2026-07": "care-new", "2026-01": "care-old"}
    verify_signature(rotating, care.content, dict(care.headers), url=HTTPS_URL)
    verify_signature(SECRET, billing.content, dict(billing.headers), url=str(billing.url))
    with pytest.raises(SignatureError):
        verify_signature("care-old", care.content, dict(care.headers), url=HTTPS_URL)


def test_webhook_secrets_read_from_the_environment_and_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOMENTS_WEBHOOK_SECRETS", '{"care": [["k2", "s-two"], ["k1", "s-one"]]}')
    settings = Settings()
    ((key_id, secret), _) = settings.sinks.webhook_secrets["care"]
    assert key_id == "k2" and secret.get_secret_value() == "s-two"
    assert "s-two" not in repr(settings) and "s-one" not in str(settings)
    assert json.loads(settings.as_env()["MOMENTS_WEBHOOK_SECRETS"]) == {
        "care": [["k2", "s-two"], ["k1", "s-one"]]
    }


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def internal_ca(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A private CA and a certificate it issued for 127.0.0.1 (made with the openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed (needed to make a test CA)")
    d = tmp_path_factory.mktemp("ca")

    def openssl(command: str) -> None:
        args = ["openssl", *shlex.split(command)]
        subprocess.run(args, cwd=d, check=True, capture_output=True, timeout=60)

    openssl("req -x509 -newkey rsa:2048 -nodes -days 2 -keyout ca.key -out ca.pem -subj '/CN=CA'")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=127.0.0.1")
    openssl(
        "x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
        " -extfile ext.cnf -out srv.pem"
    )
    return {"ca": d / "ca.pem", "cert": d / "srv.pem", "key": d / "srv.key"}


@pytest.fixture
def https_receiver(internal_ca: dict[str, Path]) -> Iterator[tuple[str, list[bytes]]]:
    """An HTTPS receiver on loopback whose certificate only the internal CA vouches for."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(internal_ca["cert"], internal_ca["key"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/hooks/care", bodies
    server.shutdown()
    server.server_close()


def test_the_ca_bundle_makes_an_internal_receiver_trusted(
    internal_ca: dict[str, Path], https_receiver: tuple[str, list[bytes]]
) -> None:
    url, bodies = https_receiver
    once = RetryPolicy(max_attempts=1, timeout_s=10.0)
    trusting = WebhookSink(
        webhook_settings(webhook_urls={"care": url}, webhook_ca_bundle=internal_ca["ca"]),
        policy=once,
    )
    assert trusting.delivery.deliver(an_action(), RecordingWait()) is None
    assert len(bodies) == 1
    trusting.delivery.close()

    default = WebhookSink(webhook_settings(webhook_urls={"care": url}), policy=once)
    failure = default.delivery.deliver(an_action(), RecordingWait())
    default.delivery.close()
    assert failure is not None and failure.error_class == "ConnectError"
    assert len(bodies) == 1  # the untrusted certificate stopped the request


def test_sink_subscribes_to_the_routed_destinations_only() -> None:
    settings = Settings(
        bootstrap="127.0.0.1:1",
        topic_prefix="p.",
        webhook_secret=SecretStr(SECRET),
        webhook_urls={"care": HTTPS_URL, "billing": "https://billing.test/hook"},
    )
    sink = WebhookSink(settings)
    assert sink.topics == ["p.actions.care", "p.actions.billing"]
    assert sink.group == "moments-sink-webhook"
    assert sink.dlq_topic == "p.actions.dlq"


def test_the_cli_names_the_plain_http_destination_without_its_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from moments.cli import app

    monkeypatch.setenv("MOMENTS_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("MOMENTS_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("MOMENTS_WEBHOOK_URLS", json.dumps({"care": URL}))
    monkeypatch.delenv("MOMENTS_WEBHOOK_ALLOW_HTTP", raising=False)
    result = CliRunner().invoke(app, ["sink", "webhook"])
    assert result.exit_code == 2
    assert "MOMENTS_WEBHOOK_URLS[care]: http://hooks.test/… is plain http" in result.output
    assert "T0KEN" not in result.output and SECRET not in result.output


# --------------------------------------------------------------------------- in the consume loop


def test_a_delivered_action_is_done_and_a_refused_one_once_its_dead_letter_is_acknowledged() -> (
    None
):
    sink = WebhookSink(webhook_settings(), policy=RetryPolicy(max_attempts=1))
    answers = {"act-1": 204, "act-2": 400}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(answers[json.loads(request.content)["id"]])

    sink.delivery.client = httpx.Client(transport=httpx.MockTransport(answer))
    progress, letters, offsets = Progress(), FakeLetters(), Offsets()
    assert sink.start(progress, letters)  # type: ignore[arg-type]
    tp = ("actions.care", 0)
    for n in (1, 2):
        offsets.take(tp, n)
        message = FakeMessage(tp[0], n, b"bytes-%d" % n)
        sink.handle(an_action(action_id=f"act-{n}"), message, threading.Event())  # type: ignore[arg-type]
    progress.drain(offsets)
    assert offsets.committable() == {tp: 2}  # the refused one waits for its dead letter
    (letter,) = letters.sent
    assert (letter["dlq"], letter["value"], letter["source"]) == (
        "actions.dlq",
        b"bytes-2",
        (*tp, 2),
    )
    assert letter["error"][:2] == ("webhook", "HTTPStatusError")
    assert letter["extra"] == {"attempts": "1", "destination": "care", "http_status": "400"}
    letter["ack"]()
    progress.drain(offsets)
    assert offsets.committable() == {tp: 3}
    sink.delivery.close()


def test_a_partition_is_held_while_its_lane_is_full_until_half_of_it_is_done() -> None:
    sink = WebhookSink(webhook_settings())
    tp = ("actions.care", 0)
    lane = sink._lanes[tp] = _Lane(*tp, sink.handle, print)  # not started: the test drains it
    for n in range(MAX_LANE_BACKLOG - 1):
        lane.put(an_action(), FakeMessage(tp[0], n, b""))  # type: ignore[arg-type]
    assert sink.held([tp], set()) == set()
    lane.put(an_action(), FakeMessage(tp[0], MAX_LANE_BACKLOG, b""))  # type: ignore[arg-type]
    assert sink.held([tp], set()) == {tp}
    for _ in range(MAX_LANE_BACKLOG // 2):
        lane.records.get()
    assert sink.held([tp], {tp}) == {tp}  # paused: held until under half
    lane.records.get()
    assert sink.held([tp], {tp}) == set()


# --------------------------------------------------------------------------- action statuses


def a_status(**overrides: object) -> ActionStatus:
    values: dict[str, object] = {
        "action_id": "act-1",
        "customer_id": "c-42",
        "rule": "case_follow_up",
        "destination": "care",
        "status": "acknowledged",
        "owner": "ana",
        "resolution": None,
        "at": 1_767_229_200_000,  # 2026-01-01T01:00:00Z
        "event_id": "ev-7",
    }
    values.update(overrides)
    return ActionStatus(**values)  # type: ignore[arg-type]


def test_a_status_change_is_a_cloudevent_whose_id_repeats_only_for_the_same_change() -> None:
    event = status_cloud_event(a_status())
    assert event["type"] == "moments.action.status"
    assert (event["subject"], event["source"]) == ("c-42", "moments/case_follow_up")
    assert event["time"] == "2026-01-01T01:00:00.000+00:00"
    assert event["data"] == to_json_dict(a_status())
    assert event["data"]["owner"] == "ana"
    ids = {
        status_cloud_event(s)["id"]
        for s in (
            a_status(),
            a_status(status="reassigned", event_id="ev-8"),
            a_status(status="overdue", event_id=None),
            a_status(at=1_767_229_200_001),
        )
    }
    assert len(ids) == 4
    assert status_body(a_status()) == status_body(a_status())


def test_statuses_are_read_and_sent_to_their_destination_only() -> None:
    sink = WebhookSink(webhook_settings(topic_prefix="p."), policy=RetryPolicy(max_attempts=1))
    assert "p.action-status" in sink.routes()
    posted: list[dict[str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(204)

    sink.delivery.client = httpx.Client(transport=httpx.MockTransport(answer))
    progress, offsets = Progress(), Offsets()
    assert sink.start(progress, FakeLetters())  # type: ignore[arg-type]
    tp = ("p.action-status", 0)
    changes = [a_status(), a_status(destination="crm"), a_status(status="done", event_id="ev-9")]
    for n, change in enumerate(changes):
        offsets.take(tp, n)
        sink.handle(change, FakeMessage(tp[0], n, b"x"), threading.Event())  # type: ignore[arg-type]
    progress.drain(offsets)
    assert offsets.committable() == {tp: 3}  # crm has no URL here: done without a request
    assert [(p["type"], p["data"]["status"]) for p in posted] == [  # type: ignore[index]
        ("moments.action.status", "acknowledged"),
        ("moments.action.status", "done"),
    ]
    sink.delivery.close()


def test_the_status_topic_marker_is_forwarded_to_every_routed_destination() -> None:
    urls = {"care": HTTPS_URL, "crm": "https://crm.test/hook"}
    sink = WebhookSink(webhook_settings(webhook_urls=urls), policy=RetryPolicy(max_attempts=1))
    posted: list[tuple[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        posted.append((request.url.host, json.loads(request.content)["id"]))
        return httpx.Response(204)

    sink.delivery.client = httpx.Client(transport=httpx.MockTransport(answer))
    marker = Forgotten("c-42", 1_767_229_200_000, "", statuses=True)
    assert sink._deliver_forgotten(marker, threading.Event()) is None
    assert [host for host, _ in posted] == ["hooks.test", "crm.test"]
    ids = {event_id for _, event_id in posted}
    assert len(ids) == 1 and ids.pop().endswith("-statuses")  # not the action topics' id
    sink.delivery.close()
