"""Events as the JSON lines an events file holds, for replay, diff and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso(ms: int) -> str:
    """Epoch milliseconds as an ISO-8601 UTC time with milliseconds."""
    return (EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")


def line(event_id: str, customer: str, channel: str, type_: str, at: int, **extra: Any) -> str:
    """One event as a JSON line (source "story"), `extra` fields as given."""
    obj = {
        "event_id": event_id,
        "customer_id": customer,
        "channel": channel,
        "type": type_,
        "occurred_at": iso(at),
        "source": "story",
        **extra,
    }
    return json.dumps(obj)
