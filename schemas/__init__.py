"""Avro contracts (*.avsc) for moments and the codec that reads and writes them.

Imports nothing of ours; every other package may import this one.
"""

from pathlib import Path

from schemas.compiled import load_fresh

#: The modules the install compiles with mypyc (setup.py reads this list): the JSON form,
#: which file replay and backfill read and write every line with.
COMPILED_MODULES = ("json_form",)

#: Whether the compiled JSON form runs (same results, fewer CPU seconds per line).
JSON_FORM_COMPILED = load_fresh(__name__, COMPILED_MODULES, Path(__file__).parent)

from schemas.records import (  # noqa: E402
    CHANNELS,
    DESTINATIONS,
    EVENT_TYPES,
    OUTCOMES,
    ActionEvent,
    ActionStatus,
    Decision,
    InteractionEvent,
)

__all__ = [
    "CHANNELS",
    "COMPILED_MODULES",
    "DESTINATIONS",
    "EVENT_TYPES",
    "JSON_FORM_COMPILED",
    "OUTCOMES",
    "ActionEvent",
    "ActionStatus",
    "Decision",
    "InteractionEvent",
]
