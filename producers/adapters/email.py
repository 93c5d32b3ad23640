"""Customer e-mail (RFC 5322 .eml files, a maildir or an mbox) as interaction events on `email`.

Messages are parsed with the standard library (`email`, `mailbox`). The sender
address becomes the customer through a lookup file (CSV `email,customer_id`, or
a JSON/YAML mapping), falling back to a helpdesk header such as
`X-Customer-ID`; the event type comes from keyword rules on the subject, then
the body (`producers/mappings/email.yaml`); the message text, with quoted
replies and signatures removed and whitespace collapsed, is kept in `text`.
The event id is `email-<Message-ID>` (or a hash of the raw message when it has
none), so re-reading a mailbox is idempotent downstream.

Parsing (`parse_message`) and mapping (`EmailAdapter.map_record`) are separate
steps: the journey simulator hands already-split messages to the same mapping.
Never publishes and knows no Kafka.
"""

from __future__ import annotations

import csv
import email
import email.policy
import email.utils
import hashlib
import html
import json
import mailbox
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import yaml

from producers.adapters.base import (
    MappingError,
    RecordError,
    Rejection,
    SourceRecord,
    load_mapping,
    mapping_section,
)
from schemas.records import InteractionEvent

EML_SUFFIXES = frozenset({".eml", ".msg", ".txt", ""})


