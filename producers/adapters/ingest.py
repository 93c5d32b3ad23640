"""Feed one channel's files to Kafka: read, map, validate, publish, and account for every record.

`ingest(kind, path, publisher, dry_run)` is what `moments ingest` runs, with the
adapter the registry holds for `kind` (`producers.adapters.registry`). Every
record ends up either accepted (published, or only validated with `dry_run`) or
in the summary's rejections with its file, line and reason; a rejected record
never stops the run. Publishing goes through the publisher SDK only; this module
never talks to Kafka itself.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from common.metrics import EVENTS_REJECTED
from producers.adapters.base import IngestOptions, RecordError, Rejection
from producers.adapters.registry import adapter_class
from schemas.codec import SchemaValidationError, validate
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

    @property
    def total(self) -> int:
        return self.accepted + len(self.rejected)


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
    for item in adapter.records(path):
        count += 1
        if progress is not None and count % 500 == 0:
            progress(count, expected)
        if isinstance(item, Rejection):
            _reject(summary, item)
            continue
        try:
            event = adapter.map_source(item)
            if event.occurred_at > time.time_ns() // 1_000_000 + max_future_skew_ms:
                raise RecordError(
                    "occurred_at", f"lies more than {max_future_skew_ms / 1000:g} s in the future"
                )
            send(event)
        except RecordError as exc:
            _reject(summary, Rejection(item.file, item.line, item.reason(exc)))
            continue
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
