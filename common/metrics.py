"""Every Prometheus metric moments exports, declared together in one place, and the ops
port every process serves them on (`serve_metrics`: /metrics, /healthz, /readyz).

Names follow Prometheus conventions (units in names, `_total` counters).
Label values are bounded sets (channel, event type from the vocabulary or
`other`, rule id, destination, reason, stage); customer ids and free text
never become labels.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app

from common.http_limits import TOO_MANY_CONNECTIONS, ConnectionCounter
from schemas.records import EVENT_TYPES

_KNOWN_TYPES = frozenset(EVENT_TYPES)

# Latencies that matter: a care desk should see a moment within a second.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

EVENTS_CONSUMED = Counter(
    "moments_events_consumed_total",
    "Interaction events the worker applied, by channel and type.",
    ["channel", "type"],
)
EVENTS_PUBLISHED = Counter(
    "moments_events_published_total",
    "Interaction events the publisher SDK had acknowledged by the broker, by channel and type.",
    ["channel", "type"],
)
EVENTS_REJECTED = Counter(
    "moments_events_rejected_total",
    "Interaction events refused before publishing (validation), by source stage.",
    ["stage"],
)
ACTIONS_EMITTED = Counter(
    "moments_actions_emitted_total",
    "Actions fired and sent to their destination topic, by rule and destination.",
    ["rule", "destination"],
)
DECISIONS = Counter(
    "moments_decisions_total",
    "Decisions on candidate actions, by rule, outcome (fired, deferred, suppressed, held_out)"
    " and reason.",
    ["rule", "outcome", "reason"],
)
DLQ_RECORDS = Counter(
    "moments_dlq_records_total",
    "Records sent to a dead-letter topic, by stage (decode, validate, webhook, ...).",
    ["stage"],
)
REDELIVERIES_SKIPPED = Counter(
    "moments_worker_redeliveries_skipped_total",
    "Input records the worker skipped because its state already holds their effect"
    " (redelivered after a crash or a rebalance).",
)
EVENTS_FUTURE_DATED = Counter(
    "moments_events_future_dated_total",
    "Events dated more than MOMENTS_MAX_FUTURE_SKEW after their Kafka record timestamp:"
    " applied with their own time, but the partition watermark moved at most to the record"
    " timestamp plus the skew.",
)
EVENTS_TOO_LATE = Counter(
    "moments_events_too_late_total",
    "Events older than their partition's watermark minus MOMENTS_MAX_LATENESS: not applied,"
    " kept on interactions.late (stage late) with the dead-letter headers.",
)
ACTION_STATUS_IGNORED = Counter(
    "moments_action_status_ignored_total",
    "Status events of actions that changed nothing, by reason: unknown (no such action of"
    " the customer), done, lapsed, unchanged (the same owner again).",
    ["reason"],
)
EVENT_TO_ACTION_LATENCY = Histogram(
    "moments_event_to_action_latency_seconds",
    "Wall-clock time from the trigger's event time to the action's emission, by destination"
    " and trigger: `event` (the action answers an event) or `timer` (an absence deadline"
    " passed; such actions wait for the watermark, at least the allowed lateness).",
    ["destination", "trigger"],
    buckets=LATENCY_BUCKETS,
)
#: Values of EVENT_TO_ACTION_LATENCY's `trigger` label.
TRIGGERS = ("event", "timer")
RELATIONSHIP_BALANCE = Histogram(
    "moments_relationship_balance",
    "Relationship balance (positives minus negatives over 90 days) carried on emitted actions.",
    buckets=(-10, -5, -3, -2, -1, 0, 1, 2, 3, 5, 10),
)
WATERMARK_LAG = Gauge(
    "moments_watermark_lag_seconds",
    "Wall clock minus the event-time watermark, per input partition.",
    ["partition"],
)
SINK_ROWS = Counter(
    "moments_sink_rows_total",
    "Rows written durably by a sink (duplicates dropped by the database not counted), by table.",
    ["sink", "table"],
)
SINK_BATCH_DURATION = Histogram(
    "moments_sink_batch_duration_seconds",
    "Time to write and commit one sink batch.",
    ["sink"],
    buckets=LATENCY_BUCKETS,
)
SINK_ERRORS = Counter(
    "moments_sink_errors_total",
    "Sink batches that failed and will be retried, by sink.",
    ["sink"],
)
WEBHOOK_DELIVERIES = Counter(
    "moments_webhook_deliveries_total",
    "Webhook delivery attempts by destination and outcome (delivered, retried, failed).",
    ["destination", "outcome"],
)
#: What `moments_process_info{process}` may say: the processes moments runs.
PROCESSES: Final = ("worker", "sink-postgres", "sink-webhook", "collector", "api")
PROCESS_INFO = Gauge(
    "moments_process_info",
    "1 for the moments process serving these metrics, by what it is (worker, sink-postgres,"
    " sink-webhook, collector, api): alerts and panels find processes by it, not by job names.",
    ["process"],
)
CONSUMER_LAG = Gauge(
    "moments_consumer_lag_messages",
    "High watermark minus committed (the worker: next) offset, per consumer group, topic and"
    " partition.",
    ["group", "topic", "partition"],
)
RULES_ACTIVE = Gauge(
    "moments_rules_active",
    "1 for each rule (and its version) of the rule pack this worker runs and switches its"
    " partitions to; a switch replaces the set.",
    ["rule", "version"],
)
RULES_PACK = Gauge(
    "moments_rules_pack_info",
    "1 for the id (sha256 prefix of its YAML) of the rule pack this worker runs; workers"
    " that disagree run different packs.",
    ["pack"],
)
RULES_SWITCHES = Counter(
    "moments_rules_switches_total",
    "Partitions switched to a newly published rule pack (docs/design.md 8.3).",
)
RULES_REFUSED = Counter(
    "moments_rules_refused_total",
    "Rule packs published to the rules topic that the worker refused (invalid, or a changed"
    " rule without a higher version); it keeps running the pack it has.",
)
#: Event-time spans of work (docs/design.md 12): minutes to a month.
WORK_BUCKETS = (300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 432000, 1209600, 2592000)
ACTIONS_OPEN = Gauge(
    "moments_actions_open",
    "Actions not done and not lapsed (open, acknowledged, reassigned or overdue), per"
    " destination, as the PostgreSQL sink last counted them (every sink replica reports the"
    " same total: aggregate with max).",
    ["destination"],
)
ACTIONS_OVERDUE = Gauge(
    "moments_actions_overdue",
    "Actions past their due_by and not done (nor lapsed), per destination, as the PostgreSQL"
    " sink last counted them (aggregate with max).",
    ["destination"],
)
ACTION_TIME_TO_ACKNOWLEDGE = Histogram(
    "moments_action_time_to_acknowledge_seconds",
    "Event time from an action firing to its first acknowledgement or reassignment, per"
    " destination (observed once, by the PostgreSQL sink, when it stores it).",
    ["destination"],
    buckets=WORK_BUCKETS,
)
ACTION_TIME_TO_DONE = Histogram(
    "moments_action_time_to_done_seconds",
    "Event time from an action firing to its being done, per destination (observed once, by"
    " the PostgreSQL sink, when it stores it).",
    ["destination"],
    buckets=WORK_BUCKETS,
)
COLLECTOR_REQUESTS = Counter(
    "moments_collector_requests_total",
    "HTTP collector requests by status code.",
    ["code"],
)


def event_type_label(event_type: str) -> str:
    """The event type as a label value: vocabulary types as is, anything else `other`."""
    return event_type if event_type in _KNOWN_TYPES else "other"


#: A readiness check: (ready, a short reason that holds no secret and no customer data).
Readiness = Callable[[], tuple[bool, str]]


def _always_ready() -> tuple[bool, str]:
    return True, "serving"


def ops_app(ready: Readiness | None = None) -> Callable[..., Iterable[bytes]]:
    """The WSGI app of the ops port: /metrics, /healthz (process up), /readyz (`ready`)."""
    metrics_app = make_wsgi_app()
    check = ready or _always_ready

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            status, body = "200 OK", {"status": "ok"}
        elif path == "/readyz":
            ok, detail = check()
            status = "200 OK" if ok else "503 Service Unavailable"
            body = {"status": "ready" if ok else "unavailable", "detail": detail}
        else:
            status, body = "404 Not Found", {"error": "not found: /metrics, /healthz, /readyz"}
        payload = json.dumps(body).encode()
        start_response(
            status,
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    return app


class _QuietHandler(WSGIRequestHandler):
    """No access log (probes and scrapes every few seconds); a client that sends nothing
    within `timeout` (set per server) or goes away is closed without a traceback."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(TimeoutError, ConnectionError):
            super().handle()


