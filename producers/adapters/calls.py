"""Contact-centre call records (CSV or JSON lines) as interaction events on channel `call`.

A row carries a call id, the customer, the start time, a disposition (wrap-up
code), agent notes and whatever else the platform exports. The disposition
becomes the event type through the mapping file (`producers/mappings/calls.yaml`
by default: CANCEL → cancellation_requested, DISPUTE → dispute_opened, ...,
anything else → inquiry); the notes become `text`; unmapped columns become
attributes. The event id is `call-<call_id>`, so ingesting the same export
twice yields the same ids and the engine ignores the repeats.

Never publishes and knows no Kafka; a bad row raises `RecordError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from producers.adapters.base import (
    CSV_SUFFIXES,
    JSONL_SUFFIXES,
    DateParser,
    MappingError,
    RecordError,
    Rejection,
    SourceRecord,
    attribute_text,
    channel_files,
    column_aliases,
    load_mapping,
    mapping_section,
    optional_text,
    parse_timestamp,
    read_table,
    required_text,
    timezone_of,
)
from schemas.records import InteractionEvent

#: Columns the adapter interprets; every other non-blank column goes to attributes.
CALL_FIELDS = frozenset(
    {
        "call_id",
        "customer_id",
        "started_at",
        "disposition",
        "notes",
        "product",
        "reference",
        "customer_since",
    }
)


class CallAdapter:
    """Maps contact-centre rows (canonical column names) to `call` events."""

    kind = "calls"
    channel = "call"

    def __init__(self, mapping_path: Path | None = None) -> None:
        mapping = load_mapping("calls", mapping_path)
        self.mapping_file = str(mapping["__file__"])
        self.source = str(mapping.get("source") or "contact-centre")
        self.timezone = timezone_of(mapping)
        self.aliases = column_aliases(mapping)
        self.dates = DateParser()
        self.dispositions = {
            str(code).strip().upper(): str(event_type)
            for code, event_type in mapping_section(mapping, "dispositions", dict).items()
        }
        self.default_type = str(mapping.get("default_type") or "inquiry")
        self.max_text_chars = int(mapping.get("max_text_chars") or 4000)
        if self.max_text_chars <= 0:
            raise MappingError(f"{self.mapping_file}: max_text_chars must be positive")

    def event_type(self, disposition: str | None) -> str:
        """The event type of a disposition code (case-insensitive), or the default type."""
        if not disposition:
            return self.default_type
        return self.dispositions.get(disposition.strip().upper(), self.default_type)

    def map_record(self, fields: Mapping[str, Any]) -> InteractionEvent:
        """One call row (canonical names) as an event; raises RecordError naming the field."""
        call_id = required_text(fields, "call_id")
        customer_id = required_text(fields, "customer_id")
        started = fields.get("started_at")
        if started is None:
            raise RecordError("started_at", "missing required field")
        occurred_at = parse_timestamp(started, "started_at", self.timezone)
        disposition = optional_text(fields.get("disposition"))
        notes = optional_text(fields.get("notes"))
        if notes is not None and len(notes) > self.max_text_chars:
            notes = notes[: self.max_text_chars]
        attributes: dict[str, str] = {}
        if disposition is not None:
            attributes["disposition"] = disposition
        if not fields.keys() <= CALL_FIELDS:
            for name, value in fields.items():
                if name not in CALL_FIELDS and value is not None and name is not None:
                    text = attribute_text(value)
                    if text:
                        attributes[name] = text
        return InteractionEvent(
            event_id="call-" + call_id,
            customer_id=customer_id,
            channel="call",
            type=self.event_type(disposition),
            occurred_at=occurred_at,
            source=self.source,
            product=optional_text(fields.get("product")),
            reference=optional_text(fields.get("reference")),
            customer_since=self.dates(fields.get("customer_since"), "customer_since"),
            text=notes,
            attributes=attributes,
        )

    def records(self, path: Path) -> Iterator[SourceRecord | Rejection]:
        """The rows of a call export file (or of every export in a directory)."""
        for file in channel_files(path, CSV_SUFFIXES | JSONL_SUFFIXES):
            yield from read_table(file, self.aliases)
