"""Hostile channel exports: every read is capped, every rejection names file, line and field."""

from __future__ import annotations

import email.utils
import time
from pathlib import Path

import producers.adapters.base as base
import producers.adapters.email as email_adapter
from producers.adapters.email import EmailAdapter, html_to_text, parse_message
from producers.adapters.ingest import ingest
from producers.publisher import EventTooLarge
from schemas.records import InteractionEvent
from tests.support.adapters import Recorder, rejections

HOUR_MS = 3_600_000


def eml(date: str, body: bytes = b"hello", *, html: bool = False, extra: bytes = b"") -> bytes:
    kind = b"text/html" if html else b"text/plain"
    return (
        b"From: ann@example.com\r\nX-Customer-ID: C-1\r\nDate: " + date.encode() + b"\r\n"
        b"Subject: question\r\nMessage-ID: <m-"
        + str(len(body)).encode()
        + b"@example.com>\r\n"
        + extra
        + b"Content-Type: "
        + kind
        + b"; charset=utf-8\r\n\r\n"
        + body
        + b"\r\n"
    )


def test_html_to_text_keeps_the_words_and_drops_markup() -> None:
    markup = (
        "<html><head><style>p {color: red}</style><script>if (a < b) x()</script></head>"
        "<body><p>I want to <b>cancel</b> &amp; leave</p><!-- hidden --><br>2 < 3"
        "<![CDATA[x]]><?php echo 1 ?></body></html>"
    )
    assert html_to_text(markup).split() == [
        "I",
        "want",
        "to",
        "cancel",
        "&",
        "leave",
        "2",
        "<",
        "3",
    ]
    assert html_to_text("<p>kept</p><a href='x") == "\nkept\n"  # an unterminated tag ends it
    assert html_to_text("<" * 100_000) == "<" * 100_000
    assert html_to_text("<!--" * 100_000) == ""


def test_html_bombs_become_events(tmp_path: Path) -> None:
    now = email.utils.formatdate(time.time(), usegmt=True)
    bombs = [
        b"<" * 300_000,
        b"<a" * 300_000,
        b"<!--" * 200_000,
        b"</" * 300_000,
        b"<div>" * 200_000,
    ]
    for index, bomb in enumerate(bombs):
        (tmp_path / f"{index}.eml").write_bytes(eml(now, bomb + b" cancel", html=True))
    publisher = Recorder()
    summary = ingest("email", tmp_path, publisher)
    assert (summary.accepted, summary.rejected) == (5, [])
    assert all(len(e.text or "") <= 4000 for e in publisher.events)


