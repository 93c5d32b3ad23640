"""Code generated per Avro schema: the readers, decoders and writers of the codec's hot paths.

For each record schema the codec builds, from its JSON, Python source that
reads a single-object body into field values (`compile_reader`), decodes and
checks a whole record in one call (`compile_decoder`; the same source is what
`schemas.native` writes for mypyc) and writes a record's single-object bytes
(`compile_writer`). Only canonical encodings and exact types take the
generated paths; anything unusual raises `_Unusual` and the caller lets
fastavro (and `schemas.validation`) decide, so results and errors are exactly
the general path's. A decoder's source, and a writer's, compiled
with mypyc (modules of `schemas._native`, written by `schemas.native`) run
instead of the exec'd source when their `SOURCE_DIGEST` says they were generated
from that very source, so a stale module is never run. Imports nothing of ours
but `schemas.validation`; knows no Kafka.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import struct
from collections.abc import Callable
from datetime import date
from typing import Any, Final, cast

from schemas.validation import (
    MAX_IDENTIFIER_CHARS,
    TS_MAX,
    TS_MIN,
    Check,
    R,
    attribute_map,
    identifier,
    non_empty,
    optional_double,
    optional_short_text,
    optional_timestamp,
    short_text,
    timestamp,
)

#: Where the generated decoder modules live (compiled with mypyc by setup.py).
NATIVE_PACKAGE: Final = "schemas._native"


def native_module_name(record_name: str) -> str:
    """The module of `NATIVE_PACKAGE` holding a record's decoder: InteractionEvent ->
    interaction_event."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", record_name).lower()


def native_writer_module_name(record_name: str, *, checked: bool = False) -> str:
    """The module of `NATIVE_PACKAGE` holding a record's unchecked writer (ActionEvent ->
    action_event_writer) or its checked one (action_event_checked_writer)."""
    return f"{native_module_name(record_name)}_{'checked_' if checked else ''}writer"


def source_digest(source: str) -> str:
    """What a native module's `SOURCE_DIGEST` must be to stand for `source`."""
    return hashlib.sha256(source.encode()).hexdigest()


def _native(module_name: str, function: str, source: str, names: dict[str, Any]) -> Any:
    """The native module's `function` when the module was generated from `source`, else None."""
    try:
        module = importlib.import_module(f"{NATIVE_PACKAGE}.{module_name}")
    except ImportError:
        return None
    if getattr(module, "SOURCE_DIGEST", None) != source_digest(source):
        return None  # generated from another schema or generator: the exec'd source runs
    for name, value in names.items():
        if name != "__builtins__":
            setattr(module, name, value)
    return getattr(module, function)


class _Unusual(Exception):
    """The generated reader met something it leaves to fastavro (which then decides)."""


_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()

_VARINT: Final = """\
{i}b = data[pos]
{i}pos += 1
{i}if b < 128:
{i}    n = b
{i}else:
{i}    n = b & 127
{i}    shift = 7
{i}    while True:
{i}        b = data[pos]
{i}        pos += 1
{i}        n |= (b & 127) << shift
{i}        if b < 128:
{i}            break
{i}        shift += 7
{i}        if shift > 63:
{i}            raise _Unusual
{i}    if n >> 64:
{i}        raise _Unusual
{i}n = (n >> 1) ^ -(n & 1)
"""


def _unrolled_varint(indent: str) -> str:
    """A zigzag varint into `n`, one branch per byte (timestamps take six bytes)."""
    lines = [
        f"{indent}b = data[pos]\n",
        f"{indent}if b < 128:\n{indent}    n = b\n{indent}    pos += 1\n",
        f"{indent}else:\n",
    ]
    inner = indent + "    "
    lines.append(f"{inner}n = b & 127\n")
    for k in range(1, 10):
        lines.append(f"{inner}b = data[pos + {k}]\n")
        if k < 9:
            lines.append(f"{inner}if b < 128:\n{inner}    n |= b << {7 * k}\n")
            lines.append(f"{inner}    pos += {k + 1}\n{inner}else:\n")
            inner += "    "
            lines.append(f"{inner}n |= (b & 127) << {7 * k}\n")
        else:  # the tenth byte may only hold bit 63
            lines.append(f"{inner}if b > 1:\n{inner}    raise _Unusual\n")
            lines.append(f"{inner}n |= b << 63\n{inner}pos += 10\n")
    lines.append(f"{indent}n = (n >> 1) ^ -(n & 1)\n")
    return "".join(lines)


