"""The agent desk without a database or a broker: sign-in, CSRF, buttons, escaping, outages."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.testclient import TestClient

from common.privacy import keyed_customer_hash, set_id_hash_key
from common.settings import Settings
from moments.desk import PublisherStatusSender, desk_status_event
from moments.stack import free_port
from sinks.api import ApiConfigError, build_app, check_binding
from sinks.desk import Desk, DeskAuth, DeskKeyError, StatusNotSent, build_desk, parse_desk_keys
from sinks.desk.auth import SESSION_COOKIE
from sinks.desk.chart import balance_svg
from sinks.desk.queries import due_text
from tests.support.desk import (
    HOSTILE,
    NOW,
    FakeDeskSource,
    RecordingSender,
    action_row,
    csrf_of,
    sign_in,
)
from tests.support.sinks import ROWS, FakeTimelines

KEY = "desk-key-alice-7c1"


class Clock:
    """A settable clock (epoch seconds)."""

    def __init__(self) -> None:
        self.now = NOW.timestamp()

    def __call__(self) -> float:
        return self.now


def desk_client(
    source: FakeDeskSource | None = None,
    sender: RecordingSender | None = None,
    clock: Clock | None = None,
    **options: Any,
) -> tuple[TestClient, FakeDeskSource, RecordingSender, Clock]:
    source = source or FakeDeskSource([action_row(1), action_row(2)])
    sender = sender or RecordingSender()
    clock = clock or Clock()
    auth = options.pop("auth", None) or DeskAuth({"alice": KEY.encode(), "bob": b"bob-key-2"})
    desk = Desk(source, sender, auth, clock=clock, **options)
    app = Starlette(routes=[desk.mount()])
    return TestClient(app, follow_redirects=True), source, sender, clock


@pytest.fixture(autouse=True)
def _hash_key() -> None:
    set_id_hash_key("desk-tests")


def test_sign_in_gives_a_strict_http_only_session_and_sign_out_ends_it() -> None:
    client, *_ = desk_client()
    first = client.get("/desk/queue/care", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/desk/signin")
    wrong = sign_in(client, "not-a-key")
    assert wrong.status_code == 401 and "not a desk key" in wrong.text
    signed = client.post(
        "/desk/signin",
        data={"csrf": csrf_of(client.get("/desk/signin").text), "key": KEY, "next": "/desk/"},
        follow_redirects=False,
    )
    (cookie,) = [
        c for c in signed.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "=")
    ]
    assert signed.status_code == 303
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/desk" in cookie
    assert "Max-Age" not in cookie  # ends with the browser; the signed expiry ends it sooner
    assert KEY not in cookie
    page = client.get("/desk/queue/care")
    assert page.status_code == 200 and "Signed in as <strong>alice</strong>" in page.text
    out = client.post("/desk/signout", data={"csrf": csrf_of(page.text)})
    assert "You are signed out" in out.text
    assert client.get("/desk/queue/care").url.path == "/desk/signin"


def test_the_session_cookie_is_secure_behind_https() -> None:
    client, *_ = desk_client()
    form = client.get("/desk/signin")
    signed = client.post(
        "/desk/signin",
        data={"csrf": csrf_of(form.text), "key": KEY, "next": "/desk/"},
        headers={"X-Forwarded-Proto": "https"},
        follow_redirects=False,
    )
    (cookie,) = [
        c for c in signed.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "=")
    ]
    assert "Secure" in cookie


def test_the_sign_in_form_refuses_a_missing_or_forged_token() -> None:
    client, *_ = desk_client()
    client.get("/desk/signin")
    missing = client.post("/desk/signin", data={"key": KEY})
    forged = client.post("/desk/signin", data={"key": KEY, "csrf": "x" * 43})
    assert missing.status_code == forged.status_code == 403
    assert SESSION_COOKIE not in client.cookies


def test_a_session_signed_for_another_desk_or_tampered_is_no_session() -> None:
    client, *_ = desk_client()
    other = DeskAuth({"alice": b"another-key"}).issue("alice", NOW.timestamp())
    client.cookies.set(SESSION_COOKIE, other, path="/desk")
    assert client.get("/desk/queue/care").url.path == "/desk/signin"


def test_an_expired_session_goes_back_to_sign_in_and_says_so() -> None:
    client, _, sender, clock = desk_client()
    queue = sign_in(client, KEY, next_path="/desk/queue/care")
    clock.now += 9 * 3600
    page = client.get("/desk/queue/care")
    assert page.url.path == "/desk/signin" and "session has expired" in page.text
    again = sign_in(client, KEY, next_path="/desk/queue/care")
    assert again.url.path == "/desk/queue/care"
    clock.now += 9 * 3600  # a button pressed on a page left open: sign in, nothing sent
    pressed = client.post("/desk/actions/a1/take", data={"csrf": csrf_of(queue.text)})
    assert "session has expired" in pressed.text and sender.sent == []
    assert "next=%2Fdesk%2F&" in str(pressed.url) or str(pressed.url).endswith("next=%2Fdesk%2F")


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_a_button_without_its_csrf_token_is_refused_and_sends_nothing(token: str | None) -> None:
    client, _, sender, _ = desk_client()
    sign_in(client, KEY)
    data = {"back": "/desk/queue/care"} | ({"csrf": token} if token else {})
    answer = client.post("/desk/actions/a1/take", data=data)
    assert answer.status_code == 403 and "stale or forged" in answer.text
    assert sender.sent == []


def test_take_publishes_acknowledged_for_the_agent_and_the_row_is_pending_until_it_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, source, sender, _ = desk_client()
    page = sign_in(client, KEY, next_path="/desk/queue/care")
    with caplog.at_level(logging.INFO, logger="moments.audit"):
        after = client.post(
            "/desk/actions/a1/take", data={"csrf": csrf_of(page.text), "back": "/desk/queue/care"}
        )
    assert sender.sent == [
        {
            "status": "acknowledged",
            "action_id": "a1",
            "customer_id": "c-1",
            "owner": "alice",
            "resolution": None,
        }
    ]
    assert "Taken: the status was sent" in after.text and "pending take" in after.text
    audit = [r.getMessage() for r in caplog.records if r.name == "moments.audit"]
    assert any(
        line.startswith("desk take action=a1")
        and f"customer=hmac:{keyed_customer_hash('c-1')}" in line
        and "agent=alice" in line
        for line in audit
    ), audit
    assert not any("c-1 " in line or line.endswith("c-1") for line in audit)
    source.actions[0].update(status="acknowledged", owner="alice")  # the sink caught up
    assert "pending take" not in client.get("/desk/queue/care").text


def test_done_and_reassign_publish_their_status_events() -> None:
    client, _, sender, _ = desk_client()
    page = sign_in(client, KEY, next_path="/desk/queue/care")
    token = csrf_of(page.text)
    client.post("/desk/actions/a1/done", data={"csrf": token, "resolution": "unreachable"})
    client.post("/desk/actions/a2/reassign", data={"csrf": token, "owner": "bob"})
    bad = client.post("/desk/actions/a2/done", data={"csrf": token, "resolution": "bored"})
    assert bad.status_code == 400
    assert [(s["status"], s["owner"], s["resolution"]) for s in sender.sent] == [
        ("done", None, "unreachable"),
        ("reassigned", "bob", None),
    ]


def test_done_on_an_action_someone_else_completed_says_so_and_sends_nothing() -> None:
    source = FakeDeskSource([action_row(1), action_row(2, status="done", owner="bob")])
    client, _, sender, _ = desk_client(source)
    page = sign_in(client, KEY, next_path="/desk/queue/care")
    after = client.post(
        "/desk/actions/a2/done",
        data={"csrf": csrf_of(page.text), "resolution": "completed", "back": "/desk/queue/care"},
    )
    assert "Already completed by someone else" in after.text and sender.sent == []


def test_a_broker_outage_says_the_button_could_not_be_sent() -> None:
    client, *_ = desk_client(sender=RecordingSender(fail=True))
    page = sign_in(client, KEY, next_path="/desk/queue/care")
    after = client.post(
        "/desk/actions/a1/take", data={"csrf": csrf_of(page.text), "back": "/desk/queue/care"}
    )
    assert after.status_code == 200 and "Could not be sent" in after.text
    assert "pending take" not in after.text


def test_a_database_outage_is_a_503_page_without_traceback() -> None:
    source = FakeDeskSource([action_row(1)])
    client, *_ = desk_client(source)
    sign_in(client, KEY)
    source.down = True
    for path in ("/desk/queue/care", "/desk/customers/c-1"):
        page = client.get(path)
        assert page.status_code == 503 and "Database unavailable" in page.text, path
        assert "Traceback" not in page.text and "OperationalError" not in page.text


def test_customer_text_is_escaped_everywhere() -> None:
    hostile_row = action_row(1, customer_id=HOSTILE, reason=HOSTILE, owner=HOSTILE)
    timeline = [
        {
            "at": NOW,
            "kind": "event",
            "id": "e1",
            "channel": "email",
            "summary": HOSTILE,
            "status": None,
            "owner": None,
            "overdue": None,
            "outcome": None,
        }
    ]
    source = FakeDeskSource(
        [hostile_row],
        customers={HOSTILE: {"timeline": timeline, "preferences": {"engagement": HOSTILE}}},
    )
    client, *_ = desk_client(source)
    queue = sign_in(client, KEY, next_path="/desk/queue/care")
    customer = client.get(f"/desk/customers/{HOSTILE}")
    for page in (queue, customer):
        assert page.status_code == 200
        assert "<script>" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;" in page.text
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src" not in policy
        assert "http://" not in page.text and "https://" not in page.text


def test_a_customer_id_of_300_characters_is_a_400() -> None:
    client, *_ = desk_client()
    sign_in(client, KEY)
    page = client.get("/desk/customers/" + "c" * 300)
    assert page.status_code == 400 and "1 to 256 characters" in page.text


def test_the_queue_puts_overdue_first_then_priority_and_filters_mine() -> None:
    rows = [
        action_row(1, priority=90),
        action_row(2, priority=10, overdue_at=NOW - timedelta(hours=1), due_by=NOW),
        action_row(3, priority=50, owner="alice", status="acknowledged"),
    ]
    client, *_ = desk_client(FakeDeskSource(rows))
    page = sign_in(client, KEY, next_path="/desk/queue/care").text
    assert page.index('data-action="a2"') < page.index('data-action="a1"')
    assert page.index('data-action="a1"') < page.index('data-action="a3"')
    mine = client.get("/desk/queue/care", params={"mine": "1"}).text
    assert 'data-action="a3"' in mine and 'data-action="a1"' not in mine
    assert client.get("/desk/queue/care", params={"page": "0"}).status_code == 400
    assert client.get("/desk/queue/NOT a queue").status_code == 400


def test_every_form_control_has_a_label() -> None:
    client, *_ = desk_client()
    page = sign_in(client, KEY, next_path="/desk/queue/care").text
    for control_id in ("resolution-1", "owner-1", "resolution-2", "owner-2", "mine"):
        assert f'id="{control_id}"' in page and f'for="{control_id}"' in page, control_id


def test_sign_in_redirects_only_within_the_desk() -> None:
    client, *_ = desk_client()
    landed = sign_in(client, KEY, next_path="https://evil.example/")
    assert landed.url.host == "testserver" and landed.url.path.startswith("/desk/")


def test_desk_keys_are_name_equals_key() -> None:
    assert parse_desk_keys(["alice=k1", "bob=k2"]) == {"alice": b"k1", "bob": b"k2"}
    assert list(parse_desk_keys(["k3"])) == [
        "key-" + __import__("hashlib").sha256(b"k3").hexdigest()[:8]
    ]
    for bad in (["=k1"], ["alice="], ["alice=k1", "alice=k2"]):
        with pytest.raises(DeskKeyError, match="MOMENTS_DESK_KEYS entry"):
            parse_desk_keys(bad)
    settings = Settings().replace(desk_keys=[SecretStr("=oops")])
    with pytest.raises(ApiConfigError, match="name=key"):
        check_binding(settings, "127.0.0.1")
    assert "k1" not in repr(DeskAuth({"alice": b"k1"}))


def test_without_desk_keys_the_desk_is_off_beyond_loopback() -> None:
    settings = Settings()
    off = build_desk(settings, "postgresql://unused", None, "0.0.0.0")
    assert not off.enabled and "MOMENTS_DESK_KEYS" in off.disabled_reason
    client = TestClient(Starlette(routes=[off.mount()]))
    assert client.get("/desk/signin").status_code == 403
    assert build_desk(settings, "postgresql://unused", None, "127.0.0.1").enabled


def test_the_balance_chart_is_an_svg_with_a_text_alternative() -> None:
    points = [(NOW - timedelta(days=30), -2), (NOW - timedelta(days=3), 1), (NOW, 3)]
    svg = balance_svg(points, 90)
    assert svg.startswith("<svg") and 'role="img"' in svg and "<desc" in svg
    assert "from -2 on 2026-01-31 to +3 on 2026-03-02" in svg and "<polyline" in svg
    assert "No balance" in balance_svg([], 90)


def test_due_text_says_due_in_or_overdue_by() -> None:
    assert due_text(NOW + timedelta(hours=3), None, NOW) == "due in 3 h"
    assert due_text(NOW - timedelta(days=3), None, NOW) == "overdue by 3 d"
    assert due_text(None, None, NOW) == "no due time"


def test_the_cli_builds_the_status_events_of_section_12_from_the_desk() -> None:
    taken = desk_status_event(
        "acknowledged", "a1", "c-1", owner="alice", occurred_at="2026-03-02T12:00:00Z"
    )
    again = desk_status_event(
        "acknowledged", "a1", "c-1", owner="alice", occurred_at="2026-03-02T12:00:00Z"
    )
    done = desk_status_event("done", "a1", "c-1", resolution="customer_declined")
    assert (taken.type, taken.channel, taken.reference, taken.source) == (
        "action_acknowledged",
        "other",
        "a1",
        "desk",
    )
    assert taken.attributes == {"owner": "alice"} and taken.event_id == again.event_id
    assert done.type == "action_done" and done.attributes == {"resolution": "customer_declined"}


def test_a_broker_that_never_confirms_is_status_not_sent() -> None:
    closed = Settings(bootstrap=f"127.0.0.1:{free_port()}")
    sender = PublisherStatusSender(closed, timeout_s=0.2)  # the verdict, not the wait
    try:
        with pytest.raises(StatusNotSent):
            sender.send("acknowledged", "a1", "c-1", owner="alice")
    finally:
        sender.close()


def test_the_read_api_serves_the_desk_under_desk() -> None:
    desk = Desk(FakeDeskSource([action_row(1)]), RecordingSender(), DeskAuth({"alice": b"k"}))
    app = build_app(FakeTimelines(ROWS), desk=desk)
    with TestClient(app) as client:
        assert client.get("/desk").url.path == "/desk/signin"
        assert client.get("/desk/static/desk.css").headers["content-type"].startswith("text/css")
        assert client.get("/healthz").status_code == 200
        assert client.get("/desk/nothing-here").status_code == 404
