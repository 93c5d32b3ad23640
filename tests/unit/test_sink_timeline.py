"""The timeline's rendering and the read API over an in-memory timeline source (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from rich.console import Console
from starlette.testclient import TestClient

from sinks.api import build_app
from sinks.timeline import iso_utc, timeline_table, work_state
from tests.support.sinks import ROWS, FakeTimelines


def test_iso_utc_gives_milliseconds_and_the_utc_offset() -> None:
    at = datetime(2026, 1, 2, 4, 4, 5, 123_456, tzinfo=timezone(timedelta(hours=1)))
    assert iso_utc(at) == "2026-01-02T03:04:05.123+00:00"
    assert iso_utc(datetime(2026, 1, 2, tzinfo=UTC)) == "2026-01-02T00:00:00.000+00:00"


def test_the_table_shows_each_entry_with_its_signed_balance() -> None:
    console = Console(record=True, width=200)
    console.print(timeline_table(ROWS))
    text = console.export_text()
    assert "Timeline of customer c-7" in text
    assert "2026-01-02 03:04:05" in text
    assert "cancellation_requested" in text
    assert "life_event_check_in → care (priority 80): asked to cancel" in text
    assert "-2" in text
    lines = [line for line in text.splitlines() if "2026-01-02" in line]
    assert [line.split("│")[2].strip() for line in lines] == ["event", "decision", "action"]


def test_the_api_serves_a_customers_timeline_as_json() -> None:
    source = FakeTimelines(ROWS)
    with TestClient(build_app(source)) as client:
        answer = client.get("/v1/customers/c-7/timeline")
        assert answer.status_code == 200
        body = answer.json()
        assert body["customer_id"] == "c-7" and body["count"] == 3
        assert [e["kind"] for e in body["entries"]] == ["event", "decision", "action"]
        assert body["entries"][2]["relationship_balance"] == -2
        assert body["next_before"] is None  # fewer than asked: the last page
        one = client.get("/v1/customers/c-7/timeline?limit=1").json()
        assert one["count"] == 1 and one["next_before"]
        assert client.get("/v1/customers/someone%20else/timeline").json()["entries"] == []
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready"}
    assert source.calls[:2] == [("c-7", 200), ("c-7", 1)]
    assert source.calls[2] == ("someone else", 200)
    assert source.opened and source.closed


def test_a_bad_limit_is_a_400_naming_the_parameter() -> None:
    with TestClient(build_app(FakeTimelines(ROWS), max_page=500)) as client:
        for bad in ("0", "abc", "501", "100001"):
            answer = client.get(f"/v1/customers/c-7/timeline?limit={bad}")
            assert answer.status_code == 400
            assert "limit" in answer.json()["error"]
        assert client.get("/v1/customers/c-7/timeline?limit=500").status_code == 200
        answer = client.get("/v1/customers/c-7/timeline?before=yesterday")
        assert answer.status_code == 400 and "before" in answer.json()["error"]


def test_a_database_outage_is_a_503_not_a_traceback() -> None:
    with TestClient(build_app(FakeTimelines(ROWS, down=True))) as client:
        answer = client.get("/v1/customers/c-7/timeline")
        assert answer.status_code == 503
        assert answer.json() == {"error": "database unavailable"}
        assert client.get("/v1/customers/c-7/decisions").status_code == 503
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200  # the process is up: no restart
        assert client.get("/v1/customers").status_code == 404


def test_an_action_shows_its_status_owner_and_lateness() -> None:
    action = {"kind": "action", "owner": None, "late_s": None, "overdue": False}
    assert work_state({**action, "status": "open"}) == "open"
    assert work_state({**action, "status": "acknowledged", "owner": "ana", "overdue": True}) == (
        "acknowledged (ana), overdue"
    )
    assert work_state({**action, "status": "done", "owner": "bo", "late_s": 7500}) == (
        "done by bo, 2 h late"
    )
    assert work_state({**action, "status": "done", "late_s": 0}) == "done, on time"
    assert work_state({**action, "status": "done", "late_s": 3 * 86400}) == "done, 3 d late"
    assert work_state({"kind": "event", "status": None}) == ""
    row = {**ROWS[-1], "status": "overdue", "overdue": True, "owner": "cy"}
    console = Console(record=True, width=200)
    console.print(timeline_table([*ROWS[:-1], row]))
    assert "overdue (cy)" in console.export_text()
