"""What the live worker is compared with on the same topic, each in a child process: an
empty Faust agent (`empty_agent`, Faust's own ceiling) and the Bytewax peers
(`moments.bench.bytewax_peer`: its own rule, and moments' engine inside Bytewax)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

from common.settings import Settings
from moments.bench.bytewax_peer import peer_unavailable
from moments.bench.context import Bench, steady_cpu_rate, steady_rate

#: The Bytewax peers: (figure, flow (MOMENTS_BENCH_PEER_FLOW), child name, what it runs).
BYTEWAX_PEERS: Final = (
    ("bytewax_events_per_s", "rule", "bytewax-peer", "fastavro decode, the omnichannel rule"),
    (
        "bytewax_engine_events_per_s",
        "engine",
        "bytewax-engine-peer",
        "moments' codec and engine (the worker's pack)",
    ),
)


def run_bytewax_peers(bench: Bench, settings: Settings, expected: int) -> dict[str, float | None]:
    """Each Bytewax peer on the same topic, one after the other (`BYTEWAX_PEERS`): figure ->
    events/s, None (with the reason in `bench.unmeasured`) for a peer that cannot run or
    failed. Never raises: a peer must not cost the worker's figures."""
    rates: dict[str, float | None] = {}
    why = peer_unavailable()
    for figure, flow, name, what in BYTEWAX_PEERS:
        rates[figure] = None
        if why is not None:
            bench.unmeasured[figure] = why
            continue
        try:
            samples = bench.run_counting_child(
                "from moments.bench.bytewax_peer import run_peer; run_peer()",
                settings,
                expected,
                name,
                {"MOMENTS_BENCH_PEER_FLOW": flow},
            )
            rates[figure] = steady_rate(samples.counts, expected)
        except Exception as exc:
            bench.unmeasured[figure] = (
                f"the Bytewax peer ({what}) failed: {type(exc).__name__}: {str(exc)[:200]} "
                f"(log: {bench.work / f'{name}.log'})"
            )
    return rates


def run_empty_agent(bench: Bench, settings: Settings, expected: int) -> tuple[float, float | None]:
    """The same topic through a Faust agent that only counts (`stream.take`): events/s and
    events per CPU second of its process."""
    samples = bench.run_counting_child(
        "from moments.bench.peers import empty_agent; empty_agent()",
        settings,
        expected,
        "empty-agent",
        {"MOMENTS_WORKER_APP_ID": f"{settings.worker.worker_app_id}-empty"},
    )
    return steady_rate(samples.counts, expected), steady_cpu_rate(samples, expected)


def empty_agent() -> None:
    """A Faust app whose agent only counts records (`stream.take`): the ceiling of Faust itself.

    It runs on what the worker runs on (uvloop, `WorkerConsumer`: the same drain loop and
    fetch wait), so the ratio compares the worker's own work, not two Faust setups.
    Run in a child process by the bench; reads the topic from MOMENTS_BENCH_TOPIC and
    writes its running count to MOMENTS_BENCH_PROGRESS.
    """
    import faust

    from processors.faust_host import WorkerConsumer, broker_urls, use_fast_event_loop

    settings = Settings()
    assert settings.kafka.bootstrap is not None
    use_fast_event_loop()  # as the worker does: the same event loop on both sides
    topic_name = os.environ["MOMENTS_BENCH_TOPIC"]
    progress = Path(os.environ["MOMENTS_BENCH_PROGRESS"])
    app = faust.App(
        settings.worker.worker_app_id,
        broker=broker_urls(settings.kafka.bootstrap),
        store="memory://",
        datadir=str(progress.parent / "empty-agent-data"),  # not the current directory
        broker_rebalance_timeout=settings.worker.broker_rebalance_timeout_s,
        broker_session_timeout=settings.worker.broker_session_timeout_s,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        web_port=settings.worker.worker_web_port,
        autodiscover=False,
        topic_partitions=settings.kafka.interactions_partitions,
    )
    app.transport.Consumer = WorkerConsumer  # type: ignore[misc]  # fresh group: from the start
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")
    counted = [0]

    @app.agent(topic)  # type: ignore[misc]
    async def count(stream: Any) -> None:
        async for batch in stream.take(5000, within=0.05):
            counted[0] += len(batch)
            progress.write_text(str(counted[0]))

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
