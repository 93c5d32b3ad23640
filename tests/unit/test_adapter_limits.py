"""Hostile channel exports: every read is capped, every rejection names file, line and field."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from pathlib import Path

import producers.adapters.base as base
import producers.adapters.email as email_adapter
from producers.adapters.base import Rejection, Skipped, SourceRecord
from producers.adapters.calls import CallAdapter
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


# --- bad mail: an event of type inquiry, or a rejection naming the message; never a crash ---


def _mime(now: str, ident: str, content_type: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"From: ann@example.com\r\nX-Customer-ID: C-1\r\nDate: " + now.encode() + b"\r\n"
        b"Subject: hello\r\nMessage-ID: <" + ident.encode() + b"@example.com>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: " + content_type + b"\r\n" + extra + b"\r\n" + body
    )


def test_mail_without_text_with_a_lying_charset_or_in_another_language_is_an_inquiry(
    tmp_path: Path,
) -> None:
    now = email.utils.formatdate(time.time(), usegmt=True)
    pdf_only = (
        b"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"JVBERi0xLjQK\r\n--b--\r\n"
    )
    cases = {
        "no-text": (b'multipart/mixed; boundary="b"', pdf_only),
        "latin1-as-utf8": (
            b"text/plain; charset=utf-8",
            "Je veux résilier, José".encode("latin-1"),
        ),
        "unknown-charset": (b"text/plain; charset=x-made-up", b"please cancel my contract"),
        "utf16-claimed": (b"text/plain; charset=utf-16", b"I want to cancel my contract"),
        "german": (b"text/plain; charset=utf-8", "Ich möchte kündigen, bitte.".encode()),
    }
    for ident, (content_type, body) in cases.items():
        (tmp_path / f"{ident}.eml").write_bytes(_mime(now, ident, content_type, body))
    publisher = Recorder()

    summary = ingest("email", tmp_path, publisher)

    assert summary.rejected == [] and summary.accepted == len(cases)
    by_id = {e.attributes["message_id"].split("@")[0]: e for e in publisher.events}
    assert by_id["latin1-as-utf8"].type == "inquiry"
    for ident in ("no-text", "german", "utf16-claimed"):
        assert by_id[ident].type == "inquiry", ident
        assert by_id[ident].attributes["classified_as"] == "unknown", ident
    # A charset nobody knows is read as UTF-8 with replacements: the words still count.
    assert by_id["unknown-charset"].type == "cancellation_requested"


def test_a_25_mib_attachment_and_1200_nested_multiparts_are_rejections_naming_the_message(
    tmp_path: Path,
) -> None:
    now = email.utils.formatdate(time.time(), usegmt=True)
    attachment = b"QUFB" * (25 * 1024 * 1024 // 4 + 1)  # base64 of 25 MiB and more
    (tmp_path / "1-attachment.eml").write_bytes(
        _mime(
            now,
            "big",
            b'multipart/mixed; boundary="b"',
            b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
            b"Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + attachment
            + b"\r\n--b--\r\n",
        )
    )
    nested = b"".join(
        b'--b%d\r\nContent-Type: multipart/mixed; boundary="b%d"\r\n\r\n' % (i, i + 1)
        for i in range(1200)
    ) + b"".join(b"--b%d--\r\n" % i for i in range(1200, -1, -1))
    (tmp_path / "2-nested.eml").write_bytes(
        _mime(now, "nested", b'multipart/mixed; boundary="b0"', nested)
    )
    (tmp_path / "3-fine.eml").write_bytes(eml(now, b"When is my bill due?"))
    publisher = Recorder()

    summary = ingest("email", tmp_path, publisher)

    assert [e.type for e in publisher.events] == ["inquiry"]  # the run went on past both
    reasons = {Path(r.file).name: r.reason for r in summary.rejected}
    assert reasons["1-attachment.eml"].startswith("message exceeds the limit of")
    assert reasons["2-nested.eml"].startswith("Content-Type: holds 1201 multiparts")


def test_any_error_of_one_record_is_a_rejection_naming_it_and_the_run_goes_on(
    tmp_path: Path, monkeypatch
) -> None:
    now = email.utils.formatdate(time.time(), usegmt=True)
    for index in range(3):
        (tmp_path / f"{index}.eml").write_bytes(eml(now, b"question " * (index + 1)))
    real_parse = email_adapter.parse_message

    def parse(raw: bytes, header: str = "X-Customer-ID") -> email_adapter.EmailMessage:
        if b"question question question" in raw:
            raise RecursionError("maximum recursion depth exceeded")
        return real_parse(raw, header)

    real_map = EmailAdapter.map_record

    def map_record(self: EmailAdapter, message: email_adapter.EmailMessage) -> InteractionEvent:
        if message.body.count("question") == 2:
            raise KeyError("ann@example.com")  # an error quoting customer data
        return real_map(self, message)

    monkeypatch.setattr(email_adapter, "parse_message", parse)
    monkeypatch.setattr(EmailAdapter, "map_record", map_record)

    summary = ingest("email", tmp_path, Recorder())

    assert summary.accepted == 1
    assert [(Path(r.file).name, r.reason) for r in summary.rejected] == [
        ("1.eml", "cannot be mapped (KeyError)"),
        ("2.eml", "unreadable message (RecursionError)"),
    ]


def test_a_table_adapter_error_and_deep_json_are_rejections_too(tmp_path: Path) -> None:
    calls = tmp_path / "calls.jsonl"
    calls.write_text(
        '{"call_id": "1", "customer_id": "C1", "start_time": "2026-01-01T00:00:00Z"}\n'
        + "[" * 100_000
        + "\n"
        + '{"call_id": "3", "customer_id": "C3", "start_time": "2026-01-01T00:00:00Z",'
        ' "customer_since": {"a": 1}}\n'
        '{"call_id": "4", "customer_id": "C4", "start_time": "2026-01-01T00:00:00Z"}\n'
    )

    summary = ingest("calls", calls, None, dry_run=True)

    assert summary.accepted == 2
    assert [r.line for r in summary.rejected] == [2, 3]
    assert summary.rejected[0].reason == "JSON nests too deep"


def test_an_adapter_whose_reading_fails_midway_ends_with_a_rejection_not_a_traceback(
    tmp_path: Path, monkeypatch
) -> None:
    calls = tmp_path / "calls.csv"
    calls.write_text("call_id,customer_id,start_time\nX1,C1,2026-01-01T00:00:00Z\n")
    real_records = CallAdapter.records

    def records(self: CallAdapter, path: Path) -> Iterator[SourceRecord | Rejection | Skipped]:
        yield from real_records(self, path)
        raise MemoryError  # what a broken reader could raise after its first record

    monkeypatch.setattr(CallAdapter, "records", records)

    summary = ingest("calls", calls, None, dry_run=True)

    assert summary.accepted == 1
    assert [(Path(r.file).name, r.reason) for r in summary.rejected] == [
        ("calls.csv", "reading stopped (MemoryError)")
    ]
