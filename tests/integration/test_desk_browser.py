"""The agent desk in a real browser over the whole live path (docs/design.md 13).

`moments worker`, `moments sink postgres` and `moments api` run as children on the
embedded broker and PostgreSQL; a complaint makes the worker raise a care follow-up;
headless Chromium signs in, takes the action and marks it done, and the status
comes back through Kafka, the worker and the sink to the page. The desk is then
used by keyboard alone, checked at 360 pixels wide, and the queue and the customer
page are saved as screenshots (docs/desk-*.png, shown in the README).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from common.settings import Settings
from moments.runtime import Supervisor
from moments.stack import free_port
from producers.publisher import Publisher
from sinks.migrate import apply_migrations
from tests.support.browser import ENTER, SPACE, TAB, Browser, Element, browser
from tests.support.desk import HOSTILE
from tests.support.worker_process import clock_event, event

AGENT_KEY = "desk-key-alice-integration"
DOCS = Path(__file__).resolve().parents[2] / "docs"
WAIT_S = 120.0


@dataclass
class LiveDesk:
    """The live path with the desk on its port."""

    base: str
    settings: Settings
    database: str
    supervisor: Supervisor


@pytest.fixture
def live_desk(settings: Settings, database: str, tmp_path: Path) -> Iterator[LiveDesk]:
    settings = settings.replace(
        database_url=database,
        desk_keys=[f"alice={AGENT_KEY}", "bob=desk-key-bob-integration"],
        read_api_keys=["read-key-integration"],
        id_hash_key="desk-integration-hash",
        # The worker applies a status once its partition's watermark passes it (the wall
        # clock moves a quiet partition's): a short lateness brings it back in seconds.
        allowed_lateness_s=5.0,
        data_dir=tmp_path / "data",
    )
    apply_migrations(database)
    port = free_port()
    with Supervisor(settings, tmp_path / "logs") as supervisor:
        for name, command in (("worker", ("worker",)), ("sink", ("sink", "postgres"))):
            supervisor.spawn(
                name,
                *command,
                MOMENTS_METRICS_PORT=str(free_port()),
                MOMENTS_WORKER_WEB_PORT=str(free_port()),
                MOMENTS_DATA_DIR=str(tmp_path / name),
            )
        supervisor.spawn("api", "api", MOMENTS_API_PORT=str(port), MOMENTS_METRICS_PORT="0")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            supervisor.check_alive()
            assert time.monotonic() < deadline, "the api did not become ready"
            time.sleep(0.3)
        yield LiveDesk(base, settings, database, supervisor)


def raise_follow_ups(settings: Settings, *stories: tuple[str, float]) -> None:
    """For each (customer, hours ago): a product, preferences, then a complaint (with hostile
    text) that the worker turns into a care follow-up, due 24 hours later; then, once every
    story is out, an event of each customer a minute ago, which moves their partition's
    clock past the complaints (and past the due time of a story over a day old)."""
    now_ms = int(time.time() * 1000)
    with Publisher(settings) as publisher:
        for customer, hours_ago in sorted(stories, key=lambda story: -story[1]):
            at = now_ms - int(hours_ago * 3_600_000)
            publisher.publish(
                event(customer, "account_opened", at - 40 * 60_000, product="electricity")
            )
            publisher.publish(
                event(
                    customer,
                    "contact_preferences_changed",
                    at - 35 * 60_000,
                    channel="web",
                    attributes={"engagement": "opt_in", "preferred_channel": "email"},
                )
            )
            publisher.publish(
                event(
                    customer,
                    "complaint_filed",
                    at - 20 * 60_000,
                    channel="email",
                    reference="CASE-1",
                    text=HOSTILE,
                )
            )
        for customer, _ in stories:
            publisher.publish(clock_event(customer, now_ms - 60_000))


def action_row(database: str, customer: str) -> tuple[str, str | None, str | None] | None:
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT status, owner, resolution FROM actions WHERE customer_id = %s"
            " AND destination = 'care'",
            (customer,),
        ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def sign_in(page: Browser, base: str) -> None:
    page.go(f"{base}/desk/queue/care")
    assert "/desk/signin" in page.url
    page.find("#key").type(AGENT_KEY)
    page.find("form.signin button").click()
    page.wait_for(lambda: "/desk/queue/care" in page.url, what="the queue after sign-in")


def card_element(page: Browser, customer: str) -> Element | None:
    """The queue card of CUSTOMER's action, None when it is not in the queue."""
    for card in page.find_all("li.card"):
        if card.find("a.customer").text == customer:
            return card
    return None


