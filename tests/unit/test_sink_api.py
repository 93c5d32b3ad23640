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
from common.http_limits import ConnectionCounter
from common.privacy import KeyRing, RateLimiter, key_name, set_id_hash_key
from common.settings import Settings
from sinks.api import ApiConfigError, build_app, check_binding, run_api
from tests.support.sinks import ROWS, FakeTimelines

HASH_KEY = "id-hash-key-for-tests"

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


@pytest.fixture
def hash_key() -> Any:
    set_id_hash_key(HASH_KEY)
    yield HASH_KEY
    set_id_hash_key(None)


def keyed(customer: str) -> str:
    return hmac.new(HASH_KEY.encode(), customer.encode(), hashlib.sha256).hexdigest()


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "moments.audit"]


def test_every_read_writes_one_audit_line_with_the_keyed_hash_and_the_key_name(
    caplog: pytest.LogCaptureFixture, hash_key: str
) -> None:
    customer = "CUST-AUDIT-77"
    caplog.set_level(logging.INFO, logger="moments.audit")
    with TestClient(keyed_app()) as client:
        client.get(f"/v1/customers/{customer}/timeline", headers=BEARER)
        client.get(f"/v1/customers/{customer}/decisions?limit=0", headers=BEARER)
        client.get(f"/v1/customers/{customer}/timeline")  # no key: refused, not a read
    name = key_name(KEY.encode())
    assert audit_lines(caplog) == [
        f"read timeline customer=hmac:{keyed(customer)} key={name} status=200 count=0",
        f"read decisions customer=hmac:{keyed(customer)} key={name} status=400 count=0",
        "refused timeline client=testclient status=401",
    ]
    assert customer not in caplog.text and KEY not in caplog.text


def test_a_hashed_id_in_an_audit_line_is_not_found_by_hashing_guessed_ids(
    caplog: pytest.LogCaptureFixture, hash_key: str
) -> None:
    caplog.set_level(logging.INFO, logger="moments.audit")
    with TestClient(keyed_app()) as client:
        client.get("/v1/customers/C-37/timeline", headers=BEARER)
    (line,) = audit_lines(caplog)
    logged = line.split("customer=")[1].split()[0].split(":")[1]
    # The enumeration that recovered C-37 from a plain sha256 in half a second.
    guesses = {hashlib.sha256(f"C-{n}".encode()).hexdigest() for n in range(100_000)}
    assert logged not in guesses
    assert logged == keyed("C-37")  # whoever holds MOMENTS_ID_HASH_KEY can still check an id


class NulRefusingTimelines(FakeTimelines):
    """What PostgreSQL does with a NUL in a text parameter: psycopg raises."""

    def timeline(self, customer_id: str, limit: int, before: Any = None) -> list[dict[str, Any]]:
        if "\x00" in customer_id or (before is not None and "\x00" in str(before[2])):
            raise ValueError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        return super().timeline(customer_id, limit, before)


def test_a_nul_in_a_customer_id_or_a_cursor_is_a_400_with_its_audit_line(
    caplog: pytest.LogCaptureFixture, hash_key: str
) -> None:
    import base64
    import json

    caplog.set_level(logging.INFO, logger="moments.audit")
    cursor = base64.urlsafe_b64encode(
        json.dumps(["2026-01-02T03:04:05+00:00", 1, "e\x001"]).encode()
    ).decode()
    app = build_app(NulRefusingTimelines(ROWS), keys=KeyRing([KEY.encode()]))
    with TestClient(app, raise_server_exceptions=False) as client:
        in_id = client.get("/v1/customers/c%007/timeline", headers=BEARER)
        in_cursor = client.get(f"/v1/customers/c-7/timeline?before={cursor}", headers=BEARER)
        in_time = client.get("/v1/customers/c-7/timeline?before=2026-01-02%00", headers=BEARER)
    assert [in_id.status_code, in_cursor.status_code, in_time.status_code] == [400, 400, 400]
    assert "NUL" in in_id.json()["error"] and "before" in in_cursor.json()["error"]
    lines = audit_lines(caplog)
    assert len(lines) == 3 and all(line.endswith("status=400 count=0") for line in lines)
    assert f"customer=hmac:{keyed('c' + chr(0) + '7')}" in lines[0]


def test_an_unexpected_failure_still_writes_the_audit_line(
    caplog: pytest.LogCaptureFixture, hash_key: str
) -> None:
    caplog.set_level(logging.INFO, logger="moments.audit")
    app = build_app(NulRefusingTimelines(ROWS), keys=KeyRing([KEY.encode()]))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.get("/v1/customers/c-7/relationship", headers=BEARER)  # the fake has none
        answer = client.get("/v1/customers/c-7/timeline?limit=1", headers=BEARER)
    assert answer.status_code == 200
    assert len(audit_lines(caplog)) == 2