def _string_code(target: str, indent: str) -> list[str]:
    """A string into `target`; lengths below 64 (one even byte) skip the varint loop.

    A length past the end of `data` is not checked here: the slice comes out short,
    `pos` ends up past `size`, and the next read (every read starts by indexing
    `data[pos]` or unpacking at `pos`) or the final ``pos != size`` check raises.
    """
    return [
        f"{indent}n = data[pos]\n",
        f"{indent}if n & 129:\n",  # several bytes, or a negative length
        _VARINT.format(i=indent + "    "),
        f"{indent}    if n < 0:\n{indent}        raise _Unusual\n",
        f"{indent}    end = pos + n\n",
        f"{indent}else:\n{indent}    pos += 1\n{indent}    end = pos + (n >> 1)\n",
        f"{indent}{target} = data[pos:end].decode()\n{indent}pos = end\n",
    ]


def _read_code(kind: Any, target: str, indent: str, names: dict[str, Any]) -> list[str] | None:
    """Python lines reading one value of Avro type `kind` into `target` (None: unsupported).

    Only canonical encodings take the short branches (a union index or an enum
    symbol in one byte); anything else raises `_Unusual` and fastavro decides.
    """
    if isinstance(kind, str):
        kind = {"type": kind}
    if isinstance(kind, list):
        if len(kind) != 2 or kind[0] != "null":
            return None
        inner = _read_code(kind[1], target, indent + "    ", names)
        if inner is None:
            return None
        return [
            f"{indent}b = data[pos]\n{indent}pos += 1\n",
            f"{indent}if b == 0:\n{indent}    {target} = None\n{indent}elif b == 2:\n",
            *inner,
            f"{indent}else:\n{indent}    raise _Unusual\n",
        ]
    if not isinstance(kind, dict):
        return None
    avro_type = kind.get("type")
    logical = kind.get("logicalType")
    if avro_type == "string":
        return _string_code(target, indent)
    if avro_type in ("long", "int") and logical in (None, "timestamp-millis"):
        if logical is not None:
            return None  # the reader schema has these stripped; anything else is unusual
        return [_unrolled_varint(indent), f"{indent}{target} = n\n"]
    if avro_type == "int" and logical == "date":
        return [
            _unrolled_varint(indent),
            f"{indent}{target} = _fromordinal(n + {_EPOCH_ORDINAL})\n",
        ]
    if avro_type == "double" and logical is None:
        # unpack_from raises past the end of data
        return [f"{indent}{target} = _unpack_double(data, pos)[0]\n{indent}pos += 8\n"]
    if avro_type == "enum":
        symbols = f"_symbols_{len(names)}"
        # keyed by the one canonical byte of each index (zigzag 2 * i); a KeyError is unusual
        names[symbols] = {2 * i: symbol for i, symbol in enumerate(kind["symbols"]) if i < 64}
        return [f"{indent}{target} = {symbols}[data[pos]]\n{indent}pos += 1\n"]
    if avro_type in ("map", "array"):
        item = _read_code(
            kind["values" if avro_type == "map" else "items"],
            "item",
            indent + "            ",
            names,
        )
        if item is None:
            return None
        key = _string_code("key", indent + "            ") if avro_type == "map" else []
        store = "found[key] = item" if avro_type == "map" else "found.append(item)"
        empty = "{}" if avro_type == "map" else "[]"
        deeper = indent + "    "
        items = f"items_{len(indent)}"  # one per nesting depth
        return [
            # an empty map or array is one zero byte
            f"{indent}if data[pos] == 0:\n{indent}    pos += 1\n{indent}    {target} = {empty}\n",
            f"{indent}else:\n",
            f"{deeper}found = {empty}\n",
            f"{deeper}while True:\n",
            _VARINT.format(i=deeper + "    "),
            f"{deeper}    if n == 0:\n{deeper}        break\n",
            f"{deeper}    if n < 0:\n{deeper}        n = -n\n",
            f"{deeper}        count = n\n",
            _VARINT.format(i=deeper + "        "),
            f"{deeper}        n = count\n",
            # the count apart from `n`, which the items reuse (compiled with mypyc, a
            # `range(n)` loop reads its bound anew on every iteration)
            f"{deeper}    {items} = n\n",
            f"{deeper}    for _ in range({items}):\n",
            *key,
            *item,
            f"{deeper}        {store}\n",
            f"{deeper}{target} = found\n",
        ]
    return None


