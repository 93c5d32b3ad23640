"""Customer e-mail (RFC 5322 .eml files, a maildir or an mbox) as interaction events on `email`.

Messages are parsed with the standard library (`email`, `mailbox`). The sender
address becomes the customer through a lookup file (CSV `email,customer_id`, or
a JSON/YAML mapping), falling back to a helpdesk header such as
`X-Customer-ID`; the event type comes from the intent classifier
(`producers.adapters.intent`, docs/design.md 11.6) reading the subject and the
sender's own words (quoted replies, forwarded messages and signatures are not
read); a reply in a thread (`In-Reply-To`/`References`, a `Re:` subject, or a
subject naming a case an earlier message of the run opened) is about its thread
unless it clearly reopens it; what the classifier is unsure of is an `inquiry`
with `attributes.classified_as` and `attributes.confidence`. Auto-replies make
no event (`Skipped`, counted). The message text, with quoted replies and
signatures removed and whitespace collapsed, is kept in `text`. The event id is
`email-<Message-ID>` (or a hash of the raw message when it has none), so
re-reading a mailbox is idempotent downstream; the Message-ID is also kept in
`attributes.message_id`.

Hostile mail is data, not a hazard: HTML becomes text in one linear pass
(`html_to_text`), a message larger than `MAX_MESSAGE_BYTES` is rejected without
being read whole (also inside an mbox, which is split in bounded memory), a
message nesting more than `MAX_MULTIPART_DEPTH` multiparts is rejected before it
is parsed, any error of one message is a rejection naming it, only the first
`SEARCH_CHARS` of a message are classified and searched, and a `Date`
more than the allowed skew in the future gives way to the delivery time (the
newest `Received` header's date, else the time of reading).

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
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any, ClassVar, Final, Self

import yaml

from producers.adapters.base import (
    MAX_MESSAGE_BYTES,
    IngestOptions,
    MappingError,
    RecordError,
    Rejection,
    Skipped,
    SourceRecord,
    load_mapping,
    mapping_section,
)
from producers.adapters.intent import (
    DEFAULT_TYPE,
    UNKNOWN,
    Intent,
    IntentClassifier,
    default_classifier,
    reply_subject,
)
from producers.adapters.registry import register
from schemas.records import InteractionEvent

#: Only this much of a subject and a body is classified and searched for extracted fields.
SEARCH_CHARS = 16_384
#: A message whose multiparts nest deeper than this is rejected before it is parsed (the
#: standard library's parser recurses once per level).
MAX_MULTIPART_DEPTH = 50
#: How many (customer, case) pairs an adapter remembers as opened during one run.
MAX_KNOWN_CASES = 100_000
#: `Skipped.reason` of an auto-reply.
AUTO_REPLY = "auto_reply"


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
    #: When the newest hop received it (the top `Received` header), if that says.
    delivered_at: int | None = None
    #: It answers another message (`In-Reply-To` or `References`).
    in_thread: bool = False
    #: Sent by a machine in answer to ours (`Auto-Submitted`, an out-of-office subject).
    auto_reply: bool = False


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
    depth = _multipart_depth(raw)
    if depth > MAX_MULTIPART_DEPTH:
        raise RecordError(
            "Content-Type",
            f"holds {depth} multiparts, which may nest (at most {MAX_MULTIPART_DEPTH})",
        )
    message = email.message_from_bytes(raw, policy=email.policy.default)
    try:
        sender_header = message.get("From")
    except Exception as exc:  # a malformed header the policy cannot even fold
        raise RecordError("From", f"unreadable header ({type(exc).__name__})") from None
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
        delivered_at=_received_at(message),
        message_id=message_id,
        sender=address,
        occurred_at=int(moment.timestamp() * 1000),
        subject=str(message.get("Subject") or "").strip(),
        body=_body_text(message),
        customer_header=str(customer).strip() if customer else None,
        digest=hashlib.sha256(raw).hexdigest()[:32],
        headers={"to": str(message.get("To") or "").strip()},
        in_thread=bool(message.get("In-Reply-To") or message.get("References")),
        auto_reply=_is_auto_reply(message),
    )


_MULTIPART = re.compile(rb"(?im)^content-type:[ \t]*multipart/")
_AUTO_SUBJECT = re.compile(
    r"^\s*(?:auto(?:matic)?[- ]?(?:reply|response|antwort)|out of (?:the )?office|"
    r"abwesenheitsnotiz|r[ée]ponse automatique|respuesta autom[áa]tica|autosvar|"
    r"automatisch antwoord|risposta automatica|away from (?:the )?office)\b",
    re.IGNORECASE,
)


def _multipart_depth(raw: bytes) -> int:
    """An upper bound of how deep the message's multiparts nest: how many there are (in
    the first 4 MiB; the parser needs the nesting to have started there to recurse)."""
    return len(_MULTIPART.findall(raw, 0, 4 * 1024 * 1024))


def _is_auto_reply(message: Any) -> bool:
    """RFC 3834 `Auto-Submitted`, the vendors' own headers, or an out-of-office subject."""
    submitted = str(message.get("Auto-Submitted") or "").strip().lower()
    if submitted and submitted != "no":
        return True
    if message.get("X-Autoreply") or message.get("X-Autorespond"):
        return True
    if str(message.get("Precedence") or "").strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.match(str(message.get("Subject") or "")))