def test_failed_keys_are_logged_and_limited_per_client_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with TestClient(keyed_app(failed_key_limit=3)) as client:
        wrong = [
            client.get("/v1/customers/c-7/timeline", headers={"X-API-Key": f"guess-{n}"})
            for n in range(3)
        ]
        # Over the limit even the right key waits: a guess must not be told it was right.
        limited = client.get("/v1/customers/c-7/timeline", headers=BEARER)
    assert [answer.status_code for answer in wrong] == [401, 401, 401]
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "sinks.api"]
    assert warnings.count("read API: invalid API key from client testclient") == 3
    assert "read API: client testclient is over its failed key attempts" in warnings
    assert "guess-" not in caplog.text and KEY not in caplog.text


def test_the_read_api_takes_its_own_keys_never_the_collectors() -> None:
    collector_only = Settings(api_keys=[SecretStr("producer-key")])
    with pytest.raises(ApiConfigError, match="MOMENTS_READ_API_KEYS"):
        check_binding(collector_only, "127.0.0.1")
    shared = Settings(api_keys=[SecretStr(KEY)], read_api_keys=[SecretStr(KEY)])
    with pytest.raises(ApiConfigError, match=key_name(KEY.encode())) as refused:
        check_binding(shared, "0.0.0.0")
    assert KEY not in str(refused.value)
    with pytest.raises(ApiConfigError, match="MOMENTS_DESK_KEYS"):
        check_binding(Settings(read_api_keys=[SecretStr(KEY)], desk_keys=[SecretStr(KEY)]), "::1")
    ring = check_binding(
        Settings(api_keys=[SecretStr("producer-key")], read_api_keys=[SecretStr(KEY)]), "0.0.0.0"
    )
    assert ring.match("producer-key") is None and ring.match(KEY) == key_name(KEY.encode())


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "api.internal"])
def test_no_keys_no_binding_beyond_loopback(host: str) -> None:
    with pytest.raises(ApiConfigError, match="MOMENTS_READ_API_KEYS"):
        check_binding(Settings(), host)
    assert check_binding(Settings(read_api_keys=[SecretStr(KEY)]), host)


def test_without_keys_the_api_serves_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[tuple[str, int]] = []

    def fake_run(app: Any, host: str, port: int, **kwargs: Any) -> None:
        served.append((host, port))
        assert kwargs.get("access_log") is False  # paths hold customer ids
        # Every connection counts against its client's cap and has an idle deadline.
        assert isinstance(kwargs["http"].counter, ConnectionCounter)
        assert kwargs["http"].counter.limit == 100 and kwargs["http"].header_timeout_s == 10.0

    import uvicorn

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.setattr(api_module, "serve_metrics", lambda *a, **k: None)
    settings = Settings(database_url="postgresql://127.0.0.1:9/x")
    run_api(settings)
    run_api(settings, host="::1", port=9999)
    assert served == [("127.0.0.1", 8081), ("::1", 9999)]
    with pytest.raises(ApiConfigError):
        run_api(settings, host="0.0.0.0")


ACTIONS = [
    {
        "customer_id": "c-7",
        "action_id": f"a{n}",
        "status": status,
        "owner": owner,
        "overdue": overdue,
        "triggered_at": f"2026-01-02T0{n}:00:00.000+00:00",
    }
    for n, (status, owner, overdue) in enumerate(
        [("open", None, False), ("acknowledged", "ana", True), ("done", "bo", False)], start=1
    )
]


def test_the_actions_route_filters_by_status_and_refuses_an_unknown_one() -> None:
    source = FakeTimelines(ROWS, actions=ACTIONS)
    app = build_app(source, keys=KeyRing([KEY.encode()]))
    with TestClient(app) as client:
        assert client.get("/v1/customers/c-7/actions?status=closed").status_code == 401
        every = client.get("/v1/customers/c-7/actions", headers=BEARER).json()
        assert [a["status"] for a in every["actions"]] == ["open", "acknowledged", "done"]
        held = client.get("/v1/customers/c-7/actions?status=acknowledged", headers=BEARER).json()
        assert [(a["action_id"], a["owner"], a["overdue"]) for a in held["actions"]] == [
            ("a2", "ana", True)
        ]
        paged = client.get("/v1/customers/c-7/actions?limit=2", headers=BEARER).json()
        assert paged["count"] == 2 and paged["next_before"]
        unknown = client.get("/v1/customers/c-7/actions?status=closed", headers=BEARER)
        assert unknown.status_code == 400 and "status must be one of" in unknown.json()["error"]
