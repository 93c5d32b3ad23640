"""Avro contracts (*.avsc) for moments and the codec that reads and writes them.

Imports nothing of ours; every other package may import this one.
"""

from schemas.records import (
    CHANNELS,
    DESTINATIONS,
    EVENT_TYPES,
    OUTCOMES,
    ActionEvent,
    Decision,
    InteractionEvent,
)

__all__ = [
    "CHANNELS",
    "DESTINATIONS",
    "EVENT_TYPES",
    "OUTCOMES",
    "ActionEvent",
    "Decision",
    "InteractionEvent",
]
