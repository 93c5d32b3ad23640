"""The read API's guards without a database: keys, rate, page size, cursors, audit, binding."""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

import sinks.api as api_module
from common.privacy import KeyRing, RateLimiter, key_name
from common.settings import Settings
from sinks.api import ApiConfigError, build_app, check_binding, run_api
from tests.support.sinks import ROWS, FakeTimelines

KEY = "read-key-3a9f1c"
BEARER = {"Authorization": f"Bearer {KEY}"}
DECISIONS = [
    {
        "customer_id": "c-7",
        "decision_id": f"d{n}",
        "rule": "thank_meter_reading",
        "rule_version": 1,
        "outcome": "deferred",
        "reason": "contact_cap",
        "action_id": f"a{n}",
        "blocked_by": "a0",
        "evidence": [f"e{n}"],
        "decided_at": f"2026-01-02T0{n}:00:00.000+00:00",
    }
    for n in range(1, 4)
]


def keyed_app(**options: Any) -> Any:
    source = FakeTimelines(ROWS, decisions=DECISIONS)
    return build_app(source, keys=KeyRing([KEY.encode()]), **options)


def test_customer_routes_need_a_valid_key_and_probes_do_not() -> None:
    with TestClient(keyed_app()) as client:
        missing = client.get("/v1/customers/c-7/timeline")
        assert missing.status_code == 401 and "API key" in missing.json()["error"]
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = client.get("/v1/customers/c-7/decisions", headers={"X-API-Key": KEY + "x"})
        assert wrong.status_code == 401 and wrong.json() == {"error": "invalid API key"}
        assert client.get("/v1/customers/c-7/relationship").status_code == 401
        assert client.get("/v1/customers/c-7/timeline", headers=BEARER).status_code == 200
        assert client.get("/v1/customers/c-7/timeline", headers={"X-API-Key": KEY}).json()["count"]
        for probe in ("/healthz", "/readyz", "/metrics"):
            assert client.get(probe).status_code == 200, probe
        assert "process_cpu_seconds_total" in client.get("/metrics").text


def test_keys_are_compared_in_constant_time_with_every_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compared: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    ring = KeyRing([b"first", KEY.encode(), b"third"])
    assert ring.match(KEY) == key_name(KEY.encode())
    assert compared == [b"first", KEY.encode(), b"third"]  # no early exit on the match
    assert ring.match("nope") is None
    assert KEY not in repr(ring) and "first" not in repr(ring)


def test_the_decision_trace_carries_blocked_by() -> None:
    with TestClient(keyed_app()) as client:
        body = client.get("/v1/customers/c-7/decisions", headers=BEARER).json()
    assert body["count"] == 3
    assert [d["decision_id"] for d in body["decisions"]] == ["d1", "d2", "d3"]
    assert {d["blocked_by"] for d in body["decisions"]} == {"a0"}
    assert body["next_before"] is None


def test_each_key_has_its_own_rate_limit() -> None:
    now = [100.0]
    limiter = RateLimiter(rate=1.0, burst=2, clock=lambda: now[0])
    other = KeyRing([KEY.encode(), b"other-key"])
    source = FakeTimelines(ROWS)
    with TestClient(build_app(source, keys=other, limiter=limiter)) as client:
        codes = [client.get("/v1/customers/c-7/timeline", headers=BEARER).status_code]
        codes += [client.get("/v1/customers/c-7/timeline", headers=BEARER).status_code]
        limited = client.get("/v1/customers/c-7/timeline", headers=BEARER)
        assert codes == [200, 200] and limited.status_code == 429
        assert limited.headers["Retry-After"] == "1"
        other_key = {"X-API-Key": "other-key"}
        assert client.get("/v1/customers/c-7/timeline", headers=other_key).status_code == 200
        now[0] += 1.0  # a second later one token is back
        assert client.get("/v1/customers/c-7/timeline", headers=BEARER).status_code == 200
        assert client.get("/v1/customers/c-7/timeline", headers=BEARER).status_code == 429


def test_pages_are_capped_and_follow_the_cursor() -> None:
    source = FakeTimelines(ROWS)
    with TestClient(build_app(source, keys=KeyRing([KEY.encode()]), max_page=2)) as client:
        assert client.get("/v1/customers/c-7/timeline?limit=3", headers=BEARER).status_code == 400
        page = client.get("/v1/customers/c-7/timeline?limit=2", headers=BEARER).json()
        assert page["count"] == 2 and page["next_before"]
        cursor = page["next_before"]
        client.get(f"/v1/customers/c-7/timeline?limit=2&before={cursor}", headers=BEARER)
        client.get("/v1/customers/c-7/timeline?before=2026-01-02T03:00:00Z", headers=BEARER)
    first = page["entries"][0]
    at, rank, entry_id = source.befores[-2]
    assert (at.isoformat(timespec="milliseconds"), rank, entry_id) == (
        "2026-01-02T03:04:05.000+00:00",
        1,
        first["id"],
    )
    assert source.befores[-1][1:] == (-1, "")  # a plain time: everything strictly before it


def test_every_read_writes_one_audit_line_with_the_hashed_id_and_the_key_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    customer = "CUST-AUDIT-77"
    caplog.set_level(logging.INFO, logger="moments.audit")
    with TestClient(keyed_app()) as client:
        client.get(f"/v1/customers/{customer}/timeline", headers=BEARER)
        client.get(f"/v1/customers/{customer}/decisions?limit=0", headers=BEARER)
        client.get(f"/v1/customers/{customer}/timeline")  # no key: refused, not a read
    lines = [r.getMessage() for r in caplog.records if r.name == "moments.audit"]
    digest = hashlib.sha256(customer.encode()).hexdigest()
    assert lines == [
        f"read timeline customer=sha256:{digest} key={key_name(KEY.encode())} status=200 count=0",
        f"read decisions customer=sha256:{digest} key={key_name(KEY.encode())} status=400 count=0",
    ]
    assert customer not in caplog.text and KEY not in caplog.text


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "api.internal"])
def test_no_keys_no_binding_beyond_loopback(host: str) -> None:
    with pytest.raises(ApiConfigError, match="MOMENTS_API_KEYS"):
        check_binding(Settings(), host)
    assert check_binding(Settings(api_keys=[SecretStr(KEY)]), host)


def test_without_keys_the_api_serves_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[tuple[str, int]] = []

    def fake_run(app: Any, host: str, port: int, **kwargs: Any) -> None:
        served.append((host, port))
        assert kwargs.get("access_log") is False  # paths hold customer ids

    import uvicorn

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.setattr(api_module, "serve_metrics", lambda *a: None)
    settings = Settings(database_url="postgresql://127.0.0.1:9/x")
    run_api(settings)
    run_api(settings, host="::1", port=9999)
    assert served == [("127.0.0.1", 8081), ("::1", 9999)]
    with pytest.raises(ApiConfigError):
        run_api(settings, host="0.0.0.0")
