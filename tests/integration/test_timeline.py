"""The customer timeline view, its query and the read API over a real PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
from pydantic import SecretStr
from starlette.testclient import TestClient

from common.settings import Settings
from moments.stack import free_port
from sinks.api import create_app
from sinks.timeline import customer_timeline
from tests.support.timeline_stories import story, write


def test_the_timeline_tells_a_customers_story_in_time_order(database: str) -> None:
    write(database, story("anna") + story("bob"))

    rows = customer_timeline(database, "anna")

    assert [(r["kind"], r["id"]) for r in rows] == [
        ("event", "anna-e1"),
        ("decision", "anna-dec-2"),
        ("event", "anna-e2"),
        ("event", "anna-e3"),
        ("decision", "anna-dec"),
        ("action", "anna-act"),
    ]
    assert [r["at"] for r in rows][::2] == [
        "2026-01-02T03:04:05.000+00:00",
        "2026-01-02T04:04:05.000+00:00",
        "2026-01-02T05:04:05.000+00:00",
    ]
    assert {r["customer_id"] for r in rows} == {"anna"}
    assert [r["channel"] for r in rows if r["kind"] == "event"] == ["web", "email", "call"]
    assert rows[2]["summary"] == "complaint_filed · CASE-9 · Billed twice"
    assert rows[1]["summary"] == "recognize_tenure suppressed (contact_cap)"
    assert rows[4]["summary"] == "life_event_check_in fired"
    assert rows[5]["summary"] == (
        "life_event_check_in → care (priority 80): Asked to cancel by phone after a complaint."
    )
    assert [r["relationship_balance"] for r in rows] == [None] * 5 + [-2]

    latest = customer_timeline(database, "anna", limit=2)
    assert [r["id"] for r in latest] == ["anna-dec", "anna-act"]
    assert customer_timeline(database, "nobody") == []


def test_the_read_api_serves_the_timeline_from_postgres(database: str) -> None:
    write(database, story("carla"))
    with TestClient(create_app(database)) as client:
        answer = client.get("/v1/customers/carla/timeline")
        assert answer.status_code == 200
        body = answer.json()
        assert body["count"] == 6
        assert body["entries"] == customer_timeline(database, "carla")
        assert body["entries"][-1]["relationship_balance"] == -2
        assert client.get("/v1/customers/carla/timeline?limit=3").json()["count"] == 3
        assert client.get("/healthz").json() == {"status": "ok"}


def test_the_read_api_pages_back_and_serves_the_decision_trace(database: str) -> None:
    write(database, story("dina"))
    settings = Settings(read_api_keys=[SecretStr("desk-key")], api_max_page=4)
    key = {"Authorization": "Bearer desk-key"}
    with TestClient(create_app(database, settings)) as client:
        assert client.get("/v1/customers/dina/timeline").status_code == 401
        first = client.get("/v1/customers/dina/timeline?limit=4", headers=key).json()
        older = client.get(
            f"/v1/customers/dina/timeline?limit=4&before={first['next_before']}", headers=key
        ).json()
        trace = client.get("/v1/customers/dina/decisions", headers=key).json()
        assert client.get("/readyz").status_code == 200
    everything = customer_timeline(database, "dina")
    assert older["entries"] + first["entries"] == everything  # two pages, nothing twice
    assert older["next_before"] is None
    assert [d["decision_id"] for d in trace["decisions"]] == ["dina-dec-2", "dina-dec"]
    assert trace["decisions"][0] == {
        "decision_id": "dina-dec-2",
        "rule": "recognize_tenure",
        "rule_version": 1,
        "outcome": "suppressed",
        "reason": "contact_cap",
        "action_id": None,
        "blocked_by": None,  # no such column before migration 004
        "evidence": ["dina-e1"],
        "decided_at": "2026-01-02T03:04:05.000+00:00",
    }


def test_the_decision_trace_reads_blocked_by_once_the_column_exists(database: str) -> None:
    write(database, story("emil"))
    with psycopg.connect(database) as conn:  # what migration 004 adds
        conn.execute("ALTER TABLE decisions ADD COLUMN IF NOT EXISTS blocked_by text")
        conn.execute(
            "UPDATE decisions SET blocked_by = %s WHERE decision_id = %s",
            ("emil-act", "emil-dec-2"),
        )
    with TestClient(create_app(database, Settings())) as client:
        trace = client.get("/v1/customers/emil/decisions").json()
    assert {d["decision_id"]: d["blocked_by"] for d in trace["decisions"]} == {
        "emil-dec-2": "emil-act",
        "emil-dec": None,
    }


def test_moments_api_serves_probes_metrics_and_audited_reads_on_its_port(
    database: str, tmp_path: Path
) -> None:
    write(database, story("CUST-API-1"))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")},
        "MOMENTS_DATABASE_URL": database,
        "MOMENTS_READ_API_KEYS": '["desk-key-1"]',
        "MOMENTS_ID_HASH_KEY": "timeline-test-hash-key",
        "MOMENTS_API_PORT": str(port),
    }
    log = tmp_path / "api.log"
    with open(log, "wb") as out:
        api = subprocess.Popen(
            [sys.executable, "-m", "moments", "api"], env=env, stdout=out, stderr=out
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert api.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        probes = {path: httpx.get(base + path).status_code for path in ("/readyz", "/metrics")}
        url = f"{base}/v1/customers/CUST-API-1/timeline"
        refused = httpx.get(url).status_code
        read = httpx.get(url, headers={"X-API-Key": "desk-key-1"}).json()
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(timeout=30)
    text = log.read_text(errors="replace")
    assert probes == {"/readyz": 200, "/metrics": 200} and refused == 401
    assert read["count"] == 6
    digest = hmac.new(b"timeline-test-hash-key", b"CUST-API-1", hashlib.sha256).hexdigest()
    assert f"moments.audit read timeline customer=hmac:{digest} key=key-" in text, text
    assert "CUST-API-1" not in text and "desk-key-1" not in text