def test_an_oversized_message_and_an_endless_line_are_rejected_unread(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(email_adapter, "MAX_MESSAGE_BYTES", 10_000)
    now = email.utils.formatdate(time.time(), usegmt=True)
    (tmp_path / "big.eml").write_bytes(eml(now, b"x" * 20_000))  # no newline in the body
    (tmp_path / "fine.eml").write_bytes(eml(now))
    mbox = tmp_path / "box.mbox"
    mbox.write_bytes(
        b"From a@b Thu Jan  1 00:00:00 2026\n"
        + eml(now, b"y" * 20_000).replace(b"\r\n", b"\n")
        + b"\nFrom a@b Thu Jan  1 00:00:00 2026\n"
        + eml(now).replace(b"\r\n", b"\n")
    )
    summary = ingest("email", tmp_path, Recorder())
    assert summary.accepted == 1
    assert [(Path(r.file).name, r.reason) for r in summary.rejected] == [
        ("big.eml", "message exceeds the limit of 10000 bytes")
    ]
    boxed = ingest("email", mbox, Recorder())
    assert boxed.accepted == 1
    assert rejections(boxed.rejected) == [(1, "message exceeds the limit of 10000 bytes")]


def test_an_endless_csv_or_jsonl_line_is_one_rejection(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(base, "MAX_LINE_BYTES", 1000)
    csv = tmp_path / "calls.csv"
    csv.write_bytes(
        b"call_id,customer_id,start_time,disposition\n"
        + b"X0,C"
        + b"9" * 5000
        + b"\n"
        + b"X1,C1,2026-01-01T00:00:00Z,CANCEL\n"
    )
    summary = ingest("calls", csv, None, dry_run=True)
    assert summary.accepted == 1
    assert rejections(summary.rejected) == [(2, "line exceeds the limit of 1000 bytes")]


def test_future_dates_are_rejected_by_name_and_e_mail_falls_back(tmp_path: Path) -> None:
    calls = tmp_path / "calls.csv"
    calls.write_text(
        "call_id,customer_id,start_time,disposition\n"
        "X1,C1,9999-01-01T00:00:00Z,CANCEL\n"
        "X2,C2,2026-01-01T00:00:00Z,CANCEL\n"
    )
    summary = ingest("calls", calls, None, dry_run=True)
    assert summary.accepted == 1
    assert len(summary.rejected) == 1 and summary.rejected[0].line == 2
    assert "in the future" in summary.rejected[0].reason
    assert summary.rejected[0].reason.split(":")[0] in ("start_time", "occurred_at")

    received = email.utils.formatdate(time.time() - 60, usegmt=True)
    future = tmp_path / "future.eml"
    future.write_bytes(
        eml("Fri, 31 Dec 9999 23:00:00 +0000", extra=f"Received: by mx; {received}\r\n".encode())
    )
    publisher = Recorder()
    assert ingest("email", future, publisher).accepted == 1
    event = publisher.events[0]
    assert event.attributes["date_from"] == "received"
    assert abs(event.occurred_at - (time.time() - 60) * 1000) < 5_000


def test_the_email_adapter_without_received_uses_the_time_of_reading() -> None:
    adapter = EmailAdapter(max_future_skew_ms=HOUR_MS, now_ms=lambda: 1_767_225_600_000)
    message = parse_message(eml("Fri, 31 Dec 9999 23:00:00 +0000"))
    event = adapter.map_record(message)
    assert (event.occurred_at, event.attributes["date_from"]) == (1_767_225_600_000, "ingested")
    trusting = EmailAdapter()  # the simulator's: made-up history is taken as dated
    assert trusting.map_record(message).occurred_at == message.occurred_at


def test_identifiers_over_the_limit_and_oversized_events_are_rejected_with_their_line(
    tmp_path: Path,
) -> None:
    calls = tmp_path / "calls.jsonl"
    calls.write_text(
        '{"call_id": "X1", "customer_id": "' + "C" * 3000 + '", '
        '"start_time": "2026-01-01T00:00:00Z", "disposition": "CANCEL"}\n'
        '{"call_id": "X2", "customer_id": "C2", "start_time": "2026-01-01T00:00:00Z", '
        '"disposition": "CANCEL"}\n'
    )
    summary = ingest("calls", calls, None, dry_run=True)
    assert summary.accepted == 1
    assert rejections(summary.rejected) == [
        (1, "customer_id: 3000 characters exceed the limit of 256")
    ]

    class SizeCapped(Recorder):
        def publish(self, event: InteractionEvent) -> None:
            if event.customer_id == "C2":
                raise EventTooLarge(70_000, 65_536)
            super().publish(event)

    published = ingest("calls", calls, SizeCapped())
    assert published.accepted == 0
    assert rejections(published.rejected)[1] == (
        2,
        "<event>: 70000 bytes encoded exceed the limit of 65536 bytes",
    )


def test_a_customer_since_out_of_range_is_a_rejected_line(tmp_path: Path) -> None:
    export = tmp_path / "calls.jsonl"
    rows = [
        ("CL-1", "2026-03-03T08:05:00Z", "2012-05-01"),
        ("CL-2", "2026-03-03T08:05:00Z", "2026-03-09"),  # in the future of its own call
        ("CL-3", "2026-03-03T08:05:00Z", "1850-01-01"),
        ("CL-4", "2026-03-03T23:59:00Z", "2026-03-04"),  # the day after: zones differ
    ]
    export.write_text(
        "".join(
            f'{{"contact_id": "{call}", "customer_id": "CUST-1", "initiation_timestamp": "{at}",'
            f' "wrap_up": "GENERAL", "customer_since": "{since}"}}\n'
            for call, at, since in rows
        ),
        encoding="utf-8",
    )
    publisher = Recorder()
    summary = ingest("calls", export, publisher)
    dry = ingest("calls", export, None, dry_run=True)
    future = "lies in the future: after the day after the event's occurred_at (UTC)"
    expected = [(2, f"customer_since: {future}"), (3, "customer_since: lies before 1900-01-01")]
    assert rejections(summary.rejected) == rejections(dry.rejected) == expected
    assert [e.event_id for e in publisher.events] == ["call-CL-1", "call-CL-4"]
