"""Hostile e-mail through `moments ingest` (a child process, the real broker): HTML bombs,
a message of tens of megabytes without a newline and a `Date` in year 9999 among good mail.
Every good message and every bomb is published once, the giant is rejected by file and
reason without being read whole, the future-dated one is published with its delivery time."""

from __future__ import annotations

import email.utils
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from common.settings import Settings
from schemas.codec import codec_for
from schemas.records import InteractionEvent
from tests.reliability.harness import SOAK_MARKS, Figures
from tests.support.kafka import read_topic


def message(n: int, date: str, body: bytes, *, html: bool = False, received: str = "") -> bytes:
    kind = b"text/html" if html else b"text/plain"
    hop = f"Received: from mx by helpdesk; {received}\r\n".encode() if received else b""
    return (
        f"From: customer{n}@example.com\r\nX-Customer-ID: C-MAIL-{n}\r\nDate: {date}\r\n"
        f"Subject: about my bill\r\nMessage-ID: <mail-{n}@example.com>\r\n".encode()
        + hop
        + b"Content-Type: " + kind + b"; charset=utf-8\r\n\r\n" + body + b"\r\n"
    )  # fmt: skip


@pytest.mark.parametrize(
    "giant_mb", [pytest.param(30, id="short"), pytest.param(50, id="soak", marks=SOAK_MARKS)]
)
def test_hostile_email_through_moments_ingest(
    giant_mb: int, settings: Settings, tmp_path: Path, figures: Figures
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    now = email.utils.formatdate(time.time(), usegmt=True)
    bombs = [b"<" * 1_000_000, b"<a" * 500_000, b"<!--" * 250_000, b"</" * 500_000]
    expected = []
    for n in range(20):
        (inbox / f"good-{n:02d}.eml").write_bytes(message(n, now, b"please cancel my contract"))
        expected.append(f"email-mail-{n}@example.com")
    for n, bomb in enumerate(bombs, start=100):
        (inbox / f"bomb-{n}.eml").write_bytes(message(n, now, bomb + b" dispute", html=True))
        expected.append(f"email-mail-{n}@example.com")
    received = email.utils.formatdate(time.time() - 120, usegmt=True)
    future = message(200, "Fri, 31 Dec 9999 23:00:00 +0000", b"hello", received=received)
    (inbox / "future.eml").write_bytes(future)
    expected.append("email-mail-200@example.com")
    with (inbox / "giant.eml").open("wb") as giant:
        giant.write(message(300, now, b"").rstrip(b"\r\n"))
        for _ in range(giant_mb):
            giant.write(b"x" * 1024 * 1024)  # no newline, ever

    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "moments", "ingest", "email", str(inbox)],
        env={**os.environ, **settings.as_env()},
        capture_output=True,
        text=True,
        timeout=600,
    )
    took = time.monotonic() - started
    output = run.stdout + run.stderr
    codec = codec_for(InteractionEvent)
    records = read_topic(
        settings, [settings.topics.interactions], enough=lambda found: len(found) >= len(expected)
    )
    events = [codec.decode(m.value()) for m in records]  # type: ignore[arg-type]
    seen = Counter(e.event_id for e in events)
    dated = {e.event_id: e for e in events}["email-mail-200@example.com"]
    figures.update(
        **{
            "messages": len(expected) + 1,
            "published": sum(seen.values()),
            "rejected": output.count("rejected ") - 1,
            "lost": len(set(expected) - seen.keys()),
            "duplicated": sum(n > 1 for n in seen.values()),
            "giant MB": giant_mb,
            "ingest s": round(took, 1),
        }
    )
    assert run.returncode == 0, output[-2000:]
    assert f"{len(expected)} published, 1 rejected" in output
    assert "giant.eml" in output and "exceeds the limit" in output
    assert seen == Counter(expected)
    assert dated.attributes["date_from"] == "received"
    assert dated.occurred_at <= time.time() * 1000
