"""What every channel adapter shares: a channel record becomes an InteractionEvent or a Rejection.

An adapter reads the records a channel system already exports (a contact-centre
CSV, a mailbox, a billing export) and maps each one to an `InteractionEvent`.
A record that cannot be mapped becomes a `Rejection` naming the file, the line
and the reason; it never stops the run and is never silently dropped.

`Adapter` is what the hosts (ingest, the CLI) call; `TableAdapter` is the base of
the adapters whose exports are CSV/TSV or JSON-lines tables.

This module knows no Kafka: publishing is the caller's business (see
`producers.adapters.ingest`). Its helpers sit on the simulator's hot path, so
they stay cheap: no per-record regex compilation, no per-record file I/O.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Protocol, Self
from zoneinfo import ZoneInfo

import yaml

from schemas.records import InteractionEvent

#: A line of a CSV/JSON-lines export longer than this is rejected (read in bounded memory).
MAX_LINE_BYTES = 1024 * 1024
#: A message (one .eml file, one message of an mbox) larger than this is rejected unread.
MAX_MESSAGE_BYTES = 25 * 1024 * 1024

#: Files with these suffixes are read as JSON lines; anything else is sniffed.
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
CSV_SUFFIXES = frozenset({".csv", ".tsv", ".txt"})


class RecordError(ValueError):
    """One channel record cannot become an event; names the field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class MappingError(ValueError):
    """A mapping file (columns, dispositions, keyword rules, lookups) is unusable; names it."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A channel record that did not become an event: where it is and why."""

    file: str
    line: int
    reason: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Skipped:
    """A channel record that makes no event on purpose (an auto-reply): counted, not rejected."""

    file: str
    line: int
    #: Why, as a short name (`auto_reply`): the summary counts by it.
    reason: str
    #: The record's own id (an e-mail's Message-ID), when it has one.
    key: str | None = None


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One raw record read from a channel file: its location and its fields by canonical name."""

    file: str
    line: int
    fields: Mapping[str, Any]
    #: canonical name -> the column name the file used, for messages in the user's words.
    columns: Mapping[str, str] = field(default_factory=dict)

    def reason(self, error: RecordError) -> str:
        """The error as the user should read it: the field under the file's own column name."""
        return f"{self.columns.get(error.field, error.field)}: {error.message}"


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """What `moments ingest` may pass an adapter; each adapter takes what it needs."""

    #: A mapping file that overrides the packaged one, section by section.
    mapping: Path | None = None
    #: A sender address -> customer id lookup (e-mail).
    customers: Path | None = None
    #: How far in the future a record's own date may lie (MOMENTS_MAX_FUTURE_SKEW).
    max_future_skew_ms: int | None = None


class Adapter(Protocol):
    """A channel adapter as its hosts see it: one class declares all of a channel.

    A class registers itself with `producers.adapters.registry.register`; ingest and
    the CLI read the registry, so nothing else names a channel kind.
    """

    #: The kind's name on the command line (`moments ingest KIND`).
    kind: ClassVar[str]
    #: Where the kind comes in lists (help texts, errors): lowest first.
    order: ClassVar[int]
    #: The `channel` of the events it makes.
    channel: ClassVar[str]
    #: The packaged mapping, `producers/mappings/<mapping_name>.yaml`.
    mapping_name: ClassVar[str]

    @classmethod
    def for_ingest(cls, options: IngestOptions) -> Self:
        """The adapter `moments ingest` runs, configured from the command line."""
        ...

    def records(self, path: Path) -> Iterator[SourceRecord | Rejection | Skipped]:
        """Every record under `path` (a file or a folder); a Rejection for each unreadable one,
        a Skipped for each that makes no event on purpose."""
        ...

    def map_source(self, record: SourceRecord) -> InteractionEvent:
        """One record as an event; raises RecordError naming the field at fault."""
        ...

    def estimate(self, path: Path) -> int:
        """A cheap count of the records under `path`, for a progress bar; may raise OSError."""
        ...


# --- mapping files ---------------------------------------------------------------------------


def load_mapping(name: str, path: Path | None = None) -> dict[str, Any]:
    """The YAML (or JSON) mapping of one channel: `path`, or the packaged default `name`.yaml."""
    if path is None:
        return dict(_packaged_mapping(name))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(f"{path}: cannot read mapping file: {exc.strerror}") from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML/JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise MappingError(f"{path}: expected a mapping at the top level")
    # A user file overrides the defaults section by section, so it may hold only what differs.
    merged = dict(_packaged_mapping(name))
    merged.update(loaded)
    merged["__file__"] = str(path)
    return merged


@lru_cache(maxsize=8)
def _packaged_mapping(name: str) -> dict[str, Any]:
    text = resources.files("producers.mappings").joinpath(f"{name}.yaml").read_text("utf-8")
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict), f"packaged mapping {name}.yaml is not a mapping"
    loaded["__file__"] = f"producers/mappings/{name}.yaml"
    return loaded


