"""The publisher SDK: how every channel puts `InteractionEvent`s on Kafka.

An idempotent confluent-kafka producer (``enable.idempotence``, acks=all),
keyed by ``customer_id`` with librdkafka's ``murmur2_random`` partitioner so
a customer's events land on one partition in order, the same partition a
Java client would choose. Events are validated before they are sent (an
invalid event never reaches the topic), encoded with `schemas.codec`
(single-object encoding, or Confluent framing when a schema registry is
configured), and delivery failures reported by the broker are collected and
raised by `Publisher.flush` as `PublishError`. Closing (or leaving the
``with`` block) flushes. An event whose encoding exceeds the configured maximum
event size (`MOMENTS_MAX_EVENT_BYTES`, what the worker accepts) is refused with
`EventTooLarge` before it is sent. An event given in its JSON form without an
event_id gets the id derived from its content, as file replay gives it
(docs/design.md 3.2): a retry of the same event is a duplicate downstream.

Status events of actions (docs/design.md 12): `Publisher.acknowledge`,
`reassign` and `complete` send `action_acknowledged`, `action_reassigned` and
`action_done` (`action_status_json` builds them; the collector's
`POST /v1/actions/{action_id}/status` too).

A publisher made with ``confirm=True`` (the HTTP collector's) also gives each
event its own delivery report: `Publisher.submit` calls back with that event's
report alone (a background thread serves the reports), and never blocks: a
full local queue, or a broker known to be unreachable, is `PublisherBusy` at once.

It must never log event contents or client secrets (the config holds
``sasl.password``), and never drop a failed delivery silently.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from common.metrics import EVENTS_PUBLISHED, EVENTS_REJECTED, event_type_label
from common.privacy import keyed_customer_hash
from common.settings import Settings
from schemas.codec import AvroCodec, SchemaValidationError, event_from_json
from schemas.records import (
    ACTION_ACKNOWLEDGED,
    ACTION_DONE,
    ACTION_REASSIGNED,
    RESOLUTIONS,
    STATUS_ACKNOWLEDGED,
    STATUS_DONE,
    STATUS_REASSIGNED,
    InteractionEvent,
)
from schemas.wire import CONTROL_HEADER, FORGET, erasure_headers

__all__ = [
    "EventTooLarge",
    "PublishError",
    "Publisher",
    "PublisherBusy",
    "RecordRefused",
    "action_status_json",
]

log = logging.getLogger(__name__)

#: Tuning defaults; `settings.kafka.kafka_extra` may override any of them.
PRODUCER_DEFAULTS: Final[dict[str, Any]] = {
    "compression.type": "lz4",
    "linger.ms": 5,
    "client.id": "moments-publisher",
}
#: Part of the contract (docs/design.md 3.1); nothing overrides these.
PRODUCER_REQUIRED: Final[dict[str, Any]] = {
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": "murmur2_random",
}

# A full local queue is back-pressure: wait for deliveries this long per attempt.
_QUEUE_FULL_POLL_S: Final = 0.1
# A confirming publisher's client is replaced after this many probes in a row timed out.
_STUCK_AFTER_PROBES: Final = 3
# Serve client callbacks (failed deliveries, client errors) after this many events.
_POLL_EVERY: Final = 1000


class PublishError(RuntimeError):
    """Events the broker did not acknowledge: names the topic, the key's sha256 (a key is a
    customer id: never in a message) and the broker error; `key` holds the key itself."""

    def __init__(self, topic: str, key: str | None, error: str, *, more: int = 0) -> None:
        self.topic = topic
        self.key = key
        self.error = error
        self.more = more
        about = f" (key hmac:{keyed_customer_hash(key)})" if key is not None else ""
        tail = f" (and {more} more failed deliveries)" if more else ""
        super().__init__(f"publishing to {topic} failed{about}: {error}{tail}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes
        return (_publish_error, (self.topic, self.key, self.error, self.more))


def _publish_error(topic: str, key: str | None, error: str, more: int) -> PublishError:
    return PublishError(topic, key, error, more=more)


class RecordRefused(PublishError):
    """The broker refused this one record for what it is (e.g. larger than the topic takes):
    sending it again cannot help."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_record_refused, (self.topic, self.key, self.error, self.more))


def _record_refused(topic: str, key: str | None, error: str, more: int) -> RecordRefused:
    return RecordRefused(topic, key, error, more=more)


