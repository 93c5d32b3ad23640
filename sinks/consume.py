"""The one consume loop of the sinks: what happens to a record before and after its effect.

The PostgreSQL sink writes batches, the webhook sink delivers each record on a
lane per partition; what "durable" means is theirs (an `Effect`). Everything
around it is the same and lives here, in `ConsumeLoop`:

- stopping on SIGTERM/SIGINT (`stop_on_signals`) or a caller's event, after
  finishing what the effect can finish;
- the consumer of the sink's group, offsets committed by the loop only;
- `moments_consumer_lag` of the assigned partitions (`report_lag`);
- error events and control records (`moments.control`: idle ticks) skipped;
  on `interactions` also the records the worker refuses (it owns
  `interactions.dlq`, `schemas.wire.classify`);
- erasures (docs/design.md 10.1): the erasure registry (`common.erasures`) is
  loaded before the first record and followed; a record of an erased customer
  dated before their erasure is dropped, whatever the group and wherever it
  starts reading. An erasure record on `interactions` or an erasure marker on
  an output topic goes to the effect's `forget`, in offset order with the
  records around it: the effect deletes what it holds of the customer from
  that topic, and reports the marker durable once that is;
- decoding per topic (`Route`); an undecodable record goes to its topic's
  dead-letter topic with `moments.error.*` headers (`sinks.dead_letters`);
- commit only after durable effects: `Offsets` commits a partition up to its
  first record whose effect (or dead letter) is not durable yet, whatever the
  order effects finish in;
- pausing the partitions the effect cannot take more of, and on a rebalance,
  letting the effect finish or drop its work on the revoked partitions before
  committing what is durable.

It never commits an offset past a record whose effect is not durable, and
never drops a record silently: skipped records are control records or belong
to another process's dead-letter topic, and are logged at debug level.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from common.erasures import ErasureRegistry, record_timestamp
from common.metrics import CONSUMER_LAG, serve_metrics
from common.settings import Settings
from schemas.codec import DecodeError
from schemas.wire import FORGET, RecordKind, classify, control_value, erased_at_of
from sinks.dead_letters import DeadLetters

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
            "session.timeout.ms": int(settings.worker.broker_session_timeout_s * 1000),
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


#: A topic and partition.
TP = tuple[str, int]
#: How often the loop commits the offsets that became durable.
COMMIT_INTERVAL_S = 0.5
#: The longest the loop stays inside librdkafka, so that a stop is seen promptly.
POLL_S = 0.5
#: How long a rebalance or a stop waits for the dead letters already sent.
DEAD_LETTER_WAIT_S = 10.0


def retry_until(
    what: str,
    attempt: Callable[[], object],
    give_up: Callable[[], bool],
    errors: tuple[type[BaseException], ...],
    max_backoff_s: float = 5.0,
) -> bool:
    """Call `attempt` until it succeeds (True) or, after a failure, `give_up()` turns true
    (False: nothing was done, the records will be redelivered). Capped exponential backoff."""
    backoff = 0.1
    while True:
        try:
            attempt()
            return True
        except errors as exc:
            problem = exc
            if not give_up():
                log.warning("cannot %s, retrying in %.1f s: %s", what, backoff, exc)
        deadline = time.monotonic() + backoff
        while not give_up():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.05))
        else:
            log.warning(
                "stopping without being able to %s (%s); offsets not committed, "
                "the records will be redelivered",
                what,
                problem,
            )
            return False
        backoff = min(backoff * 2, max_backoff_s)


class Offsets:
    """Per partition, the offsets taken and not yet durable, and the next offset to commit.

    Effects finish in any order (lanes, batches, dead letters); a partition may be
    committed up to its first record that is not done.
    """

    def __init__(self) -> None:
        self._taken: dict[TP, deque[int]] = {}
        self._done: dict[TP, set[int]] = {}
        self._last: dict[TP, int] = {}
        self._next: dict[TP, int] = {}

    def take(self, tp: TP, offset: int) -> bool:
        """Track a record; False when it was taken already (fetched again after a pause)."""
        if offset <= self._last.get(tp, -1):
            return False
        self._last[tp] = offset
        taken = self._taken.get(tp)
        if taken is None:
            taken = self._taken[tp] = deque()
        taken.append(offset)
        return True

    def done(self, tp: TP, offsets: Iterable[int]) -> None:
        """These records of `tp` are durable (ignored when `tp` was revoked meanwhile)."""
        taken = self._taken.get(tp)
        if taken is None:
            return
        finished = self._done.setdefault(tp, set())
        for offset in offsets:
            if taken and taken[0] == offset:
                taken.popleft()
                self._next[tp] = offset + 1
            else:
                finished.add(offset)
        while taken and taken[0] in finished:
            offset = taken.popleft()
            finished.discard(offset)
            self._next[tp] = offset + 1

    def committable(self, tps: Collection[TP] | None = None) -> dict[TP, int]:
        """The offsets to commit (next record to read, per partition) not committed yet."""
        return {tp: o for tp, o in self._next.items() if tps is None or tp in tps}

    def committed(self, offsets: dict[TP, int]) -> None:
        for tp, offset in offsets.items():
            if self._next.get(tp) == offset:
                del self._next[tp]

    def unfinished(self, tp: TP) -> int:
        """Records of `tp` taken and not durable yet."""
        return len(self._taken.get(tp, ()))

    def forget(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self._taken.pop(tp, None)
            self._done.pop(tp, None)
            self._last.pop(tp, None)
            self._next.pop(tp, None)


@dataclass(frozen=True, slots=True)
class Route:
    """How the loop reads one topic: the decoder of its records, and the dead-letter topic of
    those that do not decode (None: skipped, another process dead-letters them)."""

    decode: Callable[[bytes], Any]
    dlq: str | None


class Progress:
    """How an effect reports, from any thread: records durable, or a bug that stops the sink."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[TP, Iterable[int]] | BaseException] = (
            queue.SimpleQueue()
        )
        #: The first bug an effect reported (the loop raises it).
        self.error: BaseException | None = None

    def done(self, tp: TP, offsets: Iterable[int]) -> None:
        """The effects of these records of `tp` are durable: their offsets may be committed."""
        self._queue.put((tp, offsets))

    def failed(self, exc: BaseException) -> None:
        """A bug in the effect: the sink stops, leaving the record uncommitted."""
        self._queue.put(exc)

    def drain(self, offsets: Offsets) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, BaseException):
                if self.error is None:
                    self.error = item
            else:
                offsets.done(*item)