def card_of(page: Browser, customer: str) -> str:
    """The text of the queue card of CUSTOMER's action ('' when it is not in the queue)."""
    card = card_element(page, customer)
    return "" if card is None else card.text


def card_order(page: Browser) -> list[str]:
    """The customers of the queue's cards, top to bottom."""
    return [card.find("a.customer").text for card in page.find_all("li.card")]


def reload_until(
    page: Browser, url: str, check: str, absent: bool = False, live: LiveDesk | None = None
) -> None:
    def arrived() -> bool:
        page.go(url)
        return (check not in page.source) if absent else (check in page.source)

    try:
        page.wait_for(arrived, WAIT_S, what=f"{check!r} {'gone from' if absent else 'on'} {url}")
    except AssertionError as exc:
        if live is None:
            raise
        raise AssertionError(f"{exc}\n{diagnosis(live)}") from None


def diagnosis(live: LiveDesk) -> str:
    """What the database holds of the actions and statuses, and the children's log tails."""
    with psycopg.connect(live.database) as conn:
        actions = conn.execute(
            "SELECT action_id, customer_id, status, owner FROM actions ORDER BY triggered_at"
        ).fetchall()
        history = conn.execute(
            "SELECT action_id, status, owner, resolution FROM action_status_history ORDER BY at"
        ).fetchall()
        events = conn.execute(
            "SELECT type, source FROM interaction_events ORDER BY occurred_at"
        ).fetchall()
    tails = []
    for name in ("worker", "sink", "api"):
        lines = live.supervisor.log_path(name).read_text(errors="replace").splitlines()
        tails.append(f"--- {name}\n" + "\n".join(lines[-12:]))
    return f"actions {actions}\nhistory {history}\nevents {events}\n" + "\n".join(tails)


def test_sign_in_take_and_done_travel_through_kafka_the_worker_and_the_sink(
    live_desk: LiveDesk, tmp_path: Path
) -> None:
    customer, late = "CUST-DESK-1", "CUST-DESK-LATE"
    raise_follow_ups(live_desk.settings, (late, 50.0), (customer, 0.0))  # late: overdue now
    queue = f"{live_desk.base}/desk/queue/care"
    with browser(tmp_path / "chromedriver.log", height=1250) as page:  # the whole queue
        sign_in(page, live_desk.base)
        reload_until(page, queue, customer, live=live_desk)
        reload_until(page, queue, "overdue by", live=live_desk)
        # Overdue first: the late customer's follow-up (it may also hold escalations).
        order, texts = card_order(page), [card.text for card in page.find_all("li.card")]
        assert order[0] == late and "overdue by" in texts[0], texts
        assert all(order.index(customer) > n for n, text in enumerate(texts) if "overdue" in text)
        assert "nobody" in card_of(page, customer)
        card = card_element(page, customer)
        assert card is not None
        card.find("button.take").click()
        page.wait_for(lambda: "Taken: the status was sent" in page.source, what="the notice")
        assert "pending take" in card_of(page, customer) or "alice" in card_of(page, customer)
        reload_until(page, queue, "pending take", absent=True, live=live_desk)
        text = card_of(page, customer)
        assert "acknowledged" in text and "alice" in text, text
        assert action_row(live_desk.database, customer) == ("acknowledged", "alice", None)
        page.screenshot(DOCS / "desk-queue.png")

        card = card_element(page, customer)
        assert card is not None
        card.find("a.customer").click()
        page.wait_for(lambda: "/desk/customers/" in page.url, what="the customer page")
        source = page.source
        assert "complaint_filed" in source and "&lt;script&gt;" in source
        assert "electricity" in source and "preferred channel: email" in source
        assert page.script("return document.querySelectorAll('script').length") == 0
        page.screenshot(DOCS / "desk-customer.png")

        page.go(queue)
        card = card_element(page, customer)
        assert card is not None
        card.find("select").click()
        card.find("select option[value='unreachable']").click()
        card.find("button.done").click()
        page.wait_for(lambda: "Done: the status was sent" in page.source, what="the notice")
        reload_until(page, queue, customer, absent=True, live=live_desk)
    assert action_row(live_desk.database, customer) == ("done", "alice", "unreachable")
    with psycopg.connect(live_desk.database) as conn:
        types = [
            row[0]
            for row in conn.execute(
                "SELECT type FROM interaction_events WHERE customer_id = %s AND source = 'desk'"
                " ORDER BY occurred_at",
                (customer,),
            )
        ]
    assert types == ["action_acknowledged", "action_done"]
    audit = live_desk.supervisor.log_path("api").read_text(errors="replace")
    assert "desk take action=" in audit and "agent=alice" in audit
    assert customer not in audit and AGENT_KEY not in audit


