"""The recovery fence on a real Tansu broker: `auto` detects that Tansu needs it, `off` writes none.

Tansu 0.6.0 reports a partition's high watermark at its last batch's base offset + 1,
so the worker fences its changelog before recovery (`processors.faust_host.recovery`).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from common.settings import Settings
from processors.faust_host.recovery import PROBE_RECORDS
from producers.publisher import Publisher
from tests.support.kafka import read_topic
from tests.support.worker_process import (
    WAIT_S,
    TopicReader,
    decisions_in,
    event,
    running_worker,
)
from tests.support.worker_state import changelog_topic

FENCE = b'"~fence"'  # FENCE_KEY as the table's JSON key


def fences_after_one_event(settings: Settings, tmp_path: Path) -> tuple[int, int]:
    """Run the worker until it decided on one event; (fence records, other records) in its
    changelog. Feedback is decided as it arrives (route_feedback), with no later event."""
    reader = TopicReader(settings, [settings.topics.decisions])
    with running_worker(settings, tmp_path / "worker.log") as worker:
        with Publisher(settings) as publisher:
            now = int(time.time() * 1000)
            publisher.publish(event("ann", "feedback_given", now, channel="web", text="Thanks"))
        reader.poll_until(
            lambda ms: len(decisions_in(ms, settings.topics.decisions)) >= 1, worker, WAIT_S
        )
        assert worker.stop() == 0, worker.log_tail()  # the commit sends the changelog
    reader.close()
    records = read_topic(settings, [changelog_topic(settings)], quiet_s=1.5)
    fences = sum(1 for m in records if m.key() == FENCE)
    return fences, len(records) - fences


@pytest.mark.parametrize(
    ("mode", "fences"),
    [
        # the probe's records, then one fence per changelog partition recovered
        ("auto", PROBE_RECORDS + 4),
        ("on", 4),
        ("off", 0),
    ],
)
def test_the_fence_is_written_only_where_asked_or_detected(
    settings: Settings, tmp_path: Path, mode: str, fences: int
) -> None:
    settings = settings.replace(broker_fence=mode)
    found, state = fences_after_one_event(settings, tmp_path)
    assert found == fences
    assert state > 0  # the changelog itself was written