def _received_at(message: Any) -> int | None:
    """The date of the newest `Received` header (after its last ';'), in epoch ms."""
    try:
        received = message.get("Received")
        if not received:
            return None
        moment = email.utils.parsedate_to_datetime(str(received).rpartition(";")[2].strip())
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


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
        content = html_to_text(content)
    return content


#: Elements whose content is not text, skipped whole.
_RAW_TEXT = ("script", "style")
#: Elements that end a line of text (so quoted replies and signatures stay recognisable).
_BLOCK = re.compile(r"br|p|div|li|tr|h[1-6]|blockquote|pre|table|ul|ol|hr|section|article")


def html_to_text(markup: str) -> str:
    """The text of an HTML document in one linear pass (every scan moves past what it read).

    A small tokenizer after the WHATWG states that matter for text: tags (a block element
    ends a line), comments, declarations and processing instructions are dropped, as is the
    content of script and style; a `<` that starts no tag is text; an unterminated tag or
    comment ends the document; character references are decoded. Python's `html.parser`
    rescans unterminated constructs and takes quadratic time on hostile input.
    """
    lower = markup.lower()
    out: list[str] = []
    end = len(markup)
    i = 0
    while i < end:
        lt = markup.find("<", i)
        if lt < 0:
            out.append(markup[i:])
            break
        out.append(markup[i:lt])
        following = markup[lt + 1 : lt + 2]
        if markup.startswith("<!--", lt):
            close = markup.find("-->", lt + 4)
            i = end if close < 0 else close + 3
            continue
        if following in ("!", "?"):  # declaration, CDATA, processing instruction
            close = markup.find(">", lt + 2)
            i = end if close < 0 else close + 1
            continue
        closing = following == "/"
        name_at = lt + 2 if closing else lt + 1
        if not markup[name_at : name_at + 1].isalpha():
            out.append("<")  # not a tag: text
            i = lt + 1
            continue
        close = markup.find(">", name_at)
        if close < 0:
            break  # an unterminated tag runs to the end
        name_end = name_at
        while name_end < close and markup[name_end].isalnum():
            name_end += 1
        name = lower[name_at:name_end]
        out.append("\n" if _BLOCK.fullmatch(name) else " ")
        i = close + 1
        if not closing and name in _RAW_TEXT:
            stop = lower.find(f"</{name}", i)
            i = end if stop < 0 else stop
    return html.unescape("".join(out))


