"""The wire contract, written once: topic names, control records, dead-letter headers.

Every process that reads or writes Kafka agrees on these rules; they live here
because producers, processors and sinks may not import each other (docs/design.md,
section 1) but all import `schemas`. This module imports nothing of ours
except `schemas.records` and knows no Kafka client: headers are the
`[(name, value)]` lists (or mappings) every client hands out.

- `Topics`: the name of every topic, with an optional prefix.
- Control records on `interactions` carry the header `moments.control`: the
  worker's idle ticks (`tick`, empty value) and erasure records (`forget`,
  null value keyed by the customer id, written by `moments forget`). They are
  never events; `classify` tells a reader of `interactions` what a record is.
- Erasure markers (docs/design.md 10.1): the worker writes one to every output
  topic after dropping a customer's state, the same shape as the erasure record
  (`forget`, null value, key = the customer id) plus `moments.erased_at` (the
  erasure time, ms, decimal ASCII), which the erasure record carries too.
- Dead letters keep the original key, value and headers, minus any earlier
  `moments.error.*` headers, plus `dead_letter_headers` naming what failed
  (stage, class, message) and where the record came from (topic, partition,
  offset).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any, Final

from schemas.records import DESTINATIONS

__all__ = [
    "CONTROL_HEADER",
    "DESTINATIONS",
    "ERASED_AT_HEADER",
    "ERROR_HEADER_PREFIX",
    "FORGET",
    "MAX_ERROR_MESSAGE",
    "TICK",
    "RecordKind",
    "Topics",
    "classify",
    "control_value",
    "dead_letter_headers",
    "erased_at_of",
    "erasure_headers",
    "error_headers",
]

#: Header marking a control record on `interactions` (idle ticks, erasures): never an event.
CONTROL_HEADER: Final = "moments.control"
#: `moments.control` value of the worker's idle tick (empty value, produced by the worker).
TICK: Final = b"tick"
#: `moments.control` value of an erasure record (key = the customer id, value = null).
FORGET: Final = b"forget"
#: Header of an erasure record and of an erasure marker: the erasure time (ms, decimal ASCII).
ERASED_AT_HEADER: Final = "moments.erased_at"
#: Prefix of the headers a dead letter carries about its failure.
ERROR_HEADER_PREFIX: Final = "moments.error."
#: `moments.error.message` is cut to this many characters.
MAX_ERROR_MESSAGE: Final = 1000


class Topics:
    """Names of every topic moments uses, with an optional prefix (unique names in tests)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.interactions = f"{prefix}interactions"
        self.interactions_dlq = f"{prefix}interactions.dlq"
        #: Events too late to apply (older than the watermark minus MOMENTS_MAX_LATENESS), kept
        #: with the dead-letter headers, stage `late` (docs/design.md 3.6).
        self.interactions_late = f"{prefix}interactions.late"
        self.decisions = f"{prefix}decisions"
        #: One record per change of an action's status (`ActionStatus`, docs/design.md 12).
        self.action_status = f"{prefix}action-status"
        self.actions_dlq = f"{prefix}actions.dlq"
        self.actions = {d: f"{prefix}actions.{d}" for d in DESTINATIONS}
        #: Compacted, key = pack name: the published rule packs (docs/design.md 8.2); created by
        #: `moments rules publish` (`common.topics.ensure_rules_topic`), not in `all()`.
        self.rules = f"{prefix}rules"
        #: Compacted, key = keyed hash of a customer id, value = the erasure time: the erasure
        #: registry every consumer follows (docs/design.md 10.1); one partition.
        self.erasures = f"{prefix}erasures"
        #: Confirmations of erasures by the sinks that record them nowhere else (the webhook
        #: sink), read by `moments forget --wait`; retention like the raw topics.
        self.erasures_done = f"{prefix}erasures.done"

    def action(self, destination: str) -> str:
        """Topic of one destination, e.g. `actions.care`."""
        return self.actions[destination]

    def all(self) -> list[str]:
        return [
            self.interactions,
            self.interactions_dlq,
            self.interactions_late,
            self.decisions,
            self.action_status,
            self.actions_dlq,
            *self.actions.values(),
            self.erasures,
            self.erasures_done,
        ]

    def outputs(self) -> list[str]:
        """The worker's output topics, which each get an erasure marker: every action topic,
        `decisions` and `action-status`."""
        return [*self.actions.values(), self.decisions, self.action_status]


