"""Billing-system exports (CSV or JSON lines) as interaction events on channel `billing`.

Rows are invoices, payments, failed payments, payment demands (dunning),
meter readings and account openings, told apart by a record-type column that
the mapping file (`producers/mappings/billing.yaml`) turns into an event type.
Amounts, currency, due dates, references (invoice numbers) and the customer's
start date are carried over; other columns (meter id, reading, failure reason)
become attributes. The event id is `billing-<record_id>`: re-ingesting an
export is idempotent downstream.

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
    parse_amount,
    parse_currency,
    parse_timestamp,
    required_text,
)
from producers.adapters.registry import register
from schemas.records import InteractionEvent

#: Columns the adapter interprets; every other non-blank column goes to attributes.
BILLING_FIELDS = frozenset(
    {
        "record_id",
        "customer_id",
        "record_type",
        "posted_at",
        "product",
        "reference",
        "amount",
        "currency",
        "due_date",
        "customer_since",
        "text",
    }
)


# Position of each carried field a mapping may require, in map_record's `carried` tuple.
_CARRIED = {"product": 0, "reference": 1, "amount": 2, "currency": 3, "due_date": 4}


@register
class BillingAdapter(TableAdapter):
    """Maps billing export rows (canonical column names) to `billing` events."""

    kind = "billing"
    order = 3
    channel = "billing"
    mapping_name = "billing"
    default_source = "billing-core"

    def configure(self, mapping: Mapping[str, Any]) -> None:
        """Record types, the default type and the fields each type requires."""
        self.record_types = {
            str(code).strip().upper(): str(event_type)
            for code, event_type in mapping_section(mapping, "record_types", dict).items()
        }
        default = mapping.get("default_type")
        self.default_type: str | None = str(default) if default else None
        self.required: dict[str, tuple[str, ...]] = {}
        for event_type, names in mapping_section(mapping, "required", dict).items():
            if not isinstance(names, list):
                raise MappingError(f"{self.mapping_file}: required.{event_type} must be a list")
            self.required[str(event_type)] = tuple(str(n) for n in names)

    def event_type(self, record_type: str) -> str:
        """The event type of a record type (case-insensitive); RecordError when unknown."""
        event_type = self.record_types.get(record_type.upper(), self.default_type)
        if event_type is None:
            known = ", ".join(sorted(self.record_types))
            raise RecordError(
                "record_type", f"unknown record type {record_type!r} (known: {known})"
            )
        return event_type

    def map_record(self, fields: Mapping[str, Any]) -> InteractionEvent:
        """One billing row (canonical names) as an event; raises RecordError naming the field.

        This runs for every simulated billing row, hence the inline fast paths: a value of the
        expected type is taken as is, anything else goes through the full parser.
        """
        get = fields.get
        record_id = get("record_id")
        record_id = (record_id.strip() if record_id.__class__ is str else None) or required_text(
            fields, "record_id"
        )
        customer_id = get("customer_id")
        customer_id = (
            customer_id.strip() if customer_id.__class__ is str else None
        ) or required_text(fields, "customer_id")
        record_type = get("record_type")
        event_type = (
            self.record_types.get(record_type.upper()) if record_type.__class__ is str else None
        ) or self.event_type(required_text(fields, "record_type"))
        posted = get("posted_at")
        if posted is None:
            raise RecordError("posted_at", "missing required field")
        occurred_at = parse_timestamp(posted, "posted_at", self.timezone)
        amount = get("amount")
        if amount is not None and amount.__class__ is not float:
            amount = parse_amount(amount, "amount")
        currency = get("currency")
        if currency is not None:
            currency = parse_currency(currency, "currency")
        due_date = get("due_date")
        if due_date is not None:
            due_date = self.dates(due_date, "due_date")
        customer_since = get("customer_since")
        if customer_since is not None:
            customer_since = self.dates(customer_since, "customer_since")
        product = optional_text(get("product"))
        reference = optional_text(get("reference"))
        attributes: dict[str, str] = {}
        if not fields.keys() <= BILLING_FIELDS:
            for name, value in fields.items():
                if name not in BILLING_FIELDS and value is not None and name is not None:
                    text = attribute_text(value)
                    if text:
                        attributes[name] = text
        required = self.required.get(event_type)
        if required:
            carried = (product, reference, amount, currency, due_date)
            for name in required:
                position = _CARRIED.get(name)
                value = carried[position] if position is not None else attributes.get(name)
                if value is None or value == "":
                    raise RecordError(name, f"required for {event_type} records")
        if amount is not None and currency is None:
            raise RecordError("currency", "required when an amount is given")
        return InteractionEvent(
            "billing-" + record_id,
            customer_id,
            "billing",
            event_type,
            occurred_at,
            self.source,
            product,
            reference,
            amount,
            currency,
            due_date,
            customer_since,
            optional_text(get("text")),
            attributes,
        )
