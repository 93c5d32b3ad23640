"""Webhook sink without a broker: CloudEvent shape, signing, retries, backoff, settings."""

from __future__ import annotations

import json
import logging
import random
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from pydantic import SecretStr

from moments.metrics import WEBHOOK_DELIVERIES
from moments.settings import Settings
from schemas.codec import to_json_dict
from schemas.records import ActionEvent
from sinks.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    sign,
    signature_headers,
    verify_signature,
)
from sinks.webhook import (
    DeliveryCancelled,
    RetryPolicy,
    WebhookConfigError,
    WebhookDelivery,
    WebhookSink,
    cloud_event,
    cloud_event_body,
    redact_url,
    retry_after_s,
)

SECRET = "s3cret-for-tests"
URL = "http://hooks.test/care/T0KEN?key=abc"


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
    headers = signature_headers(SECRET, body, timestamp=1_000_000)
    assert headers[SIGNATURE_HEADER].startswith("sha256=")
    assert verify_signature(SECRET, body, headers, now=1_000_010) == 1_000_000
    lower = {k.lower(): v for k, v in headers.items()}
    assert verify_signature(SECRET, body, lower, now=1_000_010) == 1_000_000

    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, body + b" ", headers, now=1_000_010)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature("other-secret", body, headers, now=1_000_010)
    with pytest.raises(SignatureError, match="stale or replayed"):
        verify_signature(SECRET, body, headers, now=1_000_000 + 301)
    replayed = {**headers, TIMESTAMP_HEADER: "1000500"}  # fresh timestamp, old signature
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, body, replayed, now=1_000_500)
    with pytest.raises(SignatureError, match="missing X-Moments-Signature"):
        verify_signature(SECRET, body, {TIMESTAMP_HEADER: "1"}, now=1)
    with pytest.raises(SignatureError, match="sha256=<hex>"):
        verify_signature(SECRET, body, {**headers, SIGNATURE_HEADER: "md5=00"}, now=1_000_000)


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), b"123." + b"{}", hashlib.sha256).hexdigest()
    assert sign(SECRET, b"{}", 123) == f"sha256={expected}"


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
    verify_signature(SECRET, request.content, dict(request.headers))
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


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"webhook_secret": None}, "MOMENTS_WEBHOOK_SECRET is not set"),
        ({"webhook_urls": {}}, "MOMENTS_WEBHOOK_URLS is empty"),
        ({"webhook_urls": {"sales": "http://x.test/"}}, "unknown destination 'sales'"),
        ({"webhook_urls": {"care": "ftp://x.test/T0KEN"}}, r"MOMENTS_WEBHOOK_URLS\[care\]"),
    ],
)
def test_unusable_settings_are_one_clear_error(overrides: dict[str, object], problem: str) -> None:
    values: dict[str, object] = {
        "bootstrap": "127.0.0.1:1",
        "webhook_secret": SecretStr(SECRET),
        "webhook_urls": {"care": URL},
    }
    values.update(overrides)
    with pytest.raises(WebhookConfigError, match=problem) as info:
        WebhookSink(Settings(**values))  # type: ignore[arg-type]
    assert "T0KEN" not in str(info.value) and SECRET not in str(info.value)


def test_sink_subscribes_to_the_routed_destinations_only() -> None:
    settings = Settings(
        bootstrap="127.0.0.1:1",
        topic_prefix="p.",
        webhook_secret=SecretStr(SECRET),
        webhook_urls={"care": URL, "billing": "https://billing.test/hook"},
    )
    sink = WebhookSink(settings)
    assert sink.topics == ["p.actions.care", "p.actions.billing"]
    assert sink.group == "moments-sink-webhook"
    assert sink.dlq_topic == "p.actions.dlq"