class _OpsServer(ThreadingMixIn, WSGIServer):
    """The threaded ops server: a thread per connection, at most `connections.limit` per
    client address (beyond it: 429 and closed at once)."""

    daemon_threads = True
    connections: ConnectionCounter = ConnectionCounter(0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._counted: dict[Any, str] = {}
        self._counted_lock = threading.Lock()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        address = str(client_address[0]) if client_address else ""
        if not self.connections.acquire(address):
            with contextlib.suppress(OSError):
                request.sendall(TOO_MANY_CONNECTIONS)
            return False
        with self._counted_lock:
            self._counted[request] = address
        return True

    def shutdown_request(self, request: Any) -> None:
        with self._counted_lock:
            address = self._counted.pop(request, None)
        if address is not None:
            self.connections.release(address)
        super().shutdown_request(request)


class _OpsServer6(_OpsServer):
    address_family = socket.AF_INET6


def serve_metrics(
    port: int,
    host: str = "127.0.0.1",
    *,
    ready: Readiness | None = None,
    client_connections: int = 100,
    idle_timeout_s: float = 10.0,
) -> WSGIServer | None:
    """Serve the ops endpoints on a daemon thread: `/metrics` (Prometheus), `/healthz` (200
    while the process runs) and `/readyz` (200 when `ready` says so, else 503).

    Every moments process calls this with `MOMENTS_METRICS_PORT`, the port the
    Kubernetes probes and Prometheus use; 0 means: do not serve. Returns the
    server (its `shutdown()` stops it) or None. A client address holds at most
    `client_connections` connections (0: no cap; `MOMENTS_HTTP_CLIENT_CONNECTIONS`),
    and a connection that sends no request within `idle_timeout_s` is closed
    (`MOMENTS_HTTP_IDLE_TIMEOUT_S`): an idle client never holds a thread for long.
    """
    if not port:
        return None
    server_class = _OpsServer6 if ":" in host else _OpsServer
    handler = type("_OpsHandler", (_QuietHandler,), {"timeout": idle_timeout_s})
    server = make_server(host, port, ops_app(ready), server_class, handler_class=handler)
    server.connections = ConnectionCounter(client_connections)  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="moments-ops", daemon=True)
    thread.start()
    return server