def mapping_section(mapping: Mapping[str, Any], key: str, kind: type) -> Any:
    """One section of a mapping, checked for its type (error names the file and section)."""
    value = mapping.get(key)
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise MappingError(
            f"{mapping.get('__file__', 'mapping')}: section '{key}' must be a {kind.__name__}"
        )
    return value


def column_aliases(mapping: Mapping[str, Any]) -> dict[str, str]:
    """`columns:` of a mapping turned around: the platform's column name (lower case) → our name."""
    aliases: dict[str, str] = {}
    for canonical, names in mapping_section(mapping, "columns", dict).items():
        for name in [names] if isinstance(names, str) else list(names or []):
            aliases[str(name).strip().lower()] = str(canonical)
        aliases.setdefault(str(canonical).lower(), str(canonical))
    return aliases


def canonical_names(columns: Iterable[str], aliases: Mapping[str, str]) -> list[str]:
    """Our name for each of a file's columns, unique.

    When two columns claim one name (an export with both `id` and `call_id`), the alias
    listed first in the mapping wins and the other column keeps its own name (and so ends
    up in attributes); a name used twice gets a `_2`, `_3` suffix.
    """
    rank = {alias: position for position, alias in enumerate(aliases)}
    raw = [column.strip() for column in columns]
    names: list[str] = []
    claimed: dict[str, int] = {}
    for index, column in enumerate(raw):
        canonical = aliases.get(column.lower())
        if canonical is None:
            names.append(column)
            continue
        holder = claimed.get(canonical)
        if holder is None:
            claimed[canonical] = index
            names.append(canonical)
        elif rank[column.lower()] < rank[raw[holder].lower()]:
            names[holder] = raw[holder]
            claimed[canonical] = index
            names.append(canonical)
        else:
            names.append(column)
    counts: dict[str, int] = {}
    for index, name in enumerate(names):
        counts[name] = counts.get(name, 0) + 1
        if counts[name] > 1:
            names[index] = f"{name}_{counts[name]}"
    return names


def timezone_of(mapping: Mapping[str, Any]) -> tzinfo:
    """Time zone assumed for timestamps without an offset (`timezone:`, default UTC)."""
    name = mapping.get("timezone") or "UTC"
    if name in ("UTC", "Z", "utc"):
        return UTC
    try:
        return ZoneInfo(str(name))
    except Exception as exc:  # ZoneInfoNotFoundError, ValueError
        raise MappingError(
            f"{mapping.get('__file__', 'mapping')}: unknown timezone {name!r}"
        ) from exc


# --- field parsing (hot path) ----------------------------------------------------------------