_QUOTE_HEADER = re.compile(
    r"^(On .{4,200} wrote:|-{2,}\s*Original Message\s*-{2,}|-{2,}\s*Forwarded message\s*-{2,}|"
    r"Begin forwarded message:|-{2,}\s*Weitergeleitete Nachricht\s*-{2,}|"
    r"Le .{4,200} a [ée]crit\s?:|Am .{4,200} schrieb .{1,200}:|El .{4,200} escribi[óo]:|"
    r"Op .{4,200} schreef .{1,200}:)\s*$",
    re.I,
)
#: An Outlook-style quoted header block: a `From:` line followed by `Sent:` or `Date:`.
_OUTLOOK_FROM = re.compile(r"^\*?(From|Von|De)\s*:\*?\s", re.I)
_OUTLOOK_NEXT = re.compile(r"^\*?(Sent|Date|Gesendet|Envoy[ée]|To|An|Subject)\s*:", re.I)
_MOBILE_SIGNATURE = re.compile(
    r"^(Sent from my \w+|Sent from (Outlook|Mail|Yahoo)|Get Outlook for|Von meinem \w+ gesendet)",
    re.I,
)
#: A closing line ("Kind regards", "Thanks, Jan"): what follows it is a signature.
_VALEDICTION = re.compile(
    r"^(?:(?:many|kind|best|warm|warmest|with)\s+)?(?:thanks|thank you|regards|wishes|cheers|"
    r"best|yours(?: sincerely| faithfully| truly)?|sincerely|rgds|br|ta)"
    r"(?:\s+(?:again|so much|in advance|a lot))?[,.!]*(?:\s+[\w.'-]+){0,2}[,.!]*$",
    re.I,
)


def own_lines(body: str) -> list[str]:
    """The lines the sender wrote: up to a quoted or forwarded message or a signature
    delimiter, without `>` lines or a mobile client's signature."""
    kept: list[str] = []
    lines = body.splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if line.rstrip("\r") in ("-- ", "--") or _QUOTE_HEADER.match(stripped):
            break
        if (
            _OUTLOOK_FROM.match(stripped)
            and index + 1 < len(lines)
            and _OUTLOOK_NEXT.match(lines[index + 1].strip())
        ):
            break
        if stripped.startswith(">") or _MOBILE_SIGNATURE.match(stripped):
            continue
        kept.append(stripped)
    return kept


def own_words(body: str) -> str:
    """What the classifier reads: the sender's own lines up to a closing line ("Kind
    regards", "Thanks, Jan") and the signature after it, one line each."""
    kept = own_lines(body)
    for index, line in enumerate(kept):
        if index > 0 and _VALEDICTION.match(line):
            rest = [rest for rest in kept[index + 1 :] if rest]
            if len(rest) <= 4 and all(len(rest_line) <= 60 for rest_line in rest):
                kept = kept[:index]
                break
    # A long line was wrapped by the mail client: it goes on in the next one.
    joined: list[str] = []
    for line in kept:
        if joined and len(joined[-1]) >= _WRAPPED and line:
            joined[-1] = f"{joined[-1]} {line}"
        else:
            joined.append(line)
    return "\n".join(joined).strip()


#: A line this long (or longer) was most likely wrapped, not ended, by its writer.
_WRAPPED = 50


def clean_text(body: str, max_chars: int) -> str | None:
    """The customer's own words: no quoted reply, no signature, whitespace collapsed, cut."""
    if "\n" in body:
        body = " ".join(own_lines(body))
    text = " ".join(body.split())
    if len(text) > max_chars:
        text = text[:max_chars]
    return text or None


# --- mapping ---------------------------------------------------------------------------------