class PublisherBusy(RuntimeError):
    """The event was not taken: the local queue is full or the broker is unreachable.
    Nothing was sent; try again later."""


class EventTooLarge(SchemaValidationError):
    """An event whose encoding exceeds the configured maximum event size (nothing is sent)."""

    def __init__(self, size: int, limit: int, where: str = "") -> None:
        super().__init__(
            "<event>", f"{size} bytes encoded exceed the limit of {limit} bytes", where
        )
        self.size = size
        self.limit = limit

    def at(self, where: str) -> EventTooLarge:
        return EventTooLarge(self.size, self.limit, where)

    def __reduce__(self) -> tuple[Any, ...]:
        return (EventTooLarge, (self.size, self.limit, self.where))


#: Broker errors that refuse one record for what it is: retrying cannot help.
_RECORD_REFUSALS: Final = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
        KafkaError.RECORD_LIST_TOO_LARGE,
    }
)
#: Client errors that mean no broker can be reached (submit then fails fast).
_UNREACHABLE: Final = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT})


class Publisher:
    """Publishes validated `InteractionEvent`s to the interactions topic, keyed by customer.

    Use as a context manager (or call `close`) so everything is flushed;
    `flush` raises `PublishError` if any delivery failed. Thread-safe for
    concurrent `publish` calls.

    The client reports failed deliveries only (``delivery.report.only.error``), so a
    successful event costs no callback: events sent are tallied by channel and type
    and counted as published once nothing is in flight any more (at `flush`, `close`,
    or a periodic poll that finds the queue empty), less those that failed.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        topic: str | None = None,
        config: dict[str, Any] | None = None,
        confirm: bool = False,
    ) -> None:
        """`config`: extra librdkafka options on top of the settings (tests, tuning);
        `confirm`: report every delivery, for `submit` (costs a callback per event)."""
        self.topic = topic or settings.topics.interactions
        self.confirms = confirm
        self.max_event_bytes = settings.engine.max_event_bytes
        self._codec = AvroCodec(
            InteractionEvent, registry_url=settings.kafka.schema_registry_url, topic=self.topic
        )
        defaults = {
            k: v for k, v in PRODUCER_DEFAULTS.items() if k not in settings.kafka.kafka_extra
        }
        options = {
            **defaults,
            **(config or {}),
            **PRODUCER_REQUIRED,
            "delivery.report.only.error": not confirm,
            "on_delivery": self._on_delivery,
            "error_cb": self._on_error,
            "logger": log,
        }
        self._config = settings.kafka_config(**options)
        self._producer = Producer(self._config)
        self._encode = self._codec.encode
        self._produce = self._producer.produce
        self._failures: list[PublishError] = []
        self._failed_labels: list[tuple[str, str]] = []  # (channel, type) of failed events
        self._sent: list[tuple[str, str]] = []  # (channel, type) of events not yet counted
        self._unpolled = 0
        self._lock = threading.Lock()
        self._closed = False
        #: Set by the client's error callback when no broker is reachable; a delivery clears it.
        self._unreachable = False
        #: Probes (see `submit`) that timed out in a row; a client that keeps failing them
        #: after the brokers came back is stuck (seen when a broker restarted empty) and is
        #: replaced.
        self._probes_timed_out = 0
        self._published_children: dict[tuple[str, str], Any] = {}
        self._poller: threading.Thread | None = None
        if confirm:
            self._poller = threading.Thread(
                target=self._serve_reports, name="moments-publisher-reports", daemon=True
            )
            self._poller.start()

    # -- sending

    def publish(self, event: InteractionEvent) -> None:
        """Validate and send one event asynchronously (delivery is confirmed by `flush`).

        Raises `SchemaValidationError` for an invalid event (nothing is sent)
        and `PublishError` when the client refuses the message outright.
        """
        if self._closed:
            raise RuntimeError("publisher is closed")
        value = self._encoded(event)
        key = event.customer_id  # the client sends a str key as its UTF-8 bytes
        label = (event.channel, event.type)
        while True:
            # Sending and tallying under one lock: a tally taken when the client's queue is
            # empty then holds exactly the events that were settled.
            with self._lock:
                try:
                    self._produce(self.topic, value, key)
                except BufferError:
                    pass  # queue full: let deliveries drain (outside the lock), then retry
                except KafkaException as exc:
                    raise PublishError(self.topic, key, _describe(exc.args[0])) from None
                else:
                    self._sent.append(label)
                    self._unpolled += 1
                    if self._unpolled < _POLL_EVERY:
                        return
                    self._unpolled = 0
                    break
            self._producer.poll(_QUEUE_FULL_POLL_S)
        self._count_published()

    def submit(
        self, event: InteractionEvent, report: Callable[[PublishError | None], None]
    ) -> None:
        """Validate and send one event; `report` is called once with this event's own
        delivery report (None, or `PublishError` / `RecordRefused`), from the thread that
        serves the reports. Never blocks.

        Raises `SchemaValidationError` (`EventTooLarge` included) for an event that cannot
        be sent and `PublisherBusy` when the local queue is full or no broker is reachable
        (nothing was sent, `report` is not called). Needs a publisher made with
        ``confirm=True``.
        """
        if not self.confirms:
            raise RuntimeError("submit needs a publisher made with confirm=True")
        if self._closed:
            raise RuntimeError("publisher is closed")
        value = self._encoded(event)
        key = event.customer_id
        if self._unreachable and len(self._producer):
            # One event at a time probes a broker known to be down; the rest fail fast.
            raise PublisherBusy("the broker is unreachable")
        label = (event.channel, event.type)

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                self._unreachable = False
                self._probes_timed_out = 0
                self._published(label).inc()
                report(None)
                return
            kind = RecordRefused if err.code() in _RECORD_REFUSALS else PublishError
            if self._unreachable and err.code() == KafkaError._MSG_TIMED_OUT:
                self._probes_timed_out += 1
            report(kind(msg.topic() or self.topic, None, _describe(err)))

        try:
            with self._lock:  # the reports thread may be replacing a failed client
                produce = self._produce
            produce(self.topic, value, key, on_delivery=delivered)
        except BufferError:
            raise PublisherBusy("the local queue of unacknowledged events is full") from None
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() in _RECORD_REFUSALS:
                raise RecordRefused(self.topic, None, _describe(error)) from None
            raise PublishError(self.topic, None, _describe(error)) from None

    def _published(self, label: tuple[str, str]) -> Any:
        """The EVENTS_PUBLISHED child of (channel, type), looked up once."""
        child = self._published_children.get(label)
        if child is None:
            child = EVENTS_PUBLISHED.labels(channel=label[0], type=event_type_label(label[1]))
            self._published_children[label] = child
        return child

    def _encoded(self, event: InteractionEvent) -> bytes:
        """The event's bytes; `SchemaValidationError` (or `EventTooLarge`) when it cannot go."""
        try:
            value = self._encode(event)
            if len(value) > self.max_event_bytes:
                raise EventTooLarge(len(value), self.max_event_bytes)
        except SchemaValidationError:
            EVENTS_REJECTED.labels(stage="validate").inc()
            raise
        return value

    def _serve_reports(self) -> None:
        """Background thread of a confirming publisher: serve delivery reports until closed.

        A client that hit a fatal error (e.g. the idempotent producer's state lost by the
        broker: UNKNOWN_PRODUCER_ID) takes no more events: it is replaced by a new one,
        and the events it still held fail (their senders answer 503 and resend them).
        """
        while not self._closed:
            if self._probes_timed_out >= _STUCK_AFTER_PROBES:
                self._probes_timed_out = 0
                self._replace_client(f"{_STUCK_AFTER_PROBES} probes in a row timed out")
            try:
                self._producer.poll(0.05)
            except KafkaException as exc:
                self._replace_client(_describe(exc.args[0]))
            except Exception:  # a report callback's bug must not end the reports
                log.exception("serving delivery reports failed")

    def _replace_client(self, reason: str) -> None:
        log.error("kafka producer failed for good (%s): replacing it", reason)
        with self._lock:
            old = self._producer
            self._producer = Producer(self._config)
            self._produce = self._producer.produce
        threading.Thread(
            target=self._retire, args=(old,), name="moments-publisher-retire", daemon=True
        ).start()

    @staticmethod
    def _retire(old: Producer) -> None:
        """Fail what a replaced client still holds (its senders' futures), off the reports
        thread: a client in a fatal state may never finish a flush or a close."""
        with contextlib.suppress(KafkaException, RuntimeError):
            old.purge()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if not old.poll(0.1) and not len(old):
                    return
            except (KafkaException, RuntimeError):
                continue

    def publish_json(self, obj: dict[str, Any], *, where: str = "") -> InteractionEvent:
        """Publish an event given in its JSON form. A missing event_id is derived from the
        event's content (`schemas.json_form.event_content_id`, as file replay derives it), so
        sending the same event again is a duplicate downstream."""
        try:
            event = event_from_json(obj, where=where)
        except SchemaValidationError:
            EVENTS_REJECTED.labels(stage="validate").inc()
            raise
        self.publish(event)
        return event

    def acknowledge(
        self,
        action_id: str,
        customer_id: str,
        owner: str | None = None,
        *,
        note: str | None = None,
        occurred_at: str | None = None,
    ) -> InteractionEvent:
        """Say a person took the action on (`action_acknowledged`, docs/design.md 12)."""
        return self.publish_json(
            action_status_json(
                action_id,
                customer_id,
                STATUS_ACKNOWLEDGED,
                owner=owner,
                note=note,
                occurred_at=occurred_at,
            )
        )

    def reassign(
        self,
        action_id: str,
        customer_id: str,
        owner: str,
        *,
        note: str | None = None,
        occurred_at: str | None = None,
    ) -> InteractionEvent:
        """Say the action has a new owner (`action_reassigned`)."""
        return self.publish_json(
            action_status_json(
                action_id,
                customer_id,
                STATUS_REASSIGNED,
                owner=owner,
                note=note,
                occurred_at=occurred_at,
            )
        )

    def complete(
        self,
        action_id: str,
        customer_id: str,
        resolution: str = "completed",
        *,
        owner: str | None = None,
        note: str | None = None,
        occurred_at: str | None = None,
    ) -> InteractionEvent:
        """Say the action was done (`action_done`) and how: `completed`,
        `customer_declined`, `unreachable` or `not_appropriate`."""
        return self.publish_json(
            action_status_json(
                action_id,
                customer_id,
                STATUS_DONE,
                owner=owner,
                resolution=resolution,
                note=note,
                occurred_at=occurred_at,
            )
        )

    def publish_erasure(self, customer_id: str, erased_at_ms: int | None = None) -> None:
        """Send the erasure record of a customer (`moments forget`): a tombstone keyed by the
        customer id with header `moments.control: forget` (and `moments.erased_at`, the time
        the erasure registry holds, when given), on the customer's partition (the same key,
        the same partitioner as their events). Confirmed by `flush`."""
        if self._closed:
            raise RuntimeError("publisher is closed")
        if not customer_id:
            raise ValueError("an erasure needs a customer id")
        with self._lock:
            try:
                headers: list[tuple[str, str | bytes | None]] = (
                    [(CONTROL_HEADER, FORGET)]
                    if erased_at_ms is None
                    else list(erasure_headers(erased_at_ms))
                )
                self._produce(self.topic, None, customer_id, headers=headers)
            except KafkaException as exc:
                raise PublishError(self.topic, customer_id, _describe(exc.args[0])) from None

    # -- completion

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every event is acknowledged; raise `PublishError` for any that failed."""
        pending = self._producer.flush(timeout_s)
        self._count_published()
        with self._lock:
            failures, self._failures = self._failures, []
        if pending:
            failures.append(
                PublishError(
                    self.topic, None, f"{pending} events still unacknowledged after {timeout_s:g} s"
                )
            )
        if failures:
            first = failures[0]
            raise PublishError(first.topic, first.key, first.error, more=len(failures) - 1)

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush (raising `PublishError` for failed deliveries), refuse further events and
        release the client's connections."""
        if self._closed:
            return
        self._closed = True
        if self._poller is not None:
            self._poller.join()
        try:
            self.flush(timeout_s)
        finally:
            if len(self._producer):
                # Only after flush has already reported them as failed.
                self._producer.purge()
                self._producer.poll(0)
            self._count_published()
            self._producer.close()

    def _count_published(self) -> None:
        """When nothing is in flight (no event unsettled, no failure report unserved), add
        the events sent since the last count, less the failed ones, to EVENTS_PUBLISHED."""
        self._producer.poll(0)  # serve what waits (its queue length counts client events too)
        with self._lock:
            if len(self._producer) or not self._sent:
                return
            sent, self._sent = self._sent, []
            failed, self._failed_labels = self._failed_labels, []
        published = Counter(sent)
        published.subtract(failed)
        for (channel, event_type), count in published.items():
            if count > 0:
                EVENTS_PUBLISHED.labels(channel=channel, type=event_type_label(event_type)).inc(
                    count
                )

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # The block already failed: still flush what was sent, but let its error win.
        try:
            self.close()
        except PublishError as failure:
            log.error("while handling %s: %s", type(exc).__name__, failure)

    # -- librdkafka callbacks (run inside poll/flush)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:  # not reported (delivery.report.only.error); kept for safety
            return
        raw_key = msg.key()
        key = raw_key.decode("utf-8", "replace") if isinstance(raw_key, bytes) else raw_key
        label = self._label_of(msg.value())
        with self._lock:
            self._failures.append(PublishError(msg.topic() or self.topic, key, _describe(err)))
            if label is not None:
                self._failed_labels.append(label)

    def _label_of(self, value: bytes | str | None) -> tuple[str, str] | None:
        """(channel, type) of a failed event, read back from the bytes we encoded."""
        if not isinstance(value, bytes):
            return None
        try:
            event = self._codec.decode(value, validate=False)
        except Exception:  # cannot happen for our own bytes; the count is only a metric
            return None
        return (event.channel, event.type)

    def _on_error(self, err: KafkaError) -> None:
        # Client-level errors (broker down, auth); librdkafka retries by itself unless fatal.
        if err.code() in _UNREACHABLE:
            self._unreachable = True
        if err.fatal():
            with self._lock:
                self._failures.append(PublishError(self.topic, None, _describe(err)))
        log.warning("kafka producer: %s", _describe(err))