@dataclass(frozen=True, slots=True)
class EmailMessage:
    """One received message, split into what the mapping needs (times in epoch ms UTC)."""

    message_id: str | None
    sender: str
    occurred_at: int
    subject: str
    body: str
    customer_header: str | None = None
    digest: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def load_customer_lookup(path: Path) -> dict[str, str]:
    """Sender address (lower case) → customer id from a CSV (`email,customer_id`) or JSON/YAML."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise MappingError(f"{path}: cannot read customer lookup: {exc.strerror}") from exc
    lookup: dict[str, str] = {}
    if path.suffix.lower() in (".json", ".yaml", ".yml"):
        try:
            loaded = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise MappingError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise MappingError(f"{path}: expected a mapping of e-mail address to customer id")
        for address, customer in loaded.items():
            lookup[str(address).strip().lower()] = str(customer).strip()
        return lookup
    rows = csv.reader(text.splitlines())
    header = [cell.strip().lower() for cell in next(rows, [])]
    address_col = next((header.index(c) for c in ("email", "address", "sender") if c in header), -1)
    customer_col = next(
        (header.index(c) for c in ("customer_id", "customer", "account_id") if c in header), -1
    )
    if address_col < 0 or customer_col < 0:
        raise MappingError(f"{path}:1: expected a header with columns email,customer_id")
    for lineno, row in enumerate(rows, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) <= max(address_col, customer_col):
            raise MappingError(f"{path}:{lineno}: row has {len(row)} fields")
        lookup[row[address_col].strip().lower()] = row[customer_col].strip()
    return lookup


# --- parsing RFC 5322 ------------------------------------------------------------------------


def parse_message(raw: bytes, customer_header: str = "X-Customer-ID") -> EmailMessage:
    """Split one RFC 5322 message; raises RecordError naming the header at fault."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    try:
        sender_header = message.get("From")
    except Exception as exc:  # a malformed header the policy cannot even fold
        raise RecordError("From", f"unreadable header ({exc})") from None
    if not sender_header:
        raise RecordError("From", "header is missing")
    address = email.utils.parseaddr(str(sender_header))[1].strip().lower()
    if "@" not in address:
        raise RecordError("From", f"{str(sender_header)!r} holds no e-mail address")
    date_header = message.get("Date")
    if not date_header:
        raise RecordError("Date", "header is missing")
    try:
        moment = email.utils.parsedate_to_datetime(str(date_header))
    except (TypeError, ValueError, IndexError):
        raise RecordError("Date", f"{str(date_header)!r} is not an RFC 5322 date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    message_id = str(message.get("Message-ID") or "").strip().strip("<>").strip() or None
    customer = message.get(customer_header) if customer_header else None
    return EmailMessage(
        message_id=message_id,
        sender=address,
        occurred_at=int(moment.timestamp() * 1000),
        subject=str(message.get("Subject") or "").strip(),
        body=_body_text(message),
        customer_header=str(customer).strip() if customer else None,
        digest=hashlib.sha256(raw).hexdigest()[:32],
        headers={"to": str(message.get("To") or "").strip()},
    )


def _body_text(message: Any) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # unknown charset, broken transfer encoding
        payload = part.get_payload(decode=True) or b""
        content = payload.decode("utf-8", errors="replace")
    if not isinstance(content, str):
        return ""
    if part.get_content_subtype() == "html":
        content = html.unescape(_TAGS.sub(" ", _SCRIPTS.sub(" ", content)))
    return content


_SCRIPTS = re.compile(r"(?is)<(script|style)\b.*?</\1>")
_TAGS = re.compile(r"(?s)<[^>]*>")
_QUOTE_HEADER = re.compile(r"^(On .{4,200} wrote:|-{2,}\s*Original Message\s*-{2,})\s*$", re.I)


def clean_text(body: str, max_chars: int) -> str | None:
    """The customer's own words: no quoted reply, no signature, whitespace collapsed, cut."""
    if "\n" in body:
        kept: list[str] = []
        for line in body.splitlines():
            stripped = line.strip()
            if line.rstrip("\r") in ("-- ", "--") or _QUOTE_HEADER.match(stripped):
                break
            if stripped.startswith(">"):
                continue
            kept.append(stripped)
        body = " ".join(kept)
    text = " ".join(body.split())
    if len(text) > max_chars:
        text = text[:max_chars]
    return text or None


# --- mapping ---------------------------------------------------------------------------------


def _keyword_pattern(keyword: str) -> str:
    words = keyword.strip().split()
    if not words:
        raise ValueError("empty keyword")
    parts = [re.escape(w[:-1]) + r"\w*" if w.endswith("*") else re.escape(w) for w in words]
    tail = "" if words[-1].endswith("*") else r"\b"
    return r"\b" + r"\s+".join(parts) + tail


class EmailAdapter:
    """Maps parsed customer e-mail to `email` events: lookup, keyword rules, trimmed text."""

    kind = "email"
    channel = "email"

    def __init__(
        self,
        mapping_path: Path | None = None,
        *,
        customers: Mapping[str, str] | None = None,
        customers_path: Path | None = None,
    ) -> None:
        mapping = load_mapping("email", mapping_path)
        self.mapping_file = str(mapping["__file__"])
        self.source = str(mapping.get("source") or "helpdesk")
        self.customer_header = str(mapping.get("customer_header") or "")
        self.default_type = str(mapping.get("default_type") or "inquiry")
        self.max_text_chars = int(mapping.get("max_text_chars") or 4000)
        self.rules: list[tuple[str, re.Pattern[str]]] = []
        self.stems: list[tuple[str, ...]] = []
        for index, rule in enumerate(mapping_section(mapping, "rules", list)):
            keywords = rule.get("keywords") if isinstance(rule, dict) else None
            if not isinstance(rule, dict) or not rule.get("type") or not keywords:
                raise MappingError(f"{self.mapping_file}: rules[{index}] needs type and keywords")
            try:
                pattern = "|".join(_keyword_pattern(str(k)) for k in keywords)
            except ValueError as exc:
                raise MappingError(f"{self.mapping_file}: rules[{index}]: {exc}") from None
            self.rules.append((str(rule["type"]), re.compile(pattern, re.IGNORECASE)))
            # A keyword can only match where its first word's letters appear: a cheap
            # substring test on the case-folded text spares most regex searches.
            self.stems.append(
                tuple(str(k).strip().split()[0].rstrip("*").casefold() for k in keywords)
            )
        self.extract: list[tuple[str, list[re.Pattern[str]]]] = []
        for name, patterns in mapping_section(mapping, "extract", dict).items():
            compiled: list[re.Pattern[str]] = []
            for pattern in [patterns] if isinstance(patterns, str) else list(patterns or []):
                try:
                    regex = re.compile(str(pattern))
                except re.error as exc:
                    raise MappingError(f"{self.mapping_file}: extract.{name}: {exc}") from None
                if "value" not in regex.groupindex:
                    raise MappingError(
                        f"{self.mapping_file}: extract.{name}: needs a (?P<value>...) group"
                    )
                compiled.append(regex)
            self.extract.append((str(name), compiled))
        lookup = dict(customers or {})
        if customers_path is not None:
            lookup.update(load_customer_lookup(customers_path))
        self.customers = {address.lower(): customer for address, customer in lookup.items()}

    def event_type(self, subject: str, body: str) -> str:
        """The first rule whose keywords appear in the subject, else in the body, else default."""
        for text in (subject, body):
            if text:
                folded = text.casefold()
                for (event_type, pattern), stems in zip(self.rules, self.stems, strict=True):
                    for stem in stems:
                        if stem in folded:
                            if pattern.search(text):
                                return event_type
                            break
        return self.default_type

    def map_record(self, message: EmailMessage) -> InteractionEvent:
        """One parsed message as an event; raises RecordError naming the header at fault."""
        customer_id = self.customers.get(message.sender) or message.customer_header
        if not customer_id:
            raise RecordError(
                "From",
                "the sender's address is not in the customer lookup"
                + (
                    f" and the message has no {self.customer_header} header"
                    if self.customer_header
                    else ""
                ),
            )
        if message.message_id:
            event_id = f"email-{message.message_id}"
        elif message.digest:
            event_id = f"email-sha256-{message.digest}"
        else:
            raise RecordError("Message-ID", "header is missing")
        text = clean_text(message.body, self.max_text_chars)
        attributes = {"from": message.sender}
        if message.subject:
            attributes["subject"] = message.subject[:300]
        reference = product = None
        if self.extract:
            searched = f"{message.subject}\n{message.body}"
            for name, patterns in self.extract:
                value = _first_match(patterns, searched)
                if not value:
                    continue
                if name == "reference":
                    reference = value
                elif name == "product":
                    product = value.lower()
                else:
                    attributes[name] = value
        return InteractionEvent(
            event_id=event_id,
            customer_id=customer_id,
            channel="email",
            type=self.event_type(message.subject, message.body),
            occurred_at=message.occurred_at,
            source=self.source,
            product=product,
            reference=reference,
            text=text,
            attributes=attributes,
        )

    def records(self, path: Path) -> Iterator[SourceRecord | Rejection]:
        """Messages of an .eml file, a folder of .eml files, a maildir or an mbox."""
        for file, line, raw in _raw_messages(path):
            try:
                parsed = parse_message(raw, self.customer_header)
            except RecordError as exc:
                yield Rejection(file, line, str(exc))
                continue
            yield SourceRecord(file, line, {"message": parsed})


def _first_match(patterns: list[re.Pattern[str]], text: str) -> str | None:
    for pattern in patterns:
        found = pattern.search(text)
        if found is not None:
            return found.group("value").strip()
    return None


def _raw_messages(path: Path) -> Iterator[tuple[str, int, bytes]]:
    """(file, line of the message's start, raw bytes) for every message under `path`."""
    if path.is_dir():
        if (path / "cur").is_dir() or (path / "new").is_dir():
            files = sorted(
                p
                for sub in ("new", "cur")
                if (path / sub).is_dir()
                for p in (path / sub).iterdir()
                if p.is_file() and not p.name.startswith(".")
            )
        else:
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".eml")
        for file in files:
            yield str(file), 0, file.read_bytes()
        return
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    with path.open("rb") as handle:
        head = handle.read(5)
    if head != b"From ":
        yield str(path), 0, path.read_bytes()
        return
    # mailbox.mbox starts a message at every line beginning with "From "; count them the same way.
    starts: list[int] = []
    with path.open("rb") as handle:
        for lineno, text in enumerate(handle, start=1):
            if text.startswith(b"From "):
                starts.append(lineno)
    box = mailbox.mbox(str(path), create=False)
    try:
        for index, key in enumerate(box.iterkeys()):
            line = starts[index] if index < len(starts) else 0
            yield str(path), line, box.get_bytes(key)
    finally:
        box.close()


def count_messages(path: Path) -> int:
    """How many messages `_raw_messages` would yield, without reading them."""
    if path.is_dir():
        if (path / "cur").is_dir() or (path / "new").is_dir():
            return sum(
                1
                for sub in ("new", "cur")
                if (path / sub).is_dir()
                for p in (path / sub).iterdir()
                if p.is_file() and not p.name.startswith(".")
            )
        return sum(1 for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".eml")
    with path.open("rb") as handle:
        if handle.read(5) != b"From ":
            return 1
        handle.seek(0)
        return sum(1 for line in handle if line.startswith(b"From "))
