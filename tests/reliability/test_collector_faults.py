"""The collector under load while the broker misbehaves: every answer is the truth.

- 50 concurrent clients while the broker refuses some records (played by
  `RefusingProducer`: Tansu enforces no `max.message.bytes`): every event answered
  "accepted" is on the topic exactly once, every refused event is reported "rejected"
  to the request that sent it, and no request gets a 5xx.
- The broker stopped under load (an embedded Tansu of the test's own, restarted on the
  same port): requests get 503 with `Retry-After` (never a hang), `/healthz` keeps
  answering, memory stays bounded (the producer's queue is), and clients that resend
  what was not confirmed get everything in once the broker is back. Tansu keeps records
  in memory and loses them when it stops, so "accepted" (a delivery report received) is
  checked on the topic for every 202 given after the restart, and for the 202s before
  the stop by reading the topic while the clients pause just before it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

import producers.publisher as publisher_module
from common.settings import Settings
from common.topics import ensure_topics
from moments.stack import EmbeddedBroker, free_port
from producers.collector import collector_in_thread, collector_publisher, create_app
from schemas.codec import codec_for
from schemas.records import InteractionEvent
from tests.reliability.harness import SOAK_MARKS, Figures
from tests.support.faults import RefusingProducer
from tests.support.kafka import read_topic
from tests.support.timing import wait_for

KEY = "fault-key"
AUTH = {"X-API-Key": KEY}


def event(ident: str, customer: str) -> dict[str, Any]:
    return {
        "event_id": ident,
        "customer_id": customer,
        "channel": "web",
        "type": "inquiry",
        "occurred_at": "2026-03-02T09:14:03.000+00:00",
        "source": "fault-test",
    }


def ids_on_topic(settings: Settings, enough: int = 0) -> Counter[str]:
    codec = codec_for(InteractionEvent)
    records = read_topic(
        settings,
        [settings.topics.interactions],
        enough=lambda found: len(found) >= enough,
        timeout_s=90,
    )
    return Counter(codec.decode(m.value()).event_id for m in records)  # type: ignore[arg-type]


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    return settings.replace(api_keys=[SecretStr(KEY)])


@pytest.mark.parametrize(
    "requests_per_client",
    [pytest.param(6, id="short"), pytest.param(60, id="soak", marks=SOAK_MARKS)],
)
def test_50_clients_while_the_broker_refuses_some_records(
    requests_per_client: int,
    keyed: Settings,
    monkeypatch: pytest.MonkeyPatch,
    figures: Figures,
) -> None:
    def producer(config: dict[str, Any]) -> RefusingProducer:
        return RefusingProducer(config, lambda key: key.startswith("refuse-"))

    monkeypatch.setattr(publisher_module, "Producer", producer)
    answers: list[tuple[int, list[dict[str, Any]], list[dict[str, Any]]]] = []
    lock = threading.Lock()

    def client(number: int, url: str) -> None:
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
            for r in range(requests_per_client):
                batch = []
                for i in range(5 if r % 2 else 1):
                    refused = (number + r + i) % 4 == 0
                    customer = f"{'refuse' if refused else 'ok'}-{number}-{i}"
                    batch.append(event(f"c{number}-r{r}-e{i}-{uuid.uuid4().hex[:6]}", customer))
                response = http.post("/v1/events", json=batch if r % 2 else batch[0])
                with lock:
                    answers.append(
                        (response.status_code, response.json().get("results", []), batch)
                    )

    started = time.monotonic()
    with (
        collector_publisher(keyed) as publisher,
        collector_in_thread(create_app(keyed, publisher), port=free_port()) as url,
    ):
        threads = [threading.Thread(target=client, args=(n, url)) for n in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
    elapsed = time.monotonic() - started
    statuses = Counter(status for status, _, _ in answers)
    accepted: set[str] = set()
    wrongly: list[str] = []
    for _, results, batch in answers:
        for result, sent in zip(results, batch, strict=True):
            refused = sent["customer_id"].startswith("refuse-")
            if result["status"] == "accepted":
                accepted.add(result["event_id"])
                if refused or result["event_id"] != sent["event_id"]:
                    wrongly.append(f"{sent['event_id']} answered accepted")
            elif not refused or result["status"] != "rejected":
                wrongly.append(f"{sent['event_id']} answered {result['status']}")
    on_topic = ids_on_topic(keyed, len(accepted))
    lost = accepted - on_topic.keys()
    extra = on_topic.keys() - accepted
    duplicated = sum(n > 1 for n in on_topic.values())
    figures.update(
        requests=len(answers),
        events=sum(len(c) for _, _, c in answers),
        accepted=len(accepted),
        rejected=sum(r["status"] == "rejected" for _, rs, _ in answers for r in rs),
        lost=len(lost),
        **{"on topic, never accepted": len(extra), "duplicated": duplicated},
        **{"5xx": sum(n for s, n in statuses.items() if s >= 500)},
        **{"misattributed": len(wrongly), "events/s": round(len(accepted) / elapsed)},
    )
    # 202 when any event of a request was taken; 422 when the broker refused every one of them
    assert set(statuses) <= {202, 422}, statuses
    assert all(
        (status == 422) == all(r["status"] == "rejected" for r in results)
        for status, results, _ in answers
    )
    assert not wrongly, wrongly[:5]
    assert not lost and not extra and not duplicated


def rss_bytes() -> int:
    """This process's resident memory (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.fixture
