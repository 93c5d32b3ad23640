"""What both sinks do the same way around their consume loops.

The PostgreSQL sink (batches, one database transaction, then the offsets) and
the webhook sink (one lane per partition, offsets of delivered records) keep
their own loops: what "durable" means differs. They share here how they stop
(SIGTERM/SIGINT), the consumer options of a sink's group, how they report
consumer lag, and how they treat an error event from the consumer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import KafkaError, Message

from moments.metrics import CONSUMER_LAG
from moments.settings import Settings

log = logging.getLogger(__name__)

#: How often librdkafka reports statistics (the consumer lag gauge).
STATS_INTERVAL_MS = 5000


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """In the main thread, SIGTERM and SIGINT set `stop` (the loop then finishes and exits);
    elsewhere the caller owns `stop`. The previous handlers come back on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.getsignal(sig) for sig in handled}
    for sig in handled:
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def consumer_config(
    settings: Settings, group: str, on_stats: Callable[[str], None], **extra: Any
) -> dict[str, Any]:
    """Consumer options of a sink: its group, offsets committed by the sink only (after the
    records' effects are durable), from the earliest record, statistics for the lag gauge."""
    return settings.kafka_config(
        **{
            "group.id": group,
            "session.timeout.ms": int(settings.broker_session_timeout_s * 1000),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "statistics.interval.ms": STATS_INTERVAL_MS,
            "stats_cb": on_stats,
            **extra,
        }
    )


def report_lag(
    stats_json: str, group: str, owned: Callable[[str, int], bool] | None = None
) -> None:
    """Set `moments_consumer_lag` from librdkafka statistics, for the partitions `owned`
    accepts (all when None). Statistics that do not parse are ignored."""
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        stats = json.loads(stats_json)
        for topic, topic_stats in stats.get("topics", {}).items():
            for partition, p in topic_stats.get("partitions", {}).items():
                lag = p.get("consumer_lag", -1)
                if partition == "-1" or not isinstance(lag, int) or lag < 0:
                    continue
                if owned is None or owned(topic, int(partition)):
                    CONSUMER_LAG.labels(group, topic, partition).set(lag)


def is_error_event(message: Message) -> bool:
    """Whether a consumed message is an error event rather than a record (logged unless it
    only says a partition reached its end)."""
    error = message.error()
    if error is None:
        return False
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer error: %s", error)
    return True
