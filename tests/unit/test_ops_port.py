"""The ops port of every process (common.metrics.serve_metrics): /metrics, /healthz, /readyz."""

from __future__ import annotations

import socket

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


def test_an_idle_connection_is_closed_and_frees_its_thread() -> None:
    port = free_port()
    server = serve_metrics(port, idle_timeout_s=0.3)
    assert server is not None
    try:
        quiet = socket.create_connection(("127.0.0.1", port), timeout=10)
        with quiet:  # sends nothing: closed by the server, not by the 10 s client timeout
            assert quiet.recv(100) == b""
    finally:
        server.shutdown()
        server.server_close()


def test_a_client_holds_at_most_its_cap_of_connections() -> None:
    port = free_port()
    server = serve_metrics(port, client_connections=3, idle_timeout_s=60)
    assert server is not None
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    try:
        over = socket.create_connection(("127.0.0.1", port), timeout=10)
        with over:
            assert over.recv(200).startswith(b"HTTP/1.1 429")
        # Another client address is not held up by this one's connections.
        other = socket.socket()
        other.bind(("127.0.0.2", 0))
        other.settimeout(10)
        other.connect(("127.0.0.1", port))
        with other:
            other.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
            assert other.recv(200).startswith(b"HTTP/1.0 200")
    finally:
        for sock in held:
            sock.close()
        server.shutdown()
        server.server_close()
