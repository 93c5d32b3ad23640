"""Real peers for `moments bench`: Bytewax dataflows on the worker's topic.

The live worker is compared with a Python stream processor a user could pick
instead, in two configurations, each a Bytewax dataflow (one worker, run in a
child process by the bench) reading the same `interactions` topic from the
beginning:

- `build_flow` (`bytewax_events_per_s`): each Avro event decoded with plain
  fastavro and the omnichannel count rule run per customer (>= 3 contacts in
  72 h over >= 2 channels, cool-down 7 d, in event time), keyed on customer_id
  with Bytewax's own per-key state: Bytewax doing comparable work its own way;
- `build_engine_flow` (`bytewax_engine_events_per_s`): moments' own codec and
  engine (`processors.engine.Engine`, the worker's rule pack and engine
  settings, decisions made) inside the dataflow, keyed on the Kafka partition
  with one engine state per partition, as the worker keeps them. The engine's
  output is counted, not produced. Beside the first, it says what the engine
  costs on that host; beside the worker, what the worker's host (Faust, the
  output producer) costs around the same engine.

Each sink counts the events and writes the running count to a file the bench
samples. Bytewax is optional (the bench extra; `make bench`);
`peer_unavailable()` says why it cannot run. Only the bench imports this module.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Final

import schemas
from common.settings import Settings
from processors.config import engine_config
from processors.engine import DictStore, Engine, load_rule_pack
from schemas.codec import codec_for
from schemas.errors import DecodeError
from schemas.records import InteractionEvent

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


class EngineStep:
    """moments' engine as a Bytewax `stateful_map` step keyed on the Kafka partition: the
    state is the partition's `DictStore` (its watermark and every customer's state, as the
    worker keeps one state per partition); the step's value, the actions the event made."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, store: DictStore | None, event: InteractionEvent) -> tuple[DictStore, int]:
        if store is None:
            store = DictStore()
        return store, len(self.engine.process(store, event).actions)


def keyed_event(
    decode: Any, partition: int | None, value: bytes | None
) -> tuple[str, InteractionEvent] | None:
    """(partition as the key, event) of one record, decoded with `decode` (moments' codec);
    None for the worker's idle ticks (empty records) and for records the worker would send
    to the dead-letter topic (undecodable or breaking the contract)."""
    if not value:
        return None
    try:
        event: InteractionEvent = decode(value)
    except DecodeError:
        return None
    return str(partition or 0), event


def _source(bootstrap: str, topic: str) -> Any:
    """The topic from its beginning, read as the peers' consumers read (`CONSUMER_CONFIG`)."""
    from bytewax.connectors.kafka import KafkaSource
    from confluent_kafka import OFFSET_BEGINNING

    return KafkaSource(
        [bootstrap],
        [topic],
        tail=True,
        starting_offset=OFFSET_BEGINNING,
        add_config=dict(CONSUMER_CONFIG),
    )


def _counting_sink(progress: Path) -> Any:
    """A sink counting items (key, value) and the sum of their values (rules fired, or
    actions made), written as "count sum" to `progress` after every batch."""
    from bytewax.outputs import DynamicSink, StatelessSinkPartition

    class Counter(StatelessSinkPartition[Any]):
        def __init__(self) -> None:
            self.count = 0
            self.total = 0

        def write_batch(self, items: list[Any]) -> None:
            self.count += len(items)
            self.total += sum(int(value) for _, value in items)
            progress.write_text(f"{self.count} {self.total}")  # every batch: the last one counts

        def close(self) -> None:
            progress.write_text(f"{self.count} {self.total}")

    class CountingSink(DynamicSink[Any]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Counter:
            return Counter()

    return CountingSink()


def build_flow(bootstrap: str, topic: str, progress: Path) -> Any:
    """The dataflow: Kafka -> fastavro decode -> key on customer -> omnichannel -> count."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
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

    flow = Dataflow("moments-bench-peer")
    messages = op.input("kafka", flow, _source(bootstrap, topic))
    events = op.filter_map("decode", messages, decode)
    keyed = op.key_on("customer", events, lambda event: str(event["customer_id"]))
    decided = op.stateful_map("omnichannel", keyed, omnichannel)
    op.output("count", decided, _counting_sink(progress))
    return flow


def build_engine_flow(settings: Settings, topic: str, progress: Path) -> Any:
    """The dataflow: Kafka -> moments' codec -> key on partition -> moments' engine -> count."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow

    assert settings.kafka.bootstrap is not None
    decode = codec_for(InteractionEvent, settings.kafka.schema_registry_url).decode
    # the worker's pack and engine settings; decisions made, as the worker makes them
    step = EngineStep(Engine(load_rule_pack(settings.engine.rules_path), engine_config(settings)))
    flow = Dataflow("moments-bench-engine-peer")
    messages = op.input("kafka", flow, _source(settings.kafka.bootstrap, topic))
    keyed = op.filter_map(
        "decode", messages, lambda message: keyed_event(decode, message.partition, message.value)
    )
    acted = op.stateful_map("engine", keyed, step)
    op.output("count", acted, _counting_sink(progress))
    return flow


#: The longest a peer child runs (the bench stops it far sooner: this bounds one whose
#: parent died without stopping it).
PEER_MAX_SECONDS: Final = 900.0


def _end_with_parent(limit_s: float) -> None:
    """End this process when the process that started it is gone, or after `limit_s`."""
    parent = os.getppid()
    ends = time.monotonic() + limit_s

    def watch() -> None:
        while os.getppid() == parent and time.monotonic() < ends:
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def run_peer() -> None:
    """Child-process entry point: run a flow on MOMENTS_BENCH_TOPIC until terminated
    (MOMENTS_BENCH_PEER_FLOW "engine": `build_engine_flow`, else `build_flow`)."""
    from bytewax.testing import run_main

    _end_with_parent(PEER_MAX_SECONDS)
    settings = Settings()
    assert settings.kafka.bootstrap is not None
    progress = Path(os.environ["MOMENTS_BENCH_PROGRESS"])
    topic = os.environ["MOMENTS_BENCH_TOPIC"]
    if os.environ.get("MOMENTS_BENCH_PEER_FLOW") == "engine":
        run_main(build_engine_flow(settings, topic, progress))
    else:
        run_main(build_flow(settings.kafka.bootstrap, topic, progress))