class RecordKind(enum.Enum):
    """What a record of `interactions` is, before anyone decodes it (`classify`)."""

    #: A value to decode as an interaction event.
    EVENT = "event"
    #: The worker's idle tick: advances the worker's clock; other readers skip it.
    TICK = "tick"
    #: An erasure record (`moments forget`): drop what is held about the key's customer.
    FORGET = "forget"
    #: A control record of a kind this version does not know: skipped, never an event.
    CONTROL = "control"
    #: A null value without a control header: poison (dead-lettered by the worker).
    TOMBSTONE = "tombstone"
    #: A value over `max_event_bytes`: poison (dead-lettered by the worker).
    OVERSIZED = "oversized"


def _header_pairs(headers: Any) -> Iterable[tuple[Any, Any]]:
    if not headers:
        return ()
    return headers.items() if isinstance(headers, Mapping) else headers


def control_value(headers: Any) -> bytes | None:
    """The value of the `moments.control` header (None: not a control record)."""
    for name, value in _header_pairs(headers):
        if name == CONTROL_HEADER:
            return value if isinstance(value, bytes) else str(value or "").encode()
    return None


def erasure_headers(erased_at_ms: int) -> list[tuple[str, bytes]]:
    """The headers of an erasure record or marker: `moments.control: forget` and the time."""
    return [(CONTROL_HEADER, FORGET), (ERASED_AT_HEADER, str(int(erased_at_ms)).encode())]


def erased_at_of(headers: Any) -> int | None:
    """The erasure time an erasure record or marker carries (None: none, or not a number)."""
    for name, value in _header_pairs(headers):
        if name == ERASED_AT_HEADER:
            text = value if isinstance(value, bytes) else str(value or "").encode()
            try:
                return int(text)
            except ValueError:
                return None
    return None


def classify(headers: Any, value: bytes | None, max_event_bytes: int) -> RecordKind:
    """What a record of `interactions` is: an event to decode, a control record or poison.

    A control record is known by its header alone; an event is any other record whose
    value is present and at most `max_event_bytes` long (it may still fail to decode).
    """
    control = control_value(headers)
    if control == TICK:
        return RecordKind.TICK
    if control == FORGET:
        return RecordKind.FORGET
    if control is not None:
        return RecordKind.CONTROL
    if value is None:
        return RecordKind.TOMBSTONE
    if len(value) > max_event_bytes:
        return RecordKind.OVERSIZED
    return RecordKind.EVENT


def error_headers(
    stage: str,
    error_class: str,
    message: str,
    source: tuple[str | None, int | None, int | None],
    **extra: str,
) -> list[tuple[str, bytes]]:
    """`moments.error.*` headers: what failed (stage, class, message) and where the record
    came from (`source` = topic, partition, offset), then any `extra` ones (e.g. http_status)."""
    topic, partition, offset = source
    values = {
        "stage": stage,
        "class": error_class,
        "message": message[:MAX_ERROR_MESSAGE],
        "topic": topic or "",
        "partition": str(partition),
        "offset": str(offset),
        **extra,
    }
    return [(ERROR_HEADER_PREFIX + name, text.encode()) for name, text in values.items()]


def dead_letter_headers(
    original: Any,
    stage: str,
    error_class: str,
    message: str,
    source: tuple[str | None, int | None, int | None],
    **extra: str,
) -> list[tuple[str, bytes]]:
    """The headers of a dead letter: the record's own, without earlier `moments.error.*`
    ones (a re-driven record that fails again carries only its latest error), then
    `error_headers`. A header without a value keeps its name with an empty value."""
    kept = [
        (str(name), value if isinstance(value, bytes) else str(value or "").encode())
        for name, value in _header_pairs(original)
        if not str(name).startswith(ERROR_HEADER_PREFIX)
    ]
    return kept + error_headers(stage, error_class, message, source, **extra)
