"""Helpers of the agent desk's tests: a source of lists, a recording sender, signing in."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.testclient import TestClient

from sinks.desk import DatabaseUnavailable, StatusNotSent

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def action_row(n: int, **changes: Any) -> dict[str, Any]:
    """An open action row as the desk reads it."""
    row: dict[str, Any] = {
        "action_id": f"a{n}",
        "customer_id": f"c-{n}",
        "rule": "case_follow_up",
        "action": "follow_up",
        "destination": "care",
        "priority": 50,
        "reason": f"case opened {n}",
        "due_by": NOW + timedelta(hours=n),
        "triggered_at": NOW - timedelta(hours=1),
        "status": "open",
        "owner": None,
        "resolution": None,
        "done_at": None,
        "overdue_at": None,
    }
    row.update(changes)
    return row


@dataclass
class FakeDeskSource:
    """The desk's reads over lists; `down` makes every read fail as a database outage."""

    actions: list[dict[str, Any]] = field(default_factory=list)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    down: bool = False

    def _check(self) -> None:
        if self.down:
            raise DatabaseUnavailable("OperationalError")

    def queue(
        self, destination: str, owner: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        self._check()
        rows = [
            dict(a)
            for a in self.actions
            if a["destination"] == destination
            and a["status"] in ("open", "acknowledged", "reassigned", "overdue")
            and (owner is None or a["owner"] == owner)
        ]
        far = datetime.max.replace(tzinfo=UTC)
        rows.sort(
            key=lambda a: (
                a["overdue_at"] is None,
                -a["priority"],
                a["due_by"] or far,
                a["action_id"],
            )
        )
        return rows[offset : offset + limit]

    def queue_counts(self, destination: str, owner: str | None) -> dict[str, int]:
        rows = self.queue(destination, owner, 10**9, 0)
        return {"open": len(rows), "overdue": sum(r["overdue_at"] is not None for r in rows)}

    def action(self, action_id: str) -> dict[str, Any] | None:
        self._check()
        return next((dict(a) for a in self.actions if a["action_id"] == action_id), None)

    def customer(self, customer_id: str) -> dict[str, Any]:
        self._check()
        empty: dict[str, Any] = {
            "timeline": [],
            "decisions": [],
            "actions": [],
            "products": [],
            "preferences": {},
            "preferences_at": None,
            "owners": [],
            "balance": [],
        }
        return {**empty, **self.customers.get(customer_id, {})}

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class RecordingSender:
    """Records what the buttons send; `fail` makes it say the broker did not confirm."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    fail: bool = False

    def send(
        self,
        status: str,
        action_id: str,
        customer_id: str,
        *,
        owner: str | None = None,
        resolution: str | None = None,
    ) -> str:
        if self.fail:
            raise StatusNotSent("broker unreachable")
        self.sent.append(
            {
                "status": status,
                "action_id": action_id,
                "customer_id": customer_id,
                "owner": owner,
                "resolution": resolution,
            }
        )
        return f"h-{len(self.sent)}"


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The first CSRF token of a page's forms."""
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def sign_in(client: TestClient, key: str, next_path: str = "/desk/") -> Any:
    """Sign CLIENT in with KEY through the sign-in form; the final response."""
    form = client.get("/desk/signin", params={"next": next_path})
    return client.post(
        "/desk/signin", data={"csrf": csrf_of(form.text), "key": key, "next": next_path}
    )