def _fields_code(schema: dict[str, Any], names: dict[str, Any]) -> list[str] | None:
    """The body reading every field of a record schema into v0, v1, ... (None: unsupported)."""
    lines = ["    size = len(data)\n"]
    for index, fld in enumerate(schema["fields"]):
        code = _read_code(fld["type"], f"v{index}", "    ", names)
        if code is None:
            return None
        lines += code
    lines.append("    if pos != size:\n        raise _Unusual\n")
    return lines


def _reader_names() -> dict[str, Any]:
    return {
        "_Unusual": _Unusual,
        "_fromordinal": date.fromordinal,
        "_unpack_double": struct.Struct("<d").unpack_from,
    }


def compile_reader(schema: dict[str, Any]) -> Callable[[bytes, int], tuple[Any, ...]] | None:
    """A reader generated for one record schema: (data, pos) -> field values in schema order.

    It must end exactly at the end of `data`. Anything unusual (a bad union or enum
    index, a truncated or oversized value, an unsupported type) raises, and the caller
    lets fastavro decide instead, so results and errors stay fastavro's.
    """
    names = _reader_names()
    body = _fields_code(schema, names)
    if body is None:
        return None
    targets = ", ".join(f"v{i}" for i in range(len(schema["fields"])))
    source = ["def read(data, pos):\n", *body, f"    return ({targets},)\n"]
    exec(compile("".join(source), f"<avro reader {schema['name']}>", "exec"), names)
    return cast(Callable[[bytes, int], tuple[Any, ...]], names["read"])


def _check_code(check: Check, value: str, names: dict[str, Any]) -> str:
    """A line raising `_Unusual` when `value` fails `check` (Avro already guarantees its type)."""
    if check is non_empty:
        return f"    if not {value}:\n        raise _Unusual\n"
    limit = MAX_IDENTIFIER_CHARS
    if check is identifier:
        return f"    if not {value} or len({value}) > {limit}:\n        raise _Unusual\n"
    if check is short_text:
        return f"    if len({value}) > {limit}:\n        raise _Unusual\n"
    if check is optional_short_text:
        return f"    if {value} is not None and len({value}) > {limit}:\n        raise _Unusual\n"
    if check is attribute_map:  # Avro guarantees a map of strings: only the key lengths
        return (
            f"    for key in {value}:\n        if len(key) > {limit}:\n            raise _Unusual\n"
        )
    if check is timestamp:
        return f"    if not {TS_MIN} <= {value} <= {TS_MAX}:\n        raise _Unusual\n"
    if check is optional_timestamp:
        return (
            f"    if {value} is not None and not {TS_MIN} <= {value} <= {TS_MAX}:\n"
            "        raise _Unusual\n"
        )
    if check is optional_double:  # NaN and infinities give NaN here
        return f"    if {value} is not None and {value} - {value} != 0.0:\n        raise _Unusual\n"
    name = f"_check_{len(names)}"
    names[name] = check
    return f"    if {name}({value}) is not None:\n        raise _Unusual\n"


def _decoder_source(
    schema: dict[str, Any],
    header: bytes,
    checks: tuple[tuple[int, Check], ...],
    names: dict[str, Any],
) -> str | None:
    """The source of `decode(data)` for one record schema (None: unsupported); the names
    it reads (besides `_header` and `_Record`) are added to `names`."""
    body = _fields_code(schema, names)
    if body is None:
        return None
    count = len(schema["fields"])
    source = [
        "def decode(data):\n",
        f"    if data[:{len(header)}] != _header:\n        raise _Unusual\n",
        f"    pos = {len(header)}\n",
    ]
    source += body
    source += [_check_code(check, f"v{index}", names) for index, check in checks]
    source.append(f"    return _Record({', '.join(f'v{i}' for i in range(count))})\n")
    return "".join(source)