#: The statuses a person reports, and the status event each stands for (docs/design.md 12).
STATUS_EVENTS: Final = {
    STATUS_ACKNOWLEDGED: ACTION_ACKNOWLEDGED,
    STATUS_REASSIGNED: ACTION_REASSIGNED,
    STATUS_DONE: ACTION_DONE,
}
MAX_OWNER_CHARS: Final = 256
MAX_ACTION_ID_CHARS: Final = 256
MAX_NOTE_CHARS: Final = 2000


def action_status_json(
    action_id: str,
    customer_id: str,
    status: str,
    *,
    owner: str | None = None,
    resolution: str | None = None,
    note: str | None = None,
    occurred_at: str | None = None,
) -> dict[str, Any]:
    """The JSON form of the status event that says an action was `acknowledged`,
    `reassigned` (to `owner`) or `done` (with `resolution`): channel `other`, `reference` =
    the action id, owner and resolution as attributes, the note as its text, `occurred_at`
    now unless given (ISO-8601). Without an event_id: sending it gets the id derived from
    its content. `SchemaValidationError` names the field at fault (never its value)."""
    for name, value in (("action_id", action_id), ("customer_id", customer_id)):
        if not isinstance(value, str) or not value.strip():
            raise SchemaValidationError(name, "is required (a non-blank string)")
    if len(action_id) > MAX_ACTION_ID_CHARS:
        raise SchemaValidationError(
            "action_id", f"must be at most {MAX_ACTION_ID_CHARS} characters"
        )
    if status not in STATUS_EVENTS:
        raise SchemaValidationError("status", f"must be one of {', '.join(STATUS_EVENTS)}")
    for name, given in (("owner", owner), ("resolution", resolution), ("note", note)):
        if given is not None and not isinstance(given, str):
            raise SchemaValidationError(name, "must be a string")
    if owner is not None and not 1 <= len(owner) <= MAX_OWNER_CHARS:
        raise SchemaValidationError("owner", f"must be 1 to {MAX_OWNER_CHARS} characters")
    if status == STATUS_REASSIGNED and owner is None:
        raise SchemaValidationError("owner", "is required to reassign (the new owner)")
    if status == STATUS_DONE and resolution not in RESOLUTIONS:
        raise SchemaValidationError(
            "resolution",
            ("is required" if resolution is None else "is unknown")
            + f" to say done: one of {', '.join(RESOLUTIONS)}",
        )
    if status != STATUS_DONE and resolution is not None:
        raise SchemaValidationError("resolution", "only goes with status done")
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise SchemaValidationError("note", f"must be at most {MAX_NOTE_CHARS} characters")
    attributes = {"owner": owner} if owner is not None else {}
    if resolution is not None:
        attributes["resolution"] = resolution
    return {
        "customer_id": customer_id,
        "channel": "other",
        "type": STATUS_EVENTS[status],
        "occurred_at": occurred_at
        if occurred_at is not None
        else datetime.now(UTC).isoformat(timespec="milliseconds"),
        "reference": action_id,
        "text": note,
        "attributes": attributes,
    }


def _describe(err: Any) -> str:
    if isinstance(err, KafkaError):
        return f"{err.name()}: {err.str()}"
    return str(err)
