"""Channel adapters: the records of calls, email and billing systems as interaction events.

Each adapter maps one channel's own records to `InteractionEvent` (or a
`Rejection` naming file, line and reason); `ingest` runs one over a file and
publishes through the publisher SDK. Adapters never import processors or sinks.
"""

from producers.adapters.base import MappingError, RecordError, Rejection, SourceRecord
from producers.adapters.billing import BillingAdapter
from producers.adapters.calls import CallAdapter
from producers.adapters.email import EmailAdapter, EmailMessage, parse_message
from producers.adapters.ingest import (
    KINDS,
    IngestSummary,
    ProgressHook,
    ingest,
    make_adapter,
    rich_progress,
)

__all__ = [
    "KINDS",
    "BillingAdapter",
    "CallAdapter",
    "EmailAdapter",
    "EmailMessage",
    "IngestSummary",
    "MappingError",
    "ProgressHook",
    "RecordError",
    "Rejection",
    "SourceRecord",
    "ingest",
    "make_adapter",
    "parse_message",
    "rich_progress",
]