def parse_timestamp(value: Any, field: str, tz: tzinfo = UTC) -> int:
    """Epoch milliseconds from ISO-8601 text (offset or `Z`; naive means `tz`) or epoch s/ms."""
    if value.__class__ is int:
        return _epoch_to_ms(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise RecordError(field, "must not be empty")
        if text.isdigit():
            return _epoch_to_ms(int(text))
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise RecordError(field, f"{value!r} is not an ISO-8601 timestamp") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=tz)
        return _datetime_to_ms(moment)
    if isinstance(value, bool) or value is None:
        raise RecordError(field, "missing" if value is None else f"{value!r} is not a timestamp")
    if isinstance(value, int):
        return _epoch_to_ms(value)
    if isinstance(value, float) and math.isfinite(value):
        return _epoch_to_ms(value)
    raise RecordError(field, f"{value!r} is not a timestamp")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _datetime_to_ms(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _epoch_to_ms(value: float) -> int:
    # Exports carry epoch seconds or milliseconds; 1e11 s is the year 5138, 1e11 ms is 1973.
    return int(value) if abs(value) >= 100_000_000_000 else int(value * 1000)


def parse_date(value: Any, field: str) -> date | None:
    """A `YYYY-MM-DD` date (a timestamp's date part is accepted); blank means absent."""
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    text = str(value).strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise RecordError(field, f"{value!r} is not a date (YYYY-MM-DD)") from None


class DateParser:
    """`parse_date` with a memory: exports repeat the same dates (customer_since) endlessly."""

    def __init__(self, limit: int = 65_536) -> None:
        self._known: dict[str, date] = {}
        self._limit = limit

    def __call__(self, value: Any, field: str) -> date | None:
        if value.__class__ is str:
            known = self._known.get(value)
            if known is not None:
                return known
            parsed = parse_date(value, field)
            if parsed is not None:
                if len(self._known) >= self._limit:
                    self._known.clear()
                self._known[value] = parsed
            return parsed
        return parse_date(value, field)


def parse_amount(value: Any, field: str) -> float | None:
    """A money amount: a number or decimal text (`1234.50`, `1,234.50`); blank means absent."""
    if value is None:
        return None
    if value.__class__ is float and math.isfinite(value):
        return value  # type: ignore[no-any-return]
    if isinstance(value, bool):
        raise RecordError(field, f"{value!r} is not an amount")
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip().replace(",", "")
        if not text:
            return None
        try:
            number = float(text)
        except ValueError:
            raise RecordError(field, f"{value!r} is not an amount") from None
    if not math.isfinite(number):
        raise RecordError(field, f"{value!r} is not a finite amount")
    return number


def parse_currency(value: Any, field: str) -> str | None:
    """An ISO 4217 code, upper-cased; blank means absent."""
    if value is None:
        return None
    known = _CURRENCIES.get(value)
    if known is not None:
        return known
    text = str(value).strip().upper()
    if not text:
        return None
    if len(text) != 3 or not text.isalpha() or not text.isascii():
        raise RecordError(field, f"{value!r} is not an ISO 4217 currency code")
    if len(_CURRENCIES) < 1024 and isinstance(value, str):
        _CURRENCIES[value] = text
    return text


_CURRENCIES: dict[Any, str] = {}


def text_or_none(value: Any) -> str | None:
    """Stripped text, or None when blank."""
    if value is None:
        return None
    text = value.strip() if value.__class__ is str else str(value).strip()
    return text or None


def optional_text(value: Any) -> str | None:
    """`text_or_none` with the common case (None, or text without padding) inline-cheap."""
    if value is None:
        return None
    if value.__class__ is str and value and not value[0].isspace() and not value[-1].isspace():
        return value  # type: ignore[no-any-return]
    return text_or_none(value)


def required_text(fields: Mapping[str, Any], name: str) -> str:
    """A required text field, stripped; RecordError when missing or blank."""
    value = fields.get(name)
    if value.__class__ is str:
        value = value.strip()
        if value:
            return value
        raise RecordError(name, "must not be empty")
    if value is None:
        raise RecordError(name, "missing required field")
    text = value.strip() if isinstance(value, str) else str(value).strip()
    if not text:
        raise RecordError(name, "must not be empty")
    return text


def attribute_text(value: Any) -> str:
    """An attribute value as text (JSON numbers and booleans keep their JSON spelling)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return str(value)


# --- reading channel files -------------------------------------------------------------------


def channel_files(path: Path, suffixes: Iterable[str]) -> list[Path]:
    """`path` itself, or the files with one of `suffixes` in a directory (sorted: deterministic)."""
    if path.is_dir():
        wanted = frozenset(suffixes)
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in wanted)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    return [path]


def bounded_lines(handle: BinaryIO, max_bytes: int | None = None) -> Iterator[bytes | None]:
    """The lines of a binary file, each None when longer than `max_bytes` (default
    `MAX_LINE_BYTES`; the line is skipped without ever being held whole: an export
    without newlines costs no memory)."""
    if max_bytes is None:
        max_bytes = MAX_LINE_BYTES
    while True:
        raw = handle.readline(max_bytes + 1)
        if not raw:
            return
        if len(raw) <= max_bytes or (raw.endswith(b"\n") and len(raw) == max_bytes + 1):
            yield raw
            continue
        while raw and not raw.endswith(b"\n"):
            raw = handle.readline(_SKIP_PIECE)
        yield None


_SKIP_PIECE = 64 * 1024


def _long_line() -> str:
    return f"line exceeds the limit of {MAX_LINE_BYTES} bytes"


def read_table(path: Path, aliases: Mapping[str, str]) -> Iterator[SourceRecord | Rejection]:
    """Rows of a CSV/TSV or JSON-lines export, keys renamed to canonical names, with lines."""
    if _is_jsonl(path):
        yield from _read_jsonl(path, aliases)
    else:
        yield from _read_csv(path, aliases)


def _is_jsonl(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return True
    if suffix in CSV_SUFFIXES:
        return False
    with path.open("rb") as handle:
        for raw in bounded_lines(handle):
            if raw is None:
                return False
            stripped = raw.lstrip(b"\xef\xbb\xbf").strip()
            if stripped:
                return stripped.startswith(b"{")
    return False


def _read_jsonl(path: Path, aliases: Mapping[str, str]) -> Iterator[SourceRecord | Rejection]:
    name = str(path)
    renames: dict[tuple[str, ...], tuple[list[tuple[str, str]], dict[str, str]]] = {}
    with path.open("rb") as handle:
        for lineno, raw in enumerate(bounded_lines(handle), start=1):
            if raw is None:
                yield Rejection(name, lineno, _long_line())
                continue
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.rstrip())  # so an error's column is within the line
            except UnicodeDecodeError:
                yield Rejection(name, lineno, "line is not valid UTF-8")
                continue
            except json.JSONDecodeError as exc:
                yield Rejection(name, lineno, f"not valid JSON: {exc.msg} (column {exc.colno})")
                continue
            except RecursionError:
                yield Rejection(name, lineno, "JSON nests too deep")
                continue
            if not isinstance(obj, dict):
                yield Rejection(name, lineno, f"expected a JSON object, got {type(obj).__name__}")
                continue
            keys = tuple(obj)
            plan = renames.get(keys)
            if plan is None:
                pairs = list(zip(keys, canonical_names(keys, aliases), strict=True))
                plan = renames[keys] = (pairs, {c: k for k, c in pairs if c != k})
            yield SourceRecord(name, lineno, {c: obj[k] for k, c in plan[0]}, plan[1])


def _decoded_lines(path: Path, bad_lines: list[tuple[int, str]]) -> Iterator[str]:
    """The file's lines decoded as UTF-8; an undecodable or over-long line becomes empty
    and is noted with the reason."""
    with path.open("rb") as handle:
        for lineno, raw in enumerate(bounded_lines(handle), start=1):
            if raw is None:
                bad_lines.append((lineno, _long_line()))
                yield "\n"
                continue
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                bad_lines.append((lineno, "line is not valid UTF-8"))
                yield "\n"


def _read_csv(path: Path, aliases: Mapping[str, str]) -> Iterator[SourceRecord | Rejection]:
    name = str(path)
    bad_lines: list[tuple[int, str]] = []
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(_decoded_lines(path, bad_lines), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    columns: dict[str, str] = {}
    last_line = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            yield Rejection(name, last_line + 1, f"malformed CSV: {exc}")
            last_line = reader.line_num
            continue
        first_line, last_line = last_line + 1, reader.line_num
        while bad_lines:
            yield Rejection(name, *bad_lines.pop(0))
        if not row or all(not cell.strip() for cell in row):
            continue
        if header is None:
            header = canonical_names(row, aliases)
            columns = {c: cell.strip() for c, cell in zip(header, row, strict=True) if c != cell}
            continue
        if len(row) != len(header):
            yield Rejection(
                name, first_line, f"row has {len(row)} fields, the header has {len(header)}"
            )
            continue
        yield SourceRecord(name, first_line, dict(zip(header, row, strict=True)), columns)
    if header is None:
        yield Rejection(name, 0, "no header row (expected column names on the first line)")


class TableAdapter:
    """The base of an adapter whose exports are tables (CSV/TSV or JSON lines), one record a row.

    A subclass sets the `Adapter` class variables and `default_source`, reads its own
    sections of the mapping in `configure`, and maps a row in `map_record(fields)`.
    """

    kind: ClassVar[str]
    order: ClassVar[int] = 100
    channel: ClassVar[str]
    mapping_name: ClassVar[str]
    #: The events' `source` unless the mapping names one.
    default_source: ClassVar[str]
    #: The files of a folder that are read; a file given by name is read whatever its suffix.
    suffixes: ClassVar[frozenset[str]] = CSV_SUFFIXES | JSONL_SUFFIXES

    def __init__(self, mapping_path: Path | None = None) -> None:
        mapping = load_mapping(self.mapping_name, mapping_path)
        self.mapping_file = str(mapping["__file__"])
        self.source = str(mapping.get("source") or self.default_source)
        self.timezone = timezone_of(mapping)
        self.aliases = column_aliases(mapping)
        self.dates = DateParser()
        self.configure(mapping)

    def configure(self, mapping: Mapping[str, Any]) -> None:
        """Read the kind's own sections of its mapping; raises MappingError naming the file."""

    @classmethod
    def for_ingest(cls, options: IngestOptions) -> Self:
        """The adapter with the mapping file given on the command line, if any."""
        return cls(options.mapping)

    def map_record(self, fields: Mapping[str, Any]) -> InteractionEvent:
        """One row (canonical names) as an event; raises RecordError naming the field."""
        raise NotImplementedError

    def map_source(self, record: SourceRecord) -> InteractionEvent:
        """`map_record` of the record's fields."""
        return self.map_record(record.fields)

    def records(self, path: Path) -> Iterator[SourceRecord | Rejection]:
        """The rows of an export file, or of every export in a folder."""
        for file in channel_files(path, self.suffixes):
            yield from read_table(file, self.aliases)

    def estimate(self, path: Path) -> int:
        """Non-blank lines of the files `records` reads, less each CSV file's header."""
        total = 0
        for file in channel_files(path, self.suffixes):
            with file.open("rb") as handle:
                lines = sum(1 for line in bounded_lines(handle) if line is None or line.strip())
            total += lines if file.suffix.lower() in JSONL_SUFFIXES else lines - 1
        return max(total, 0)