class Effect(Protocol):
    """What a sink does with its decoded records; the rest is the loop's (module docstring)."""

    def start(self, progress: Progress, dead_letters: DeadLetters) -> bool:
        """Before the first record: where to report durable records and send dead letters.
        False: stopped before it could start (nothing is consumed)."""

    def take(self, record: Any, message: Message) -> None:
        """A decoded record, in offset order per partition; `progress.done` once durable."""

    def forget(self, customer_id: str, erased_at_ms: int, message: Message) -> None:
        """An erasure record or marker of `message.topic()`, in offset order: delete what came
        of that topic for the customer before it; `progress.done` once that is durable."""

    def tick(self) -> None:
        """After each poll of the consumer, in the loop's thread."""

    def room(self) -> int:
        """How many records the next poll may return."""

    def poll_timeout(self) -> float:
        """How long the next poll may wait for records."""

    def held(self, assigned: Collection[TP], paused: Collection[TP]) -> set[TP]:
        """The partitions to keep paused (the effect cannot take more of them now)."""

    def revoke(self, partitions: Collection[TP]) -> None:
        """Before partitions go: make their work durable if it can be now, else drop it (it is
        read again from the committed offsets). Returns once nothing runs on them."""

    def close(self) -> None:
        """On stop: finish what can be finished without waiting out an outage; release."""