def decoder_parts(
    schema: dict[str, Any],
    header: bytes,
    record_type: type[Any],
    checks: tuple[tuple[int, Check], ...],
) -> tuple[str, dict[str, Any]] | None:
    """The decoder's source and the names it reads (None: unsupported schema)."""
    names = _reader_names()
    names["_header"] = header
    names["_Record"] = record_type
    source = _decoder_source(schema, header, checks, names)
    return None if source is None else (source, names)


def compile_decoder(
    schema: dict[str, Any],
    header: bytes,
    record_type: type[R],
    checks: tuple[tuple[int, Check], ...],
) -> Callable[[bytes], R] | None:
    """A decoder generated for one record schema: single-object bytes -> a checked record.

    The fast path of `AvroCodec.decode`: it reads like `compile_reader`, runs the
    checks Avro does not already guarantee (`checks`: field index and check) inline
    and builds the record positionally. Anything unusual or invalid raises, and the
    caller takes the general path, which gives the result or the error with its name.
    The same source compiled with mypyc (`schemas/_native/`, built by setup.py) runs
    instead when it was generated from this very source (the README gives its speed).
    """
    parts = decoder_parts(schema, header, record_type, checks)
    if parts is None:
        return None
    source, names = parts
    native = _native(native_module_name(schema["name"]), "decode", source, names)
    if native is not None:
        return cast(Callable[[bytes], R], native)
    exec(compile(source, f"<avro decoder {schema['name']}>", "exec"), names)
    return cast(Callable[[bytes], R], names["decode"])


_VARINT_OUT: Final = """\
{i}while n > 127:
{i}    out.append((n & 127) | 128)
{i}    n >>= 7
{i}out.append(n)
"""


def _zigzag_code(value: str, indent: str, low: int = -(2**63), high: int = 2**63 - 1) -> list[str]:
    """Lines appending the zigzag varint of int `value` (range-checked) to `out`."""
    return [
        f"{indent}if not {low} <= {value} <= {high}:\n{indent}    raise _Unusual\n",
        f"{indent}n = ({value} << 1) ^ ({value} >> 63)\n",
        _VARINT_OUT.format(i=indent),
    ]


