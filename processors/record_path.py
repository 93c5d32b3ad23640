"""The record path: what becomes of one record of `interactions`, the same in every host.

The live worker and the backfill hand it the plain values of a record (the
partition's state store, partition, offset, headers, key, value and the log
timestamp) and get back what came of it; neither triages, decodes or feeds
the engine itself, so the records one dead-letters are exactly the records the
other counts as unusable. It knows no Kafka client and no Faust.

1. Triage (`schemas.wire.classify`): a control record is known by its header
   alone and is never an event; a null value without one is a tombstone, a
   value over `max_event_bytes` is oversized.
2. Decode (the Avro codec: its generated decoder, which also runs the checks
   Avro does not guarantee, then its general path for anything unusual).
3. The future-dated guard (`processors.engine.future_cap`): an event dated
   more than `max_future_skew_ms` past its record's timestamp moves the
   partition's clock only that far (counted in `future_dated` and, through
   `count_future_dated`, in `moments_events_future_dated_total`).
4. The engine, through the host's `Feed` (the worker's switches rule packs
   on the way; the backfill runs one pack). An engine that raises leaves a
   store that stages its writes (one with `discard_engine_writes`, the
   worker's) as it was before the event. A store that cannot undo the event
   (the worker's state kept across a batch) raises from
   `discard_engine_writes` instead: that exception leaves `handle`, with
   nothing logged, and the host handles the record again another way.

What comes back:

- `Applied`: the event and the engine's output (actions and decisions; for an
  event too late to apply, none, and `too_late` set: the host keeps it, stage
  `late`).
- `DeadLetter`: the record cannot be used. Its stage is `decode` (also
  tombstones and codec bugs), `validate`, `size` or `engine`; its class and
  detail name the failure. The detail may quote a value of the event
  (customer data): it goes to dead-letter headers or a summary, never to logs.
- `RecordKind.TICK`: the worker's idle tick, for the host's own clock (the
  backfill skips it: it reads history, not the wall clock).
- `RecordKind.FORGET`: an erasure record, applied to the store here (one
  without a key is ignored and logged).
- `RecordKind.CONTROL`: a control record of a kind this version does not
  know: skipped.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from common.metrics import EVENTS_FUTURE_DATED
from common.privacy import keyed_customer_hash
from processors.engine import EngineOutput, StateStore, forget_customer, future_cap
from schemas.codec import AvroCodec, DecodeError, SchemaValidationError
from schemas.records import InteractionEvent
from schemas.wire import RecordKind, classify

__all__ = [
    "Applied",
    "DeadLetter",
    "Feed",
    "RecordPath",
    "Result",
    "Stage",
]

log = logging.getLogger(__name__)

#: The host's engine step: (store, event, watermark cap) -> output; it may raise.
Feed = Callable[[StateStore, InteractionEvent, "int | None"], EngineOutput]


class Stage(enum.StrEnum):
    """Where a record was refused (the `moments.error.stage` header, the DLQ metric's label)."""

    #: Undecodable bytes, a tombstone, or a codec that raised unexpectedly.
    DECODE = "decode"
    #: Decodable, but breaking the event contract (a field's check failed).
    VALIDATE = "validate"
    #: A value over `max_event_bytes`.
    SIZE = "size"
    #: The engine raised on this event (its state is left as it was, where the store stages).
    ENGINE = "engine"
    #: Not refused, but too late: older than its partition's watermark minus the max
    #: lateness, so the engine did not apply it (`EngineOutput.too_late`); the worker keeps
    #: it on `interactions.late` with the dead-letter headers.
    LATE = "late"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that cannot be used: the stage that refused it, the error's class, a detail."""

    stage: str
    error_class: str
    detail: str


@dataclass(slots=True)
class Applied:
    """An event the engine took, and what it produced."""

    event: InteractionEvent
    output: EngineOutput


#: What the record path made of one record (see the module's docstring).
Result = Applied | DeadLetter | RecordKind


#: The detail of a tombstone's dead letter.
TOMBSTONE_DETAIL: Final = "a null value is not an event"


class RecordPath:
    """Triage, decode, the future-dated guard and the engine for one record; see the module.

    `future_dated` counts the events whose clock was capped (also in the metric).
    """

    def __init__(
        self,
        codec: AvroCodec[InteractionEvent],
        feed: Feed,
        *,
        max_event_bytes: int,
        max_future_skew_ms: int,
    ) -> None:
        self.fast_decode = codec.fast_decode
        self.decode = codec.decode
        self.feed = feed
        self.max_event_bytes = max_event_bytes
        self.max_future_skew_ms = max_future_skew_ms
        self.future_dated = 0
        #: Adds one capped event to the metric; a host that may handle a record twice
        #: (the worker, see `processors.worker`) counts it its own way.
        self.count_future_dated: Callable[[], None] = EVENTS_FUTURE_DATED.inc

    def handle(
        self,
        store: StateStore,
        partition: int,
        offset: int | None,
        headers: Any,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int | None,
    ) -> Result:
        """What becomes of one record: `Applied`, `DeadLetter` or a control `RecordKind`.

        `headers` is any `[(name, value)]` list or mapping (None: no headers);
        `timestamp_ms` the record's log timestamp (None when the client has none: no cap).
        """
        # Most records carry no headers: then only a missing or oversized value needs triage.
        if headers or value is None or len(value) > self.max_event_bytes:
            kind = classify(headers, value, self.max_event_bytes)
            if kind is not RecordKind.EVENT:
                return self._not_an_event(kind, store, partition, key, value)
        try:
            event = self.fast_decode(value)  # type: ignore[arg-type]  # triaged: not None
        except Exception:  # unusual or invalid: the general path gives the event or the error
            decoded = self._decode(value)  # type: ignore[arg-type]
            if isinstance(decoded, DeadLetter):
                return decoded
            event = decoded
        cap = None
        if timestamp_ms is not None:
            cap = future_cap(event.occurred_at, timestamp_ms, self.max_future_skew_ms)
            if cap is not None:
                self.future_dated += 1
                self.count_future_dated()
        try:
            output = self.feed(store, event, cap)
        except Exception as exc:
            discard = getattr(store, "discard_engine_writes", None)  # a store that stages
            if discard is not None:
                discard()  # one that cannot undo the event raises: the host tries again
            log.exception("the engine failed on partition %d at offset %s", partition, offset)
            return DeadLetter(Stage.ENGINE, type(exc).__name__, str(exc))
        return Applied(event, output)

    def _decode(self, value: bytes) -> InteractionEvent | DeadLetter:
        """The codec's general path: the event, or why it is not one."""
        try:
            return self.decode(value)
        except DecodeError as exc:
            return DeadLetter(exc.stage, type(exc).__name__, str(exc))
        except SchemaValidationError as exc:
            return DeadLetter(Stage.VALIDATE, type(exc).__name__, str(exc))
        except Exception as exc:  # a codec bug must not stop a host either
            return DeadLetter(Stage.DECODE, type(exc).__name__, str(exc))

    def _not_an_event(
        self,
        kind: RecordKind,
        store: StateStore,
        partition: int,
        key: bytes | None,
        value: bytes | None,
    ) -> Result:
        if kind is RecordKind.TOMBSTONE:
            return DeadLetter(Stage.DECODE, "Tombstone", TOMBSTONE_DETAIL)
        if kind is RecordKind.OVERSIZED:
            size = len(value or b"")
            detail = f"{size} bytes exceed max_event_bytes {self.max_event_bytes}"
            return DeadLetter(Stage.SIZE, "EventTooLarge", detail)
        if kind is RecordKind.FORGET:
            forget(store, partition, key)
        return kind


def forget(store: StateStore, partition: int, key: bytes | None) -> None:
    """An erasure record (`moments forget`): drop everything the store holds about the key's
    customer (their state, pending timers). Logged with the customer id hashed."""
    if not key:
        log.warning("erasure record without a key on partition %d: ignored", partition)
        return
    customer_id = key.decode("utf-8", errors="replace")
    removed = forget_customer(store, customer_id)
    log.info(
        "erased customer hmac:%s from partition %d (%d state entries)",
        keyed_customer_hash(customer_id),
        partition,
        removed,
    )
