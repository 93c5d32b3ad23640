"""What both sinks share around their consume loops (`sinks.consume`)."""

from __future__ import annotations

import json
import os
import signal
import threading

from confluent_kafka import KafkaError

from moments.metrics import CONSUMER_LAG
from moments.settings import Settings
from sinks.consume import consumer_config, is_error_event, report_lag, stop_on_signals


def _partitions(group: str) -> set[tuple[str, str]]:
    return {
        (s.labels["topic"], s.labels["partition"])
        for metric in CONSUMER_LAG.collect()
        for s in metric.samples
        if s.labels["group"] == group
    }


def test_lag_is_reported_for_the_partitions_a_sink_owns_only() -> None:
    stats = {
        "topics": {
            "a": {"partitions": {"0": {"consumer_lag": 3}, "1": {"consumer_lag": 9}}},
            "b": {"partitions": {"0": {"consumer_lag": 4}, "-1": {"consumer_lag": 1}}},
        }
    }
    report_lag(json.dumps(stats), "g-owned", lambda topic, partition: partition == 0)
    assert _partitions("g-owned") == {("a", "0"), ("b", "0")}
    assert CONSUMER_LAG.labels("g-owned", "b", "0")._value.get() == 4
    report_lag("not json", "g-owned")  # ignored, no exception
    report_lag(json.dumps({"topics": []}), "g-owned")


def test_the_consumer_of_a_sink_commits_nothing_by_itself() -> None:
    settings = Settings(bootstrap="127.0.0.1:1", broker_session_timeout_s=12)
    config = consumer_config(settings, "g", print, **{"max.poll.interval.ms": 99})
    assert config["enable.auto.commit"] is False
    assert (config["group.id"], config["session.timeout.ms"]) == ("g", 12_000)
    assert config["max.poll.interval.ms"] == 99


class _Event:
    def __init__(self, code: int | None) -> None:
        self.code = code

    def error(self) -> KafkaError | None:
        return None if self.code is None else KafkaError(self.code)


def test_error_events_are_not_records() -> None:
    assert is_error_event(_Event(KafkaError._PARTITION_EOF))  # type: ignore[arg-type]
    assert is_error_event(_Event(KafkaError._TRANSPORT))  # type: ignore[arg-type]
    assert not is_error_event(_Event(None))  # type: ignore[arg-type]


def test_sigterm_sets_stop_and_the_previous_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    stop = threading.Event()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    assert signal.getsignal(signal.SIGTERM) is before
