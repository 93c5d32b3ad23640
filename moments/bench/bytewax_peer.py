"""A real peer for `moments bench`: Bytewax doing comparable work on the worker's topic.

The live worker is compared with a Python stream processor a user could pick
instead: a Bytewax dataflow (one worker, run in a child process by the bench)
reads the same `interactions` topic from the beginning, decodes each Avro
event with plain fastavro and runs the omnichannel count rule per customer
(>= 3 contacts in 72 h over >= 2 channels, cool-down 7 d, in event time),
keyed on customer_id with Bytewax's own per-key state. Its sink counts the
events and writes the running count to a file the bench samples.

Bytewax is optional (the bench extra; `make bench`); `peer_unavailable()`
says why it cannot run. Only the bench imports this module.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
from collections import deque
from pathlib import Path
from typing import Any, Final

import schemas
from common.settings import Settings

CONTACTS: Final = frozenset(
    {"inquiry", "complaint_filed", "dispute_opened", "cancellation_requested"}
)
WINDOW_MS: Final = 72 * 3_600_000
COOL_DOWN_MS: Final = 7 * 86_400_000
MIN_CONTACTS: Final = 3
MIN_CHANNELS: Final = 2


def peer_unavailable() -> str | None:
    """Why the Bytewax peer cannot run here, or None when it can."""
    if importlib.util.find_spec("bytewax") is None:
        return (
            "bytewax is not installed: it is in the bench extra "
            "(make bench, or pip install -e '.[bench]'; wheels for CPython 3.8-3.12)"
        )
    return None


class OmnichannelState:
    """One customer's recent contacts (event time, channel) and when the rule last fired."""

    __slots__ = ("contacts", "last_fired")

    def __init__(self) -> None:
        self.contacts: deque[tuple[int, str]] = deque()
        self.last_fired: int | None = None


def omnichannel(state: OmnichannelState | None, event: dict[str, Any]) -> tuple[Any, bool]:
    """The omnichannel escalation rule for one event of one customer: (state, fired)."""
    if state is None:
        state = OmnichannelState()
    if event["type"] not in CONTACTS:
        return state, False
    at = event["occurred_at"]
    # fastavro gives timestamp-millis as an aware datetime
    at_ms = at if isinstance(at, int) else int(at.timestamp() * 1000)
    contacts = state.contacts
    contacts.append((at_ms, event["channel"]))
    while contacts and contacts[0][0] < at_ms - WINDOW_MS:
        contacts.popleft()
    fired = (
        len(contacts) >= MIN_CONTACTS
        and len({channel for _, channel in contacts}) >= MIN_CHANNELS
        and (state.last_fired is None or at_ms - state.last_fired >= COOL_DOWN_MS)
    )
    if fired:
        state.last_fired = at_ms
    return state, fired


def avro_body(value: bytes | None) -> bytes | None:
    """The Avro body of a record after single-object (C3 01 + 8) or Confluent (00 + 4)
    framing; None for anything else (the worker's idle ticks are empty records)."""
    if not value:
        return None
    if value[:2] == b"\xc3\x01":
        return value[10:]
    if value[:1] == b"\x00":
        return value[5:]
    return None


#: librdkafka options of the peer's consumers: fetches wait as briefly as the worker's do
#: (librdkafka's default 500 ms, with Tansu answering one batch per fetch, starves it).
CONSUMER_CONFIG: Final = {
    "fetch.wait.max.ms": "50",
    "fetch.max.bytes": str(64 * 1024 * 1024),
    "max.partition.fetch.bytes": str(8 * 1024 * 1024),
}


def build_flow(bootstrap: str, topic: str, progress: Path) -> Any:
    """The dataflow: Kafka -> fastavro decode -> key on customer -> omnichannel -> count."""
    import bytewax.operators as op
    from bytewax.connectors.kafka import KafkaSource
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from confluent_kafka import OFFSET_BEGINNING
    from fastavro import parse_schema, schemaless_reader

    avsc = Path(schemas.__file__).parent / "interaction_event.avsc"
    schema = parse_schema(json.loads(avsc.read_text()))

    def decode(message: Any) -> dict[str, Any] | None:
        body = avro_body(message.value)
        if body is None:  # an idle tick: the worker skips it too
            return None
        record: dict[str, Any] = schemaless_reader(  # type: ignore[assignment]
            io.BytesIO(body), schema, None
        )
        return record

    class Counter(StatelessSinkPartition[Any]):
        def __init__(self) -> None:
            self.count = 0
            self.fired = 0

        def write_batch(self, items: list[Any]) -> None:
            self.count += len(items)
            self.fired += sum(1 for _, fired in items if fired)
            progress.write_text(f"{self.count} {self.fired}")  # every batch: the last one counts

        def close(self) -> None:
            progress.write_text(f"{self.count} {self.fired}")

    class CountingSink(DynamicSink[Any]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Counter:
            return Counter()

    flow = Dataflow("moments-bench-peer")
    messages = op.input(
        "kafka",
        flow,
        KafkaSource(
            [bootstrap],
            [topic],
            tail=True,
            starting_offset=OFFSET_BEGINNING,
            add_config=dict(CONSUMER_CONFIG),
        ),
    )
    events = op.filter_map("decode", messages, decode)
    keyed = op.key_on("customer", events, lambda event: str(event["customer_id"]))
    decided = op.stateful_map("omnichannel", keyed, omnichannel)
    op.output("count", decided, CountingSink())
    return flow


def run_peer() -> None:
    """Child-process entry point: run the flow on MOMENTS_BENCH_TOPIC until terminated."""
    from bytewax.testing import run_main

    settings = Settings()
    assert settings.kafka.bootstrap is not None
    progress = Path(os.environ["MOMENTS_BENCH_PROGRESS"])
    run_main(build_flow(settings.kafka.bootstrap, os.environ["MOMENTS_BENCH_TOPIC"], progress))