@register
class EmailAdapter:
    """Maps parsed customer e-mail to `email` events: lookup, intent, trimmed text."""

    kind: ClassVar[str] = "email"
    order: ClassVar[int] = 2
    channel: ClassVar[str] = "email"
    mapping_name: ClassVar[str] = "email"

    def __init__(
        self,
        mapping_path: Path | None = None,
        *,
        customers: Mapping[str, str] | None = None,
        customers_path: Path | None = None,
        max_future_skew_ms: int | None = None,
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        remember_cases: bool = False,
        classifier: IntentClassifier | None = None,
    ) -> None:
        """`max_future_skew_ms`: how far past `now_ms()` a `Date` header may lie before the
        delivery time replaces it (MOMENTS_MAX_FUTURE_SKEW; None: trust every date, as the
        simulator does with its made-up history). `remember_cases`: a message whose subject
        names a case an earlier message of this adapter opened for the same customer is a
        reply in that case's thread (what `moments ingest` does; the simulator's messages
        each stand alone)."""
        self.max_future_skew_ms = max_future_skew_ms
        self.now_ms = now_ms
        mapping = load_mapping(self.mapping_name, mapping_path)
        self.mapping_file = str(mapping["__file__"])
        if "rules" in mapping:
            raise MappingError(
                f"{self.mapping_file}: section 'rules' is no longer read: the event type comes"
                " from the intent classifier (producers/mappings/intents.yaml); remove it"
            )
        self.source = str(mapping.get("source") or "helpdesk")
        self.customer_header = str(mapping.get("customer_header") or "")
        self.max_text_chars = int(mapping.get("max_text_chars") or 4000)
        self.classifier = classifier if classifier is not None else default_classifier()
        self.remember_cases = remember_cases
        self.known_cases: set[tuple[str, str]] = set()
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

    @classmethod
    def for_ingest(cls, options: IngestOptions) -> Self:
        """The adapter with the command line's mapping, customer lookup and allowed skew."""
        return cls(
            options.mapping,
            customers_path=options.customers,
            max_future_skew_ms=options.max_future_skew_ms,
            remember_cases=True,
        )

    def classify(self, subject: str, body: str, *, in_thread: bool = False) -> Intent:
        """The intent of a message from its subject and body (quotes and signature are not
        read); `in_thread`: it answers another message, whatever its subject says."""
        bare, replied, forwarded = reply_subject(subject[:SEARCH_CHARS])
        words = own_words(body[:SEARCH_CHARS])
        if forwarded and not words.strip():
            return Intent(DEFAULT_TYPE, UNKNOWN, 0.0)  # a forward with no word of its own
        return self.classifier.classify(
            "" if forwarded else bare, words, strict=in_thread or replied
        )

    def event_type(self, subject: str, body: str) -> str:
        """The event type `classify` gives a message standing alone."""
        return self.classify(subject, body).type

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
        body = message.body[:SEARCH_CHARS]
        attributes = {"from": message.sender}
        if message.message_id:
            attributes["message_id"] = message.message_id[:300]
        if message.subject:
            attributes["subject"] = message.subject[:300]
        occurred_at = message.occurred_at
        skew = self.max_future_skew_ms
        latest = occurred_at if skew is None else self.now_ms() + skew
        if occurred_at > latest:
            # A sender's clock (or a forged Date) in the future: when it reached us instead.
            delivered = message.delivered_at
            if delivered is not None and delivered <= latest:
                occurred_at, attributes["date_from"] = delivered, "received"
            else:
                occurred_at, attributes["date_from"] = self.now_ms(), "ingested"
        reference = product = subject_reference = None
        if self.extract:
            subject = message.subject[:SEARCH_CHARS]
            searched = f"{subject}\n{body}"
            for name, patterns in self.extract:
                value = _first_match(patterns, searched)
                if not value:
                    continue
                if name == "reference":
                    reference = value
                    subject_reference = _first_match(patterns, subject)
                elif name == "product":
                    product = value.lower()
                else:
                    attributes[name] = value
        in_thread = message.in_thread or (
            subject_reference is not None and (customer_id, subject_reference) in self.known_cases
        )
        intent = self.classify(message.subject, body, in_thread=in_thread)
        if intent.uncertain:
            attributes["classified_as"] = intent.classified_as
            attributes["confidence"] = f"{intent.confidence:.2f}"
        if self.remember_cases and reference is not None and intent.type in _OPENS_CASE:
            if len(self.known_cases) >= MAX_KNOWN_CASES:
                self.known_cases.clear()
            self.known_cases.add((customer_id, reference))
        return InteractionEvent(
            event_id=event_id,
            customer_id=customer_id,
            channel="email",
            type=intent.type,
            occurred_at=occurred_at,
            source=self.source,
            product=product,
            reference=reference,
            text=text,
            attributes=attributes,
        )

    def map_source(self, record: SourceRecord) -> InteractionEvent:
        """`map_record` of the message `records` parsed."""
        return self.map_record(record.fields["message"])

    def estimate(self, path: Path) -> int:
        """The messages under `path`, counted without being read."""
        return count_messages(path)

    def records(self, path: Path) -> Iterator[SourceRecord | Rejection | Skipped]:
        """Messages of an .eml file, a folder of .eml files, a maildir or an mbox; an
        auto-reply is `Skipped`, a message that cannot be read a `Rejection` naming it."""
        for file, line, raw in _raw_messages(path):
            if raw is None:
                yield Rejection(
                    file, line, f"message exceeds the limit of {MAX_MESSAGE_BYTES} bytes"
                )
                continue
            try:
                parsed = parse_message(raw, self.customer_header)
            except RecordError as exc:
                yield Rejection(file, line, str(exc))
                continue
            except Exception as exc:  # one hostile message never stops the run
                # Only the error's kind: its text may quote the message.
                yield Rejection(file, line, f"unreadable message ({type(exc).__name__})")
                continue
            if parsed.auto_reply:
                yield Skipped(file, line, AUTO_REPLY, parsed.message_id)
                continue
            yield SourceRecord(file, line, {"message": parsed})


