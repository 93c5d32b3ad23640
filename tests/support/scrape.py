"""Scraping a running worker's Prometheus metrics over HTTP."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from common.settings import Settings
from moments.stack import free_port
from tests.support.worker_process import WAIT_S, WorkerProcess

#: A /metrics page: each sample's value by (name, labels).
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of the worker's /metrics page, by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample `name` with exactly `labels` (0 if absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for_scrape(port: int, worker: WorkerProcess, done: Callable[[Samples], bool]) -> Samples:
    """Scrapes until `done(samples)` holds; fails after WAIT_S or if the worker died."""
    deadline = time.monotonic() + WAIT_S
    while True:
        samples = scrape(port)
        if done(samples):
            return samples
        assert time.monotonic() < deadline, f"metrics never moved; {worker.log_tail()}"
        worker.check_alive()
        time.sleep(0.5)


def metrics_settings(settings: Settings) -> Settings:
    """`settings` with a free metrics port and no idle ticks in the way."""
    return settings.replace(metrics_port=free_port(), idle_tick_s=3600.0)