class ConsumeLoop:
    """One running sink: the consumer of its group, its dead letters and its effect."""

    def __init__(
        self,
        settings: Settings,
        group: str,
        routes: dict[str, Route],
        effect: Effect,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.group = group
        self.routes = routes
        self.effect = effect
        self.stop = stop
        self.offsets = Offsets()
        self.progress = Progress()
        self._events_topic = settings.topics.interactions
        self._dead_letters: DeadLetters | None = None
        self._consumer: Consumer | None = None
        self._assigned: set[TP] = set()
        self._paused: set[TP] = set()
        #: The erased customers (loaded by `run`; None: no registry, nothing dropped).
        self.registry: ErasureRegistry | None = None

    @property
    def topics(self) -> list[str]:
        return list(self.routes)

    def run(self) -> None:
        """Consume until `stop` is set; then finish, commit what is durable and close."""
        settings = self.settings
        self._dead_letters = dead_letters = DeadLetters(settings)
        self.registry = registry = ErasureRegistry(settings).load()
        if not self.effect.start(self.progress, dead_letters):
            registry.close()
            return
        session_ms = int(settings.worker.broker_session_timeout_s * 1000)
        self._consumer = consumer = Consumer(
            consumer_config(
                settings,
                self.group,
                self._on_stats,
                **{
                    # A group join takes about half the session timeout on Tansu.
                    "heartbeat.interval.ms": max(100, min(3000, session_ms // 3)),
                    # librdkafka sends this as the group's rebalance timeout; the loop polls
                    # every few hundred ms, the effects do the slow work in their threads.
                    "max.poll.interval.ms": max(
                        session_ms, int(settings.worker.broker_rebalance_timeout_s * 1000)
                    ),
                    "enable.auto.offset.store": False,
                },
            )
        )
        consumer.subscribe(
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        last_commit = time.monotonic()
        try:
            while not self.stop.is_set():
                timeout = min(POLL_S, self.effect.poll_timeout())
                for message in consumer.consume(self.effect.room(), timeout):
                    self._read(message)
                self._settle()
                registry.poll()
                self.effect.tick()
                self._hold()
                if time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                    self._commit()
                    last_commit = time.monotonic()
        finally:
            try:
                self.effect.close()
                dead_letters.flush(DEAD_LETTER_WAIT_S)
                self.progress.drain(self.offsets)
                self._commit()
            finally:
                with contextlib.suppress(KafkaException, RuntimeError):
                    consumer.close()
                with contextlib.suppress(KafkaException, RuntimeError):
                    registry.close()
                self._consumer = None

    # -- records

    def _read(self, message: Message) -> None:
        if is_error_event(message):
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            return
        tp = (topic, partition)
        if not self.offsets.take(tp, offset):
            return
        value = message.value()
        headers = message.headers()
        if headers and control_value(headers) == FORGET:
            self._forget(message, tp, offset)
            return
        if self.registry is not None and self.registry.drops(
            message.key(), record_timestamp(message)
        ):
            log.debug("%s[%s]@%s skipped: its customer was erased since", topic, partition, offset)
            self.offsets.done(tp, (offset,))
            return
        if self._skipped(topic, headers, value):
            self.offsets.done(tp, (offset,))
            return
        route = self.routes[topic]
        try:
            if value is None:
                raise DecodeError("empty message (tombstone)")
            record = route.decode(value)
        except Exception as exc:  # whatever a producer sent, it never stops a sink
            self._undecodable(message, tp, offset, route, exc)
            return
        self.effect.take(record, message)

    def _forget(self, message: Message, tp: TP, offset: int) -> None:
        """An erasure record or marker: the effect deletes; one without a key is skipped."""
        key = message.key()
        if not key:
            log.warning("%s[%s]@%s: erasure without a key skipped", tp[0], tp[1], offset)
            self.offsets.done(tp, (offset,))
            return
        erased_at = erased_at_of(message.headers())
        if erased_at is None:  # an erasure record of `moments forget` before markers
            erased_at = record_timestamp(message) or 0
        self.effect.forget(key.decode("utf-8", errors="replace"), erased_at, message)

    def _skipped(self, topic: str, headers: Any, value: bytes | None) -> bool:
        """Control records, and on `interactions` the records the worker refuses."""
        if topic == self._events_topic:
            kind = classify(headers, value, self.settings.engine.max_event_bytes)
        elif headers and control_value(headers) is not None:
            kind = RecordKind.CONTROL
        else:
            return False
        if kind is RecordKind.EVENT:
            return False
        log.debug("%s: %s record skipped", topic, kind.value)
        return True

    def _undecodable(
        self, message: Message, tp: TP, offset: int, route: Route, exc: Exception
    ) -> None:
        if route.dlq is None:
            log.debug(
                "%s[%s]@%s skipped (its dead letter is another process's): %s",
                tp[0],
                tp[1],
                offset,
                type(exc).__name__,
            )
            self.offsets.done(tp, (offset,))
            return
        assert self._dead_letters is not None
        progress = self.progress
        self._dead_letters.send(
            route.dlq,
            message.key(),
            message.value(),
            message.headers(),
            (str(getattr(exc, "stage", "decode")), type(exc).__name__, str(exc)),
            (tp[0], tp[1], offset),
            on_acked=lambda: progress.done(tp, (offset,)),
        )

    # -- offsets and partitions

    def _settle(self) -> None:
        """Acknowledged dead letters and durable effects into `offsets`; raise an effect's bug."""
        assert self._dead_letters is not None
        self._dead_letters.poll()
        self.progress.drain(self.offsets)
        if self.progress.error is not None:
            raise self.progress.error

    def _commit(self, tps: Collection[TP] | None = None) -> None:
        offsets = self.offsets.committable(tps)
        if not offsets or self._consumer is None:
            return
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())],
                asynchronous=False,
            )
        except KafkaException as exc:
            # What is durable stays durable; a redelivery of these records is idempotent.
            log.warning("committing offsets failed (will retry): %s", exc)
            return
        self.offsets.committed(offsets)

    def _hold(self) -> None:
        """Pause the partitions the effect cannot take more of; resume the others."""
        assert self._consumer is not None
        held = self.effect.held(self._assigned, self._paused) & self._assigned
        pause, resume = held - self._paused, self._paused - held
        with contextlib.suppress(KafkaException):
            if pause:
                self._consumer.pause([TopicPartition(t, p) for t, p in sorted(pause)])
            if resume:
                self._consumer.resume([TopicPartition(t, p) for t, p in sorted(resume)])
        self._paused = held

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned |= {(tp.topic, tp.partition) for tp in partitions}

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Before partitions go: the effect finishes or drops their work, the dead letters
        are waited for, what is durable is committed; then they are forgotten."""
        tps = {(tp.topic, tp.partition) for tp in partitions}
        try:
            self.effect.revoke(tps)
            assert self._dead_letters is not None
            if self._dead_letters.flush(DEAD_LETTER_WAIT_S):
                log.warning("partitions revoked before their dead letters were acknowledged")
            self.progress.drain(self.offsets)
            self._commit(tps)
        finally:
            self.offsets.forget(tps)
            self._assigned -= tps
            self._paused -= tps

    def _on_stats(self, stats_json: str) -> None:
        report_lag(
            stats_json, self.group, lambda topic, partition: (topic, partition) in self._assigned
        )


def run_sink(loop: ConsumeLoop) -> None:
    """Serve metrics, then run `loop` until its stop event is set (or, in the main thread,
    SIGTERM/SIGINT)."""
    serve_metrics(loop.settings.metrics.metrics_port, loop.settings.metrics.metrics_host)
    with stop_on_signals(loop.stop):
        loop.run()