#: The types whose reference an e-mail opens a case with.
_OPENS_CASE: Final = frozenset({"cancellation_requested", "dispute_opened", "complaint_filed"})


def _first_match(patterns: list[re.Pattern[str]], text: str) -> str | None:
    for pattern in patterns:
        found = pattern.search(text)
        if found is not None:
            return found.group("value").strip()
    return None


def _raw_messages(path: Path) -> Iterator[tuple[str, int, bytes | None]]:
    """(file, line of the message's start, raw bytes) for every message under `path`;
    None instead of the bytes for a message over `MAX_MESSAGE_BYTES` (never read whole)."""
    if path.is_dir():
        for file in _message_files(path):
            yield str(file), 0, _read_capped(file)
        return
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    with path.open("rb") as handle:
        head = handle.read(5)
    if head != b"From ":
        yield str(path), 0, _read_capped(path)
        return
    with path.open("rb") as scan, path.open("rb") as handle:
        for line, start, stop in _mbox_spans(scan):
            if stop - start > MAX_MESSAGE_BYTES:
                yield str(path), line, None
                continue
            handle.seek(start)
            yield str(path), line, handle.read(stop - start)


def _message_files(path: Path) -> list[Path]:
    """The message files of a maildir (new/, cur/) or of a folder of .eml files."""
    if (path / "cur").is_dir() or (path / "new").is_dir():
        return sorted(
            p
            for sub in ("new", "cur")
            if (path / sub).is_dir()
            for p in (path / sub).iterdir()
            if p.is_file() and not p.name.startswith(".")
        )
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".eml")


def _read_capped(file: Path) -> bytes | None:
    """The file's bytes, or None when it holds more than `MAX_MESSAGE_BYTES`."""
    with file.open("rb") as handle:
        raw = handle.read(MAX_MESSAGE_BYTES + 1)
    return None if len(raw) > MAX_MESSAGE_BYTES else raw


_PIECE = 64 * 1024


def _mbox_spans(handle: Any) -> Iterator[tuple[int, int, int]]:
    """(line of the "From " line, first byte after it, end) of each message of an mbox,
    read in pieces of bounded size (a line may be any length). The spans are those of
    `mailbox.mbox` (a blank line before the next "From " line is not the message's), so
    the bytes, and the ids hashed from them, stay what they were."""
    lineno = 0
    position = 0
    at_line_start = True
    last_was_empty = False
    current: list[int] | None = None  # [line, body start]
    body_pending = False  # inside a "From " line: the body starts after its end
    while True:
        piece = handle.readline(_PIECE)
        if not piece:
            if current is not None:
                if body_pending:
                    current[1] = position
                stop = position - 1 if last_was_empty else position
                yield current[0], current[1], max(current[1], stop)
            return
        starts_line = at_line_start
        at_line_start = piece.endswith(b"\n")
        if starts_line:
            lineno += 1
            if piece.startswith(b"From "):
                if current is not None:
                    stop = position - 1 if last_was_empty else position
                    yield current[0], current[1], max(current[1], stop)
                current = [lineno, 0]
                body_pending = True
                last_was_empty = False
            else:
                last_was_empty = piece == b"\n"
        else:
            last_was_empty = False  # the rest of a long line
        position += len(piece)
        if body_pending and at_line_start:
            assert current is not None
            current[1] = position
            body_pending = False


def count_messages(path: Path) -> int:
    """How many messages `_raw_messages` would yield, without reading them."""
    if path.is_dir():
        return len(_message_files(path))
    with path.open("rb") as handle:
        if handle.read(5) != b"From ":
            return 1
        handle.seek(0)
        return sum(1 for _ in _mbox_spans(handle))
