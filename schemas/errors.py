"""The errors of the codec: values with a name, never log lines.

`SchemaValidationError` names the field (and file:line when known),
`DecodeError` says which stage failed, `InvalidRecordError` is both (a decoded
record that breaks the contract). They carry no record contents beyond what
names the problem, and pickle across worker processes. Imports nothing of ours.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DecodeError", "InvalidRecordError", "SchemaValidationError"]


class SchemaValidationError(ValueError):
    """A record or JSON object that breaks the contract; names the field (and file:line)."""

    def __init__(self, field: str, message: str, where: str = "") -> None:
        self.field = field
        self.message = message
        self.where = where
        super().__init__(str(self))

    def __str__(self) -> str:
        head = f"{self.where}: " if self.where else ""
        return f"{head}{self.field}: {self.message}"

    def at(self, where: str) -> SchemaValidationError:
        """The same error located at `where` (e.g. ``events.jsonl:12``)."""
        return SchemaValidationError(self.field, self.message, where)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        return (type(self), (self.field, self.message, self.where))


class DecodeError(ValueError):
    """Bytes that cannot become a record: bad magic, bad Avro, unknown schema (stage "decode"),
    or a decoded record that breaks the contract (stage "validate")."""

    def __init__(self, message: str, *, stage: str = "decode") -> None:
        self.stage = stage
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_decode_error, (str(self), self.stage))


class InvalidRecordError(DecodeError, SchemaValidationError):
    """Decoded fine but invalid: both a `DecodeError` (stage "validate") and a
    `SchemaValidationError` (names the field), so either ``except`` catches it."""

    def __init__(self, error: SchemaValidationError) -> None:
        self.stage = "validate"
        self.field = error.field
        self.message = error.message
        self.where = error.where
        ValueError.__init__(self, SchemaValidationError.__str__(self))

    def __str__(self) -> str:
        return SchemaValidationError.__str__(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (SchemaValidationError(self.field, self.message, self.where),))


def _decode_error(message: str, stage: str) -> DecodeError:
    return DecodeError(message, stage=stage)