def own_broker(tmp_path: Any) -> Iterator[EmbeddedBroker]:
    """A broker of this test only: it is stopped and restarted on the same port."""
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log")
    broker.start()
    yield broker
    broker.stop()


class Load:
    """Clients posting batches in a loop; what was not confirmed is sent again (same ids)."""

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self.statuses: Counter[int] = Counter()
        self.accepted_at: dict[str, float] = {}
        self.without_retry_after = 0
        self.running = threading.Event()
        self.running.set()
        self.stop = threading.Event()
        self.idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)
        ]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def pause(self) -> None:
        """Return once every client finished its request in flight and waits."""
        self.running.clear()
        for _ in self._threads:
            assert self.idle.acquire(timeout=60), "a client did not pause"

    def resume(self) -> None:
        self.running.set()

    def join(self) -> None:
        self.stop.set()
        self.running.set()
        for thread in self._threads:
            thread.join(60)

    def _client(self, number: int) -> None:
        pending: list[dict[str, Any]] = []
        n = 0
        with httpx.Client(base_url=self.url, headers=AUTH, timeout=60) as http:
            while not self.stop.is_set():
                if not self.running.is_set():
                    self.idle.release()
                    self.running.wait()
                    continue
                while len(pending) < 10:
                    n += 1
                    pending.append(event(f"o{number}-{n}", f"C-{number}-{n % 50}"))
                try:
                    response = http.post("/v1/events", json=pending)
                except httpx.HTTPError:
                    continue
                with self._lock:
                    self.statuses[response.status_code] += 1
                    if response.status_code == 503 and "retry-after" not in response.headers:
                        self.without_retry_after += 1
                if response.status_code not in (202, 503):
                    continue
                done = {
                    r["event_id"]: time.monotonic()
                    for r in response.json().get("results", [])
                    if r["status"] == "accepted"
                }
                with self._lock:
                    self.accepted_at.update(done)
                pending = [e for e in pending if e["event_id"] not in done]
                if response.status_code == 503:
                    time.sleep(0.2)


@pytest.mark.parametrize(
    "outage_s",
    [pytest.param(8.0, id="short"), pytest.param(30.0, id="soak", marks=SOAK_MARKS)],
)
def test_the_broker_stopped_under_load(
    outage_s: float, own_broker: EmbeddedBroker, figures: Figures
) -> None:
    settings = Settings(
        bootstrap=own_broker.bootstrap,
        api_keys=[SecretStr(KEY)],
        interactions_partitions=4,
        collector_queue_max_kbytes=2048,
        collector_message_timeout_s=3.0,
    )
    ensure_topics(settings)
    health_failures: list[str] = []
    health_worst = 0.0
    rss_start = rss_bytes()
    rss_peak = rss_start
    watching = threading.Event()

    def watch(url: str) -> None:
        nonlocal health_worst, rss_peak
        with httpx.Client(base_url=url, timeout=2.0) as http:
            while not watching.is_set():
                asked = time.monotonic()
                try:
                    if http.get("/healthz").status_code != 200:
                        health_failures.append("status")
                except httpx.HTTPError as exc:
                    health_failures.append(type(exc).__name__)
                health_worst = max(health_worst, time.monotonic() - asked)
                rss_peak = max(rss_peak, rss_bytes())
                time.sleep(0.2)

    with (
        collector_publisher(settings) as publisher,
        collector_in_thread(
            create_app(settings, publisher, ack_timeout_s=5.0), port=free_port()
        ) as url,
    ):
        watcher = threading.Thread(target=watch, args=(url,), daemon=True)
        watcher.start()
        load = Load(url, clients=8).start()
        time.sleep(3)
        load.pause()
        before = set(load.accepted_at)
        seen_before = ids_on_topic(settings, len(before))
        own_broker.stop()
        stopped = time.monotonic()
        load.resume()
        time.sleep(outage_s)
        during = dict(load.statuses)
        own_broker.start()
        ensure_topics(settings)  # memory storage: the topics went with the broker
        restarted = time.monotonic()
        wait_for(
            lambda: any(at > restarted for at in load.accepted_at.values()),
            120,
            "the collector to accept events again",
            describe=lambda: f"answers so far {dict(load.statuses)}",
        )
        recovered_s = min(at for at in load.accepted_at.values() if at > restarted) - restarted
        time.sleep(3)
        load.join()
        watching.set()
        watcher.join(10)
    after = {ident for ident, at in load.accepted_at.items() if at > stopped}
    seen_after = ids_on_topic(settings, len(after))
    lost = (before - seen_before.keys()) | (after - seen_after.keys())
    duplicated = sum(n > 1 for n in seen_before.values()) + sum(n > 1 for n in seen_after.values())
    figures.update(
        **{
            "outage s": outage_s,
            "accepted before stop": len(before),
            "accepted after stop": len(after),
            "lost": len(lost),
            "duplicated": duplicated,
            "503 during outage": during.get(503, 0),
            "503 without Retry-After": load.without_retry_after,
            "other 5xx": sum(n for s, n in load.statuses.items() if s >= 500 and s != 503),
            "healthz failures": len(health_failures),
            "healthz worst s": round(health_worst, 2),
            "rss growth MB": round((rss_peak - rss_start) / 2**20, 1),
            "time to recover s": round(recovered_s, 1),
        }
    )
    assert during.get(503, 0) > 0
    assert load.without_retry_after == 0
    assert not health_failures, health_failures[:5]
    assert not lost, sorted(lost)[:5]
    assert rss_peak - rss_start < 300 * 2**20
    assert set(load.statuses) <= {202, 503}, load.statuses
