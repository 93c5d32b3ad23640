"""How well an adapter types a channel's records: precision, recall and confusion per type.

`moments ingest KIND PATH --evaluate LABELS` maps every record under PATH as ingest
does (nothing is published) and compares each event's type with the label of its
record: LABELS is a CSV with columns `message_id` (an e-mail's Message-ID, or an event
id) and `type` (`none` for a record that should make no event, such as an
auto-reply); other columns are ignored. A record without a label, a label whose
record was not read and a rejected record are counted, not scored.

(The registry imports every module of this package when it lists the kinds: ingest,
and with it the metrics, is imported only when an evaluation runs.)
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from producers.adapters.base import MappingError
from schemas.records import InteractionEvent

if TYPE_CHECKING:
    from producers.adapters.ingest import IngestSummary

#: The label (and prediction) of a record that makes no event.
NO_EVENT: Final = "none"
#: The prediction of a record the adapter rejected.
REJECTED: Final = "rejected"


def read_labels(path: Path) -> dict[str, str]:
    """message_id → expected type from a labels CSV; MappingError naming file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise MappingError(f"{path}: cannot read labels: {exc.strerror}") from exc
    rows = csv.reader(text.splitlines())
    header = [cell.strip().lower() for cell in next(rows, [])]
    if "message_id" not in header or "type" not in header:
        raise MappingError(f"{path}:1: expected a header with columns message_id,type")
    key_col, type_col = header.index("message_id"), header.index("type")
    labels: dict[str, str] = {}
    for lineno, row in enumerate(rows, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) <= max(key_col, type_col):
            raise MappingError(f"{path}:{lineno}: row has {len(row)} fields")
        key = row[key_col].strip().strip("<>")
        if key in labels:
            raise MappingError(f"{path}:{lineno}: message_id labelled twice")
        labels[key] = row[type_col].strip()
    return labels


@dataclass
class Evaluation:
    """Expected and predicted type of every labelled record, and what could not be scored."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    #: Records read that have no label.
    unlabelled: int = 0
    #: Labels whose record was not among those read.
    missing: int = 0
    #: Records that could not be scored: rejected, or skipped without an id.
    unmatched: int = 0

    @property
    def types(self) -> list[str]:
        """Every type seen, expected or predicted, sorted."""
        return sorted({t for pair in self.pairs for t in pair})

    def confusion(self) -> Counter[tuple[str, str]]:
        """(expected, predicted) → count."""
        return Counter(self.pairs)

    def precision_recall(self, event_type: str) -> tuple[float | None, float | None, int]:
        """Precision and recall of one type (None when undefined) and its support."""
        predicted = sum(1 for _, p in self.pairs if p == event_type)
        expected = sum(1 for e, _ in self.pairs if e == event_type)
        right = sum(1 for e, p in self.pairs if e == p == event_type)
        precision = right / predicted if predicted else None
        recall = right / expected if expected else None
        return precision, recall, expected

    @property
    def accuracy(self) -> float:
        return sum(1 for e, p in self.pairs if e == p) / len(self.pairs) if self.pairs else 0.0


def _key(event: InteractionEvent) -> str:
    return event.attributes.get("message_id") or event.event_id


class _Collector:
    """An EventPublisher that keeps the events in memory."""

    def __init__(self) -> None:
        self.events: list[InteractionEvent] = []

    def publish(self, event: InteractionEvent) -> None:
        self.events.append(event)

    def flush(self, timeout_s: float = 30.0) -> None:
        pass


def evaluate(
    kind: str,
    path: Path,
    labels: dict[str, str],
    *,
    mapping: Path | None = None,
    customers: Path | None = None,
) -> tuple[Evaluation, IngestSummary]:
    """Map every record under `path` and score the types against `labels`."""
    from producers.adapters.ingest import ingest

    collector = _Collector()
    summary = ingest(
        kind, path, collector, mapping=mapping, customers=customers, max_future_skew_ms=2**62
    )
    predicted: dict[str, str] = {_key(event): event.type for event in collector.events}
    result = Evaluation()
    for skipped in summary.skipped:
        if skipped.key is not None:
            predicted[skipped.key] = NO_EVENT
        else:
            result.unmatched += 1
    result.unmatched += len(summary.rejected)
    for key, event_type in predicted.items():
        expected = labels.get(key)
        if expected is None:
            result.unlabelled += 1
        else:
            result.pairs.append((expected, event_type))
    result.missing = sum(1 for key in labels if key not in predicted)
    return result, summary
