"""The recovery fence only where the broker needs it: `on`, `off`, and `auto`'s probe."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from common.settings import Settings
from processors.faust_host.recovery import (
    FENCE_KEY,
    PROBE_RECORDS,
    FencingRecovery,
    FencingTableManager,
)
from processors.worker import TriggerWorker

CHANGELOG = "app-engine-state-changelog"
TPS = {TP(CHANGELOG, 1), TP(CHANGELOG, 0)}


class Broker:
    """One changelog partition's log: records come in batches; the high watermark is the
    next offset (Apache Kafka) or the last batch's base offset + 1 (Tansu 0.6.0)."""

    def __init__(self, tansu: bool) -> None:
        self.tansu = tansu
        self.offset = 10  # records already in the log
        self.base = 9
        self.open: list[asyncio.Future[Any]] = []
        self.sent: list[tuple[Any, Any, int]] = []

    async def send(self, *, key: Any, value: Any, partition: int, value_serializer: str) -> Any:
        self.sent.append((key, value, partition))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.open.append(future)
        return future

    async def flush(self) -> None:
        """The open records go out as one batch."""
        if self.open:
            self.base = self.offset
        for future in self.open:
            future.set_result(SimpleNamespace(offset=self.offset))
            self.offset += 1
        self.open.clear()

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.base + 1 if self.tansu else self.offset for tp in tps}


def recovery(broker: Broker, mode: str) -> Any:
    """What `FencingRecovery` reads: its tables (fence mode, changelogs) and the producer."""
    table = SimpleNamespace(changelog_topic=broker)
    return SimpleNamespace(
        needs_fence=None,
        tables=SimpleNamespace(fence_mode=mode, _changelogs={CHANGELOG: table}),
        app=SimpleNamespace(producer=broker),
    )


def fence_needed(fake: Any, broker: Broker) -> bool:
    result: bool = asyncio.run(FencingRecovery.fence_needed(fake, broker, TPS))  # type: ignore[arg-type]
    return result


@pytest.mark.parametrize(("mode", "fenced"), [("on", True), ("off", False)])
def test_on_and_off_decide_without_a_probe(mode: str, fenced: bool) -> None:
    broker = Broker(tansu=True)
    fake = recovery(broker, mode)
    assert fence_needed(fake, broker) is fenced
    assert broker.sent == []


@pytest.mark.parametrize(("tansu", "fenced"), [(True, True), (False, False)])
def test_auto_probes_once_with_a_batch_and_fences_a_broker_whose_high_watermark_lags(
    tansu: bool, fenced: bool
) -> None:
    broker = Broker(tansu=tansu)
    fake = recovery(broker, "auto")
    assert fence_needed(fake, broker) is fenced
    assert broker.sent == [(FENCE_KEY, None, 0)] * PROBE_RECORDS  # the lowest partition
    assert fence_needed(fake, broker) is fenced  # decided: no second probe
    assert len(broker.sent) == PROBE_RECORDS


def test_the_worker_hands_its_setting_to_the_table_manager(tmp_path: Any) -> None:
    for mode in ("auto", "on", "off"):
        settings = Settings(bootstrap="127.0.0.1:9", data_dir=tmp_path, broker_fence=mode)
        tables = TriggerWorker(settings).app.tables
        assert isinstance(tables, FencingTableManager)
        assert tables.fence_mode == mode


def test_the_embedded_stack_says_it_runs_tansu(monkeypatch: pytest.MonkeyPatch) -> None:
    from moments import stack

    class Started(stack.EmbeddedBroker):
        def start(self, timeout_s: float = 20.0) -> str:
            return "127.0.0.1:1"

        def stop(self) -> None:
            pass

    monkeypatch.setattr(stack, "EmbeddedBroker", Started)
    with stack.local_stack(Settings(), database=False) as embedded:
        assert embedded.kafka.broker_fence == "on"
    with stack.local_stack(Settings(broker_fence="off"), database=False) as embedded:
        assert embedded.kafka.broker_fence == "off"  # said explicitly: kept
    with stack.local_stack(Settings(bootstrap="kafka:9092"), database=False) as external:
        assert external.kafka.broker_fence == "auto"  # another broker: probed by the worker