def _write_code(kind: Any, value: str, indent: str, names: dict[str, Any]) -> list[str] | None:
    """Python lines appending the Avro encoding of `value` to `out` (None: unsupported).

    Values must have exactly the expected type; anything else raises `_Unusual`.
    """
    if isinstance(kind, str):
        kind = {"type": kind}
    if isinstance(kind, list):
        if len(kind) != 2 or kind[0] != "null":
            return None
        inner = _write_code(kind[1], value, indent + "    ", names)
        if inner is None:
            return None
        return [
            f"{indent}if {value} is None:\n{indent}    out.append(0)\n{indent}else:\n",
            f"{indent}    out.append(2)\n",
            *inner,
        ]
    if not isinstance(kind, dict):
        return None
    avro_type, logical = kind.get("type"), kind.get("logicalType")
    if avro_type == "string":
        return [
            f"{indent}if type({value}) is not str:\n{indent}    raise _Unusual\n",
            f"{indent}b = {value}.encode()\n{indent}m = len(b)\n",
            f"{indent}if m < 64:\n{indent}    out.append(m << 1)\n{indent}else:\n",
            f"{indent}    n = m << 1\n",
            _VARINT_OUT.format(i=indent + "    "),
            f"{indent}out += b\n",
        ]
    if avro_type in ("long", "int") and logical in (None, "timestamp-millis"):
        low, high = (-(2**31), 2**31 - 1) if avro_type == "int" else (-(2**63), 2**63 - 1)
        return [
            # the value's own type first, as for the other kinds: compiled, `m` is a native
            # int, which takes a bool and then says its type is int
            f"{indent}if type({value}) is not int:\n{indent}    raise _Unusual\n",
            f"{indent}m = {value}\n",
            f"{indent}if not {low} <= m <= {high}:\n",
            f"{indent}    raise _Unusual\n",
            f"{indent}n = (m << 1) ^ (m >> 63)\n",
            _VARINT_OUT.format(i=indent),
        ]
    if avro_type == "int" and logical == "date":
        return [
            f"{indent}if type({value}) is not _date:\n{indent}    raise _Unusual\n",
            f"{indent}m = {value}.toordinal() - {_EPOCH_ORDINAL}\n",
            f"{indent}n = (m << 1) ^ (m >> 63)\n",
            _VARINT_OUT.format(i=indent),
        ]
    if avro_type == "double" and logical is None:
        return [
            f"{indent}if type({value}) is not float:\n{indent}    raise _Unusual\n",
            f"{indent}out += _pack_double({value})\n",
        ]
    if avro_type == "enum":
        index = f"_index_{len(names)}"
        symbols = kind["symbols"]
        if len(symbols) <= 64:  # every index is one varint byte: 2 * i
            names[index] = {symbol: 2 * i for i, symbol in enumerate(symbols)}
            return [f"{indent}out.append({index}[{value}])\n"]
        names[index] = {symbol: i for i, symbol in enumerate(symbols)}
        return [f"{indent}m = {index}[{value}]\n", *_zigzag_code("m", indent)]
    if avro_type in ("map", "array"):
        container = "dict" if avro_type == "map" else "list"
        item = _write_code(
            kind["values" if avro_type == "map" else "items"], "item", indent + "        ", names
        )
        if item is None:
            return None
        loop = "for key, item in c.items():" if avro_type == "map" else "for item in c:"
        key = _write_code("string", "key", indent + "        ", names) if avro_type == "map" else []
        assert key is not None
        return [
            f"{indent}c = {value}\n",
            f"{indent}if type(c) is not {container}:\n{indent}    raise _Unusual\n",
            f"{indent}if c:\n{indent}    n = len(c) << 1\n",
            _VARINT_OUT.format(i=indent + "    "),
            f"{indent}    {loop}\n",
            *key,
            *item,
            f"{indent}out.append(0)\n",
        ]
    return None


def writer_parts(
    schema: dict[str, Any], header: bytes, checks: tuple[tuple[int, Check], ...] = ()
) -> tuple[str, dict[str, Any]] | None:
    """The source of `write(v0, v1, ...)` for one record schema and the names it reads
    (None: unsupported schema)."""
    names: dict[str, Any] = {
        "_Unusual": _Unusual,
        "_date": date,
        "_pack_double": struct.Struct("<d").pack,
        "_header": header,
    }
    fields = schema["fields"]
    args = ", ".join(f"v{i}" for i in range(len(fields)))
    lines = [f"def write({args}):\n"]
    lines += [_check_code(check, f"v{index}", names) for index, check in checks]
    lines.append("    out = bytearray(_header)\n")
    for index, fld in enumerate(fields):
        code = _write_code(fld["type"], f"v{index}", "    ", names)
        if code is None:
            return None
        lines += code
    lines.append("    return bytes(out)\n")
    return "".join(lines), names


def compile_writer(
    schema: dict[str, Any], header: bytes, checks: tuple[tuple[int, Check], ...] = ()
) -> Callable[..., bytes] | None:
    """A writer generated for one record schema: field values in schema order -> the
    single-object bytes (header + body), exactly what fastavro writes.

    Anything unusual (a value of another type, a number out of range, an unknown
    enum symbol) raises, and the caller lets fastavro write (or refuse) instead.
    With `checks` (field index and check), it first runs the checks of `validate`
    that exact types do not already imply, and raises for a record that fails one.
    The same source compiled with mypyc (`schemas/_native/`, a module for the unchecked
    writer and one for the checked) runs instead when it was generated from this very
    source.
    """
    parts = writer_parts(schema, header, checks)
    if parts is None:
        return None
    source, names = parts
    module = native_writer_module_name(schema["name"], checked=bool(checks))
    native = _native(module, "write", source, names)
    if native is not None:
        return cast(Callable[..., bytes], native)
    exec(compile(source, f"<avro writer {schema['name']}>", "exec"), names)
    return cast(Callable[..., bytes], names["write"])
