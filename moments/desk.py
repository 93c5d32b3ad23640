"""The agent desk's status sender: the publisher SDK behind the desk's buttons.

`sinks.desk` knows no producer (sinks never import producers); `moments api` gives
it this sender, which publishes one status event and waits for the broker's own
delivery report, so a button says "sent" only for an event the broker holds, and
"could not be sent" otherwise (docs/design.md 13).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Final

from common.settings import Settings
from producers.publisher import Publisher, PublisherBusy, PublishError, action_status_json
from schemas.codec import SchemaValidationError, event_from_json
from schemas.records import InteractionEvent
from sinks.desk import StatusNotSent

#: The `source` of every status event the desk sends.
DESK_SOURCE: Final = "desk"


def desk_status_event(
    status: str,
    action_id: str,
    customer_id: str,
    *,
    owner: str | None = None,
    resolution: str | None = None,
    occurred_at: str | None = None,
) -> InteractionEvent:
    """The status event of a desk button, as the SDK builds it (`action_status_json`), from
    source `desk`, its id derived from its content."""
    body = action_status_json(
        action_id,
        customer_id,
        status,
        owner=owner,
        resolution=resolution,
        occurred_at=occurred_at,
    )
    return event_from_json({**body, "source": DESK_SOURCE}, where="desk")


#: How long a button waits for the broker before it says the status could not be sent.
CONFIRM_TIMEOUT_S: Final = 10.0


class PublisherStatusSender:
    """Sends status events through a confirming `Publisher` (made on first use)."""

    def __init__(self, settings: Settings, *, timeout_s: float = CONFIRM_TIMEOUT_S) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._publisher: Publisher | None = None
        self._lock = threading.Lock()

    def _client(self) -> Publisher:
        with self._lock:
            if self._publisher is None:
                # A report within the button's wait: an event the broker never took fails
                # rather than lingering (a later press is the same status again).
                timeout_ms = int(self.timeout_s * 1000)
                self._publisher = Publisher(
                    self.settings,
                    confirm=True,
                    config={"message.timeout.ms": timeout_ms, "client.id": "moments-desk"},
                )
            return self._publisher

    def send(
        self,
        status: str,
        action_id: str,
        customer_id: str,
        *,
        owner: str | None = None,
        resolution: str | None = None,
    ) -> str:
        """Publish the status event; its id once the broker confirmed it, else `StatusNotSent`."""
        try:
            event = desk_status_event(
                status, action_id, customer_id, owner=owner, resolution=resolution
            )
        except SchemaValidationError as exc:
            raise StatusNotSent(f"invalid status event: {exc.field}") from None
        done = threading.Event()
        outcome: list[PublishError | None] = []

        def report(error: PublishError | None) -> None:
            outcome.append(error)
            done.set()

        try:
            self._client().submit(event, report)
        except (PublisherBusy, PublishError, SchemaValidationError) as exc:
            raise StatusNotSent(type(exc).__name__) from None
        if not done.wait(self.timeout_s + 2.0):
            raise StatusNotSent("no delivery report in time")
        if outcome[0] is not None:
            raise StatusNotSent(outcome[0].error)
        return event.event_id

    def close(self) -> None:
        with self._lock:
            publisher, self._publisher = self._publisher, None
        if publisher is not None:
            # PublishError: the desk already said these could not be sent.
            with contextlib.suppress(PublishError):
                publisher.close(timeout_s=5.0)
