"""A full `moments demo` (a child process, as a user runs it) writes no customer data to logs.

The demo publishes the seed stories through the channel adapters: customer ids, call
notes, e-mail bodies and senders, a new address. Its stderr and the logs of the worker
and the sink it starts are searched for every one of them. (Its stdout is the product's
answer, the table of actions for the operator who asked, and is not a log.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from common.settings import Settings
from producers.simulator import STORY_CUSTOMERS, seed_stories


def customer_data_of_the_seed_stories() -> set[str]:
    """Customer ids, free texts, addresses and e-mail senders the demo publishes."""
    found = set(STORY_CUSTOMERS.values())
    for event in seed_stories(start_ms=0):
        found.add(event.customer_id)
        if event.text and len(event.text) >= 12:
            found.add(event.text[:40])
        found.update(v for k, v in event.attributes.items() if "address" in k and len(v) >= 6)
    found.update({"hana.novak@mail.example", "omar.said@mail.example", "lea.martin@mail.example"})
    return found


def test_the_demo_logs_no_customer_ids_texts_or_addresses(
    settings: Settings, database: str, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")},
        **settings.replace(database_url=database).as_env(),
        "MOMENTS_DATA_DIR": str(tmp_path),
        "COLUMNS": "250",  # one line per table row and message
    }
    demo = subprocess.run(
        [sys.executable, "-m", "moments", "demo", "--timeout", "240"],
        env=env,
        capture_output=True,
        timeout=400,
    )
    stdout, stderr = demo.stdout.decode(errors="replace"), demo.stderr.decode(errors="replace")
    assert demo.returncode == 0, stdout[-2000:] + stderr[-2000:]
    logs = sorted((tmp_path / "logs").glob("*.log"))
    assert {p.name for p in logs} >= {"worker.log", "sink-postgres.log"}
    texts = {"demo stderr": stderr} | {p.name: p.read_text(errors="replace") for p in logs}
    data = customer_data_of_the_seed_stories()
    assert len(data) > 20 and "all arrived" in stdout  # the demo really ran
    leaks = {name: sorted(d for d in data if d in text) for name, text in texts.items()}
    assert not any(leaks.values()), leaks
