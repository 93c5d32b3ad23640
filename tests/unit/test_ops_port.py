"""The ops port of every process (common.metrics.serve_metrics): /metrics, /healthz, /readyz."""

from __future__ import annotations

import httpx

from common.metrics import EVENTS_REJECTED, serve_metrics
from moments.stack import free_port


def test_ops_port_serves_metrics_health_and_readiness() -> None:
    state = {"ready": False}
    port = free_port()
    server = serve_metrics(port, ready=lambda: (state["ready"], "waiting for the broker"))
    assert server is not None
    try:
        EVENTS_REJECTED.labels("ops-test").inc()
        base = f"http://127.0.0.1:{port}"
        metrics = httpx.get(f"{base}/metrics", timeout=10)
        assert metrics.status_code == 200
        assert 'moments_events_rejected_total{stage="ops-test"} 1.0' in metrics.text
        assert httpx.get(f"{base}/healthz", timeout=10).json() == {"status": "ok"}
        not_ready = httpx.get(f"{base}/readyz", timeout=10)
        assert not_ready.status_code == 503
        assert not_ready.json() == {"status": "unavailable", "detail": "waiting for the broker"}
        state["ready"] = True
        assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
        assert httpx.get(f"{base}/anything-else", timeout=10).status_code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_port_zero_serves_nothing() -> None:
    assert serve_metrics(0) is None