def test_the_desk_works_by_keyboard_alone_and_on_a_narrow_screen(
    live_desk: LiveDesk, tmp_path: Path
) -> None:
    customer = "CUST-DESK-KEYS"
    raise_follow_ups(live_desk.settings, (customer, 0.0))
    queue = f"{live_desk.base}/desk/queue/care"
    with browser(tmp_path / "chromedriver.log", width=360, height=800, phone=True) as page:
        page.go(queue)
        page.keys(TAB)  # the skip link first
        assert page.active().text == "Skip to content"
        page.keys(TAB)
        assert page.active().attribute("id") == "key"
        page.type_text(AGENT_KEY)
        page.keys(ENTER)
        page.wait_for(lambda: "/desk/queue/care" in page.url, what="signed in by keyboard")
        reload_until(page, queue, customer, live=live_desk)
        # Every control is reachable by Tab, and each one shows its focus.
        seen: list[str] = []
        outline = []
        for _ in range(60):
            page.keys(TAB)
            element = page.active()
            tag = page.script("return document.activeElement.tagName") or ""
            label = page.script(
                "const e = document.activeElement; return e.labels && e.labels.length ?"
                " e.labels[0].textContent : (e.getAttribute('aria-label') || e.textContent)"
            )
            seen.append(f"{tag}:{(label or '').strip()}")
            outline.append(
                page.script("return getComputedStyle(document.activeElement).outlineStyle")
            )
            if "take" in (element.attribute("class") or ""):
                break
        assert any(s.startswith("BUTTON:Take") for s in seen), seen
        assert all(style != "none" for style in outline), list(zip(seen, outline, strict=True))
        assert all(s.split(":", 1)[1] for s in seen), seen  # every control has a name
        page.keys(SPACE)  # press Take
        page.wait_for(lambda: "Taken: the status was sent" in page.source, what="taken by keys")
        # Nothing scrolls sideways at 360 pixels, and every text is readable on its ground.
        width = page.script("return document.documentElement.scrollWidth")
        assert width <= 360, width
        assert page.script(LOW_CONTRAST) == []
        page.find("li.card a.customer").click()
        page.wait_for(lambda: "/desk/customers/" in page.url, what="the customer page")
        assert page.script("return document.documentElement.scrollWidth") <= 360
        assert page.script(LOW_CONTRAST) == []


#: Texts whose colour has a WCAG contrast below 4.5:1 with the first opaque background
#: behind them (tag, text, ratio).
LOW_CONTRAST = """
function lum(c) {
  const [r, g, b] = c.match(/[0-9.]+/g).slice(0, 3).map(Number).map(v => {
    v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
function ground(e) {
  for (; e; e = e.parentElement) {
    const c = getComputedStyle(e).backgroundColor;
    if (c && !c.startsWith('rgba(0, 0, 0, 0)') && c !== 'transparent') return c;
  }
  return 'rgb(255, 255, 255)';
}
const low = [];
for (const e of document.querySelectorAll('body *')) {
  if (e.closest('svg') || e.closest('.vh')) continue;
  const own = [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own || !e.getClientRects().length) continue;
  const a = lum(getComputedStyle(e).color), b = lum(ground(e));
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < 4.5) low.push([e.tagName, e.textContent.trim().slice(0, 40), ratio.toFixed(2)]);
}
return low;
"""
