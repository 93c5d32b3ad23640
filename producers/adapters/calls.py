"""Contact-centre call records (CSV or JSON lines) as interaction events on channel `call`.

A row carries a call id, the customer, the start time, a disposition (wrap-up
code), a call reason, agent notes and whatever else the platform exports. A
disposition the mapping file knows becomes the event type
(`producers/mappings/calls.yaml` by default: CANCEL → cancellation_requested,
DISPUTE → dispute_opened, ...): an agent chose it. Without one (blank, or a code
the mapping does not list), the free text (the call reason, else the notes) is read
by the intent classifier (`producers.adapters.intent`, docs/design.md 11.6) as a
reply is: a case opens only on a clear statement ("customer wants to cancel"),
never on a negation ("does not want to cancel"); what it is unsure of is an
`inquiry` with `attributes.classified_as` and `attributes.confidence`, and
`attributes.classified_from` names the column read. The notes become `text`;
unmapped columns become attributes. The event id is `call-<call_id>`, so
ingesting the same export twice yields the same ids and the engine ignores the
repeats.

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
from producers.adapters.intent import DEFAULT_TYPE, IntentClassifier, default_classifier
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
        "reason",
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
            str(code).strip().upper(): self._disposition(str(code), meaning)
            for code, meaning in mapping_section(mapping, "dispositions", dict).items()
        }
        self.default_type = str(mapping.get("default_type") or DEFAULT_TYPE)
        self.max_text_chars = int(mapping.get("max_text_chars") or 4000)
        if self.max_text_chars <= 0:
            raise MappingError(f"{self.mapping_file}: max_text_chars must be positive")
        classify = mapping.get("classify_text", True)
        if not isinstance(classify, bool):
            raise MappingError(f"{self.mapping_file}: classify_text must be true or false")
        self.classifier: IntentClassifier | None = default_classifier() if classify else None

    def _disposition(self, code: str, meaning: Any) -> tuple[str, dict[str, str]]:
        """A disposition's event type and the attributes it sets: `CODE: type`, or
        `CODE: {type: T, attributes: {name: value}}` (e.g. an opt-out recorded at wrap-up)."""
        if isinstance(meaning, str):
            return meaning, {}
        where = f"{self.mapping_file}: dispositions.{code}"
        if not isinstance(meaning, Mapping) or not isinstance(meaning.get("type"), str):
            raise MappingError(f"{where}: expected an event type or {{type, attributes}}")
        if set(meaning) - {"type", "attributes"}:
            raise MappingError(f"{where}: unknown field (use type, attributes)")
        attributes = meaning.get("attributes") or {}
        if not isinstance(attributes, Mapping) or not all(
            isinstance(v, str) for v in attributes.values()
        ):
            raise MappingError(f"{where}.attributes: expected a mapping of names to text")
        return str(meaning["type"]), {str(k): v for k, v in attributes.items()}

    def event_type(self, disposition: str | None) -> str:
        """The event type of a disposition code (case-insensitive), or the default type."""
        if not disposition:
            return self.default_type
        known = self.dispositions.get(disposition.strip().upper())
        return self.default_type if known is None else known[0]

    def text_type(
        self, disposition: str | None, reason: str | None, notes: str | None
    ) -> tuple[str, dict[str, str]]:
        """The event type of a row and the attributes saying how it was found: the
        disposition's when the mapping lists it, else what the reason (or notes) says."""
        if disposition:
            known = self.dispositions.get(disposition.strip().upper())
            if known is not None:
                return known[0], dict(known[1])
        source, text = ("reason", reason) if reason else ("notes", notes)
        if self.classifier is None or not text:
            return self.default_type, {}
        intent = self.classifier.classify("", text[: self.max_text_chars], strict=True)
        found = {"classified_from": source}
        if intent.uncertain:
            found["classified_as"] = intent.classified_as
            found["confidence"] = f"{intent.confidence:.2f}"
        return (self.default_type if intent.type == DEFAULT_TYPE else intent.type), found

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
        reason = optional_text(fields.get("reason"))
        event_type, attributes = self.text_type(disposition, reason, notes)
        if disposition is not None:
            attributes["disposition"] = disposition
        if reason is not None:
            attributes["reason"] = reason[:300]
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
            type=event_type,
            occurred_at=occurred_at,
            source=self.source,
            product=optional_text(fields.get("product")),
            reference=optional_text(fields.get("reference")),
            customer_since=self.dates(fields.get("customer_since"), "customer_since"),
            text=notes,
            attributes=attributes,
        )
