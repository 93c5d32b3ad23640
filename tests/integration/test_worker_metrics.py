"""A running worker's metrics, scraped over HTTP and by a real Prometheus (docs/design.md 7.4).

The worker runs as a child process (`python -m processors.worker`) with
`MOMENTS_METRICS_PORT` set; events go in through the publisher SDK. A fresh
process starts its counters at zero, so the values are checked exactly.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from common.settings import Settings
from moments.stack import wait_for_port
from producers.publisher import Publisher
from schemas.records import InteractionEvent
from tests.integration.ops_tools import prometheus_server, query, wait_for
from tests.support.scrape import metrics_settings, scrape, value, wait_for_scrape
from tests.support.worker_process import WAIT_S, running_worker

HOUR_MS = 3_600_000


def moments(customer: str) -> list[InteractionEvent]:
    """Two cancellations two hours apart, then feedback (all in the past, the last one now).

    life_event_check_in gathers each cancellation for an hour and decides once the watermark
    (max occurred_at - 5 min) passes that hour: the second cancellation settles the first
    (one action, a timer's: its time is the hour's end), the feedback settles the second
    (suppressed, cool_down). route_feedback decides the feedback as it arrives: one action
    answering its event, so its latency is the pipeline's own.
    """
    now = int(time.time() * 1000)

    def moment(event_type: str, occurred_at: int, channel: str) -> InteractionEvent:
        return InteractionEvent(
            event_id=uuid.uuid4().hex,
            customer_id=customer,
            channel=channel,
            type=event_type,
            occurred_at=occurred_at,
            source="metrics-test",
        )

    return [
        moment("cancellation_requested", now - 4 * HOUR_MS, "call"),
        moment("cancellation_requested", now - 2 * HOUR_MS, "call"),
        moment("feedback_given", now, "web"),
    ]


def test_worker_metrics_move_as_events_flow(settings: Settings, tmp_path: Path) -> None:
    settings = metrics_settings(settings)
    port = settings.metrics.metrics_port
    consumed = {"channel": "call", "type": "cancellation_requested"}
    feedback = {"channel": "web", "type": "feedback_given"}
    emitted = {"rule": "life_event_check_in", "destination": "care"}
    routed = {"rule": "route_feedback", "destination": "feedback"}
    fired = {"rule": "life_event_check_in", "outcome": "fired", "reason": "fired"}
    cooled = {"rule": "life_event_check_in", "outcome": "suppressed", "reason": "cool_down"}
    routed_fired = {"rule": "route_feedback", "outcome": "fired", "reason": "fired"}
    latency = {"destination": "feedback", "trigger": "event"}
    with running_worker(settings, tmp_path / "worker.log") as worker:
        wait_for_port("127.0.0.1", port, timeout_s=30)
        before = scrape(port)
        assert value(before, "moments_events_consumed_total", **consumed) == 0
        assert value(before, "moments_actions_emitted_total", **emitted) == 0
        with Publisher(settings) as publisher:
            for event in moments("mia"):
                publisher.publish(event)
        after = wait_for_scrape(
            port,
            worker,
            lambda s: (
                value(s, "moments_decisions_total", **cooled) >= 1
                and value(s, "moments_events_consumed_total", **feedback) >= 1
                and value(s, "moments_event_to_action_latency_seconds_count", **latency) >= 1
            ),
        )
    assert value(after, "moments_events_consumed_total", **consumed) == 2
    assert value(after, "moments_events_consumed_total", **feedback) == 1
    assert value(after, "moments_actions_emitted_total", **emitted) == 1
    assert value(after, "moments_actions_emitted_total", **routed) == 1
    assert value(after, "moments_decisions_total", **fired) == 1
    assert value(after, "moments_decisions_total", **cooled) == 1
    assert value(after, "moments_decisions_total", **routed_fired) == 1
    assert value(after, "moments_event_to_action_latency_seconds_count", **latency) == 1
    assert value(after, "moments_event_to_action_latency_seconds_sum", **latency) < WAIT_S
    # The check-in waited for the watermark: a timer's latency, not the pipeline's.
    timer = {"destination": "care", "trigger": "timer"}
    assert value(after, "moments_event_to_action_latency_seconds_count", **timer) == 1
    care_event = {"destination": "care", "trigger": "event"}
    assert value(after, "moments_event_to_action_latency_seconds_count", **care_event) == 0


def test_a_real_prometheus_scrapes_the_running_worker(settings: Settings, tmp_path: Path) -> None:
    settings = metrics_settings(settings)
    port = settings.metrics.metrics_port
    targets = {"moments-worker": [f"127.0.0.1:{port}"]}
    with (
        prometheus_server(tmp_path / "prometheus", targets) as base,
        running_worker(settings, tmp_path / "worker.log") as worker,
    ):
        wait_for_port("127.0.0.1", port, timeout_s=30)
        wait_for(base, 'up{job="moments-worker"}', lambda v: v == 1, "1", timeout_s=30)
        with Publisher(settings) as publisher:
            for event in moments("noor"):
                publisher.publish(event)
        emitted = (
            'moments_actions_emitted_total{job="moments-worker",'
            'rule="life_event_check_in",destination="care"}'
        )
        wait_for(base, emitted, lambda v: v == 1, "1", timeout_s=WAIT_S)
        consumed = 'sum(moments_events_consumed_total{job="moments-worker"})'
        wait_for(base, consumed, lambda v: v == 3, "3", timeout_s=WAIT_S)
        suppressed = 'moments_decisions_total{job="moments-worker",outcome="suppressed"}'
        (series,) = wait_for(base, suppressed, lambda v: v == 1, "1", timeout_s=WAIT_S)
        assert series["metric"]["reason"] == "cool_down"
        worker.check_alive()
        p99 = query(
            base,
            "histogram_quantile(0.99, sum by (le) ("
            'moments_event_to_action_latency_seconds_bucket{trigger="event"}))',
        )
        assert p99 and 0 < float(p99[0]["value"][1]) <= WAIT_S
