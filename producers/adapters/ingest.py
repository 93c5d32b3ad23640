"""Feed one channel's files to Kafka: read, map, validate, publish, and account for every record.

`ingest(kind, path, publisher, dry_run)` is what `moments ingest` runs, with the
adapter the registry holds for `kind` (`producers.adapters.registry`). Every
record ends up either accepted (published, or only validated with `dry_run`) or
in the summary's rejections with its file, line and reason, or counted as skipped
(an auto-reply); a rejected record never stops the run, whatever goes wrong with
it. Publishing goes through the publisher SDK only (or `JsonLinesOut` writes the
events as JSON lines, the form `moments replay` reads); this module never talks
to Kafka itself.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Protocol, Self

from common.metrics import EVENTS_REJECTED
from producers.adapters.base import IngestOptions, RecordError, Rejection, Skipped, SourceRecord
from producers.adapters.registry import adapter_class
from schemas.codec import SchemaValidationError, to_json_bytes, validate
from schemas.records import InteractionEvent

if TYPE_CHECKING:
    from rich.console import Console

#: MOMENTS_MAX_FUTURE_SKEW's default, in milliseconds.
DEFAULT_FUTURE_SKEW_MS = 3_600_000

#: Called with (records read so far, records expected or None) as the run goes.
ProgressHook = Callable[[int, int | None], None]


class EventPublisher(Protocol):
    """What ingest needs of `producers.publisher.Publisher`."""

    def publish(self, event: InteractionEvent) -> None: ...

    def flush(self, timeout_s: float = 30.0) -> None: ...


@dataclass
class IngestSummary:
    """What one ingest run did: accepted count, every rejection with its line and reason."""

    kind: str
    path: str
    dry_run: bool
    accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    by_type: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    #: Records that make no event on purpose, by reason (`auto_reply`).
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.accepted + len(self.rejected) + len(self.skipped)

    @property
    def skipped_by_reason(self) -> Counter[str]:
        return Counter(item.reason for item in self.skipped)


class JsonLinesOut:
    """An `EventPublisher` that writes each event as one JSON line (the form `moments
    replay` and `moments publish` read) instead of publishing it; validates like the
    publisher, so a record it refuses is a rejection."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: BinaryIO = self.path.open("wb")
        self.written = 0

    def publish(self, event: InteractionEvent) -> None:
        validate(event)
        self._file.write(to_json_bytes(event) + b"\n")
        self.written += 1

    def flush(self, timeout_s: float = 30.0) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def ingest(
    kind: str,
    path: Path,
    publisher: EventPublisher | None,
    dry_run: bool = False,
    *,
    mapping: Path | None = None,
    customers: Path | None = None,
    progress: ProgressHook | None = None,
    max_future_skew_ms: int = DEFAULT_FUTURE_SKEW_MS,
) -> IngestSummary:
    """Map every record under `path` and publish it (or only validate it with `dry_run`).

    Rejected records are collected, never raised; a delivery failure of the broker
    (`PublishError` from the final flush) is raised, since then nothing is known to be safe.
    A record dated more than `max_future_skew_ms` after now is rejected (`occurred_at`),
    except e-mail, which falls back to its delivery time.
    """
    if publisher is None and not dry_run:
        raise ValueError("ingest needs a publisher unless dry_run is set")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    adapter = adapter_class(kind).for_ingest(
        IngestOptions(mapping=mapping, customers=customers, max_future_skew_ms=max_future_skew_ms)
    )
    summary = IngestSummary(kind=kind, path=str(path), dry_run=dry_run)
    expected: int | None = None
    if progress is not None:
        with contextlib.suppress(OSError):
            expected = adapter.estimate(path)
    seen_ids: set[str] = set()
    send = validate if dry_run or publisher is None else publisher.publish
    count = 0
    for item in _guarded(adapter.records(path), str(path)):
        count += 1
        if progress is not None and count % 500 == 0:
            progress(count, expected)
        if isinstance(item, Rejection):
            _reject(summary, item)
            continue
        if isinstance(item, Skipped):
            summary.skipped.append(item)
            continue
        try:
            event = adapter.map_source(item)
            if event.occurred_at > time.time_ns() // 1_000_000 + max_future_skew_ms:
                raise RecordError(
                    "occurred_at", f"lies more than {max_future_skew_ms / 1000:g} s in the future"
                )
        except RecordError as exc:
            _reject(summary, Rejection(item.file, item.line, item.reason(exc)))
            continue
        except Exception as exc:  # one record's fault never stops the run
            # The error's text may quote the record: only its kind is reported.
            _reject(summary, Rejection(item.file, item.line, _unexpected(exc)))
            continue
        try:
            send(event)  # a broker's failure is the run's, not the record's: it propagates
        except SchemaValidationError as exc:
            _reject(summary, Rejection(item.file, item.line, f"{exc.field}: {exc.message}"))
            continue
        summary.accepted += 1
        summary.by_type[event.type] += 1
        if event.event_id in seen_ids:
            summary.duplicates += 1
        else:
            seen_ids.add(event.event_id)
    if publisher is not None and not dry_run:
        publisher.flush()
    if progress is not None:
        progress(count, count)
    return summary


def _unexpected(exc: BaseException) -> str:
    return f"cannot be mapped ({type(exc).__name__})"


def _guarded(
    items: Iterator[SourceRecord | Rejection | Skipped], path: str
) -> Iterator[SourceRecord | Rejection | Skipped]:
    """The adapter's records; when reading itself fails (a bug, a file that vanished), one
    rejection naming the file where it stopped ends the run's reading instead of a traceback."""
    last = path
    try:
        for item in items:
            last = getattr(item, "file", last)
            yield item
    except Exception as exc:  # the summary says where reading stopped, not a traceback
        yield Rejection(last, 0, f"reading stopped ({type(exc).__name__})")


def _reject(summary: IngestSummary, rejection: Rejection) -> None:
    summary.rejected.append(rejection)
    EVENTS_REJECTED.labels(stage="adapter").inc()


@contextlib.contextmanager
def rich_progress(description: str, console: Console | None = None) -> Iterator[ProgressHook]:
    """A rich progress bar as a ProgressHook, for `moments ingest`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=None)

        def hook(done: int, expected: int | None) -> None:
            bar.update(task, completed=done, total=expected)

        yield hook
