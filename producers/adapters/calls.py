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

from collections.abc import Mapping
from typing import Any

from producers.adapters.base import (
    MappingError,
    RecordError,
    TableAdapter,
    attribute_text,
    mapping_section,
    optional_text,
    parse_timestamp,
    required_text,
)
from producers.adapters.registry import register
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


@register
class CallAdapter(TableAdapter):
    """Maps contact-centre rows (canonical column names) to `call` events."""

    kind = "calls"
    order = 1
    channel = "call"
    mapping_name = "calls"
    default_source = "contact-centre"

    def configure(self, mapping: Mapping[str, Any]) -> None:
        """Dispositions, the default type and the notes' length limit."""
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
