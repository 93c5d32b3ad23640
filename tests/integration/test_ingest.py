"""Channel files and the simulator through the publisher SDK into the real `interactions` topic."""

from __future__ import annotations

from pathlib import Path

from common.settings import Settings
from producers.adapters.ingest import ingest
from producers.publisher import Publisher
from producers.simulator import publish_simulation, simulate
from tests.integration.read_back import read_back

DATA = Path(__file__).resolve().parents[1] / "data" / "channels"


def test_each_channel_file_reaches_the_interactions_topic(settings: Settings) -> None:
    with Publisher(settings) as publisher:
        calls = ingest("calls", DATA / "calls.csv", publisher)
        mail = ingest(
            "email", DATA / "inbox.mbox", publisher, customers=DATA / "email_customers.csv"
        )
        billing = ingest("billing", DATA / "billing.jsonl", publisher)

    assert (calls.accepted, mail.accepted, billing.accepted) == (8, 3, 5)
    assert len(calls.rejected) == 4 and len(mail.rejected) == 1 and len(billing.rejected) == 4
    seen = read_back(settings, ["call-CL-1001", "email-cmp-1@example.com", "billing-B-6002"])
    assert seen["call-CL-1001"].type == "cancellation_requested"
    assert seen["email-cmp-1@example.com"].reference == "CMP-4401"
    assert seen["billing-B-6002"].amount == 310.55


def test_a_published_simulation_reaches_the_topic(settings: Settings) -> None:
    with Publisher(settings) as publisher:
        summary = publish_simulation(publisher, 40, 20, seed=2)

    assert summary.events > 100
    assert set(summary.by_channel) == {"call", "email", "billing", "web", "other"}
    expected = list(simulate(40, 20, seed=2))  # deterministic: the same events again
    assert len(expected) == summary.events
    sample = expected[:: max(1, len(expected) // 40)]
    seen = read_back(settings, [e.event_id for e in sample])
    assert all(seen[e.event_id] == e for e in sample)
