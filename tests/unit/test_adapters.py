"""Channel adapters on the sample exports in tests/data/channels: mapping, and rejections with line
and reason."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moments.cli import app
from producers.adapters.base import MappingError, RecordError
from producers.adapters.billing import BillingAdapter
from producers.adapters.calls import CallAdapter
from producers.adapters.email import EmailAdapter, clean_text, load_customer_lookup, parse_message
from producers.adapters.ingest import JsonLinesOut, ingest
from producers.adapters.registry import adapter_class, adapter_kinds, register, unregister
from schemas.codec import read_events_jsonl, to_json_lines
from schemas.records import InteractionEvent
from tests.support.adapters import Recorder, rejections

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "channels"
CUSTOMERS = DATA / "email_customers.csv"


def _by_id(events: list[InteractionEvent]) -> dict[str, InteractionEvent]:
    return {event.event_id: event for event in events}


# --- calls ------------------------------------------------------------------------------------


def test_call_csv_rows_map_to_call_events() -> None:
    publisher = Recorder()

    summary = ingest("calls", DATA / "calls.csv", publisher)

    events = _by_id(publisher.events)
    assert summary.accepted == 8 and len(events) == 8 and publisher.flushed == 1
    cancel = events["call-CL-1001"]
    assert (cancel.customer_id, cancel.channel, cancel.type) == (
        "CUST-001",
        "call",
        "cancellation_requested",
    )
    assert cancel.occurred_at == 1_772_442_843_000  # 2026-03-02T09:14:03Z
    assert cancel.source == "contact-centre" and cancel.product == "broadband"
    assert cancel.text and cancel.text.startswith("Customer wants to cancel broadband")
    assert cancel.attributes == {
        "disposition": "CANCEL",
        "queue": "retention",
        "agent_id": "A17",
        "duration_s": "412",
    }
    # An offset in the export is honoured; a naive time is read as UTC (mapping default).
    assert events["call-CL-1002"].occurred_at == 1_772_440_300_000  # 08:31:40Z
    assert events["call-CL-1003"].occurred_at == 1_772_445_731_000
    assert events["call-CL-1002"].reference == "DSP-2201"
    # Disposition codes are case-insensitive; unknown and blank ones are inquiries.
    assert events["call-CL-1004"].type == "complaint_filed"
    assert events["call-CL-1004"].text == (
        "Third dropped call this week, very upset\nwants a callback from a manager"
    )
    assert events["call-CL-1003"].type == "inquiry"
    assert events["call-CL-1011"].type == "inquiry"
    assert events["call-CL-1005"].type == "feedback_given"
    assert events["call-CL-1010"].type == "dispute_resolved"
    move = events["call-CL-1006"]
    assert move.type == "address_changed"
    assert move.attributes["new_address"] == "12 Harbour Road, Leith EH6 6JJ"


def test_malformed_call_rows_are_reported_with_line_and_reason() -> None:
    summary = ingest("calls", DATA / "calls.csv", None, dry_run=True)

    assert rejections(summary.rejected) == [
        (9, "customer_id: must not be empty"),
        (10, "start_time: 'yesterday morning' is not an ISO-8601 timestamp"),
        (11, "row has 6 fields, the header has 11"),
        (14, "row has 12 fields, the header has 11"),
    ]
    assert all(r.file == str(DATA / "calls.csv") for r in summary.rejected)
    assert str(summary.rejected[0]) == f"{DATA / 'calls.csv'}:9: customer_id: must not be empty"
    assert summary.accepted + len(summary.rejected) == summary.total == 12


def test_call_json_lines_with_platform_column_names() -> None:
    publisher = Recorder()

    summary = ingest("calls", DATA / "calls.jsonl", publisher)

    events = _by_id(publisher.events)
    assert set(events) == {"call-CL-2001", "call-CL-2002", "call-CL-2003", "call-CL-2008"}
    bereavement = events["call-CL-2001"]
    assert bereavement.type == "cancellation_requested"
    assert bereavement.customer_since == date(2012, 5, 1)
    assert bereavement.text == "Bereavement: closing late husband's account"
    assert events["call-CL-2002"].occurred_at == 1_772_525_100_000  # epoch ms as exported
    assert events["call-CL-2003"].attributes["callback"] == "true"
    assert events["call-CL-2003"].attributes["duration_s"] == "312"
    assert events["call-CL-2008"].type == "address_changed"
    assert rejections(summary.rejected) == [
        (4, "not valid JSON: Expecting value (column 1)"),
        (5, "expected a JSON object, got list"),
        (6, "started_at: missing required field"),
        (7, "customer_since: '03/04/2015' is not a date (YYYY-MM-DD)"),
    ]


def test_a_mapping_file_overrides_dispositions_and_source(tmp_path: Path) -> None:
    mapping = tmp_path / "calls.yaml"
    mapping.write_text(
        "source: genesys\ndispositions: {BALANCE_ENQUIRY: payment_received}\n"
        "default_type: other_call\nclassify_text: false\n",
        encoding="utf-8",
    )
    publisher = Recorder()

    ingest("calls", DATA / "calls.csv", publisher, mapping=mapping)

    events = _by_id(publisher.events)
    assert events["call-CL-1003"].type == "payment_received"
    assert events["call-CL-1001"].type == "other_call"  # CANCEL no longer listed
    assert {e.source for e in events.values()} == {"genesys"}


def test_an_opt_out_at_wrap_up_is_a_preference_change(tmp_path: Path) -> None:
    export = tmp_path / "calls.csv"
    export.write_text(
        "call_id,customer_id,start_time,disposition,preferred_channel\n"
        "K-1,C-1,2026-03-02T09:00:00Z,OPT_OUT,email\n"
        "K-2,C-2,2026-03-02T09:05:00Z,opt_in,\n",
        encoding="utf-8",
    )
    publisher = Recorder()

    ingest("calls", export, publisher)

    events = _by_id(publisher.events)
    assert events["call-K-1"].type == "contact_preferences_changed"
    assert events["call-K-1"].attributes["engagement"] == "opt_out"
    assert events["call-K-1"].attributes["preferred_channel"] == "email"
    assert events["call-K-2"].attributes["engagement"] == "opt_in"


def test_a_disposition_with_attributes_must_name_its_type(tmp_path: Path) -> None:
    mapping = tmp_path / "calls.yaml"
    mapping.write_text("dispositions: {OPT_OUT: {attributes: {engagement: opt_out}}}\n")

    with pytest.raises(MappingError, match=r"dispositions\.OPT_OUT: expected an event type"):
        CallAdapter(mapping)


def test_a_broken_mapping_file_is_one_clear_error(tmp_path: Path) -> None:
    mapping = tmp_path / "calls.yaml"
    mapping.write_text("dispositions: [CANCEL]\n", encoding="utf-8")

    with pytest.raises(MappingError, match=r"calls\.yaml: section 'dispositions' must be a dict"):
        CallAdapter(mapping)


def test_reingesting_a_file_gives_the_same_event_ids() -> None:
    first, second = Recorder(), Recorder()

    ingest("calls", DATA / "calls.csv", first)
    ingest("calls", DATA / "calls.csv", second)

    assert [e.event_id for e in first.events] == [e.event_id for e in second.events]
    assert first.events == second.events


def test_a_directory_of_exports_is_read_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(
        "call_id,customer_id,start_time,disposition\nX1,C1,2026-01-01T00:00:00Z,CANCEL\n",
        encoding="utf-8",
    )
    (tmp_path / "b.jsonl").write_text(
        '{"call_id": "X2", "customer_id": "C2", "start_time": "2026-01-01T00:00:00Z"}\n',
        encoding="utf-8",
    )
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    publisher = Recorder()

    summary = ingest("calls", tmp_path, publisher)

    assert summary.accepted == 2 and not summary.rejected
    assert [e.event_id for e in publisher.events] == ["call-X1", "call-X2"]


def test_undecodable_and_unterminated_csv_lines_are_rejected_not_fatal(tmp_path: Path) -> None:
    export = tmp_path / "calls.csv"
    export.write_bytes(
        b"call_id,customer_id,start_time,disposition\n"
        b"X1,C1,2026-01-01T00:00:00Z,CANCEL\n"
        b"X2,C\xff\xfe,2026-01-01T00:00:00Z,CANCEL\n"
        b"X3,C3,2026-01-01T00:00:00Z,DISPUTE\n"
    )

    summary = ingest("calls", export, None, dry_run=True)

    assert summary.accepted == 2
    assert rejections(summary.rejected) == [(3, "line is not valid UTF-8")]


# --- billing ----------------------------------------------------------------------------------


def test_billing_csv_carries_amounts_currency_due_dates_and_references() -> None:
    publisher = Recorder()

    summary = ingest("billing", DATA / "billing.csv", publisher)

    events = _by_id(publisher.events)
    assert summary.accepted == 7
    opened = events["billing-B-5001"]
    assert (opened.type, opened.product, opened.customer_since) == (
        "account_opened",
        "gas",
        date(2026, 1, 5),
    )
    invoice = events["billing-B-5002"]
    assert invoice.type == "invoice_issued" and invoice.channel == "billing"
    assert (invoice.amount, invoice.currency, invoice.due_date, invoice.reference) == (
        84.2,
        "GBP",
        date(2026, 2, 15),
        "INV-9001",
    )
    assert events["billing-B-5003"].currency == "GBP"  # upper-cased
    failed = events["billing-B-5004"]
    assert failed.type == "payment_failed" and failed.amount == 1120.0  # "1,120.00"
    assert failed.attributes == {"failure_reason": "insufficient_funds"}
    reading = events["billing-B-5005"]
    assert reading.type == "meter_reading_submitted"
    assert reading.attributes == {"meter_id": "E-77", "reading": "40213", "unit": "kWh"}
    assert events["billing-B-5006"].type == "payment_demand_issued"
    assert events["billing-B-5013"].type == "dispute_resolved"
    assert events["billing-B-5013"].reference == "DSP-2201"


def test_malformed_billing_rows_are_reported_with_line_and_reason() -> None:
    summary = ingest("billing", DATA / "billing.csv", None, dry_run=True)

    reasons = dict(rejections(summary.rejected))
    assert set(reasons) == {8, 9, 10, 11, 12, 13}
    assert reasons[8] == "amount: 'twelve' is not an amount"
    assert reasons[9] == "due_date: required for invoice_issued records"
    assert reasons[10].startswith("record_type: unknown record type 'REFUND_ADJUSTMENT' (known: ")
    assert reasons[11] == "currency: 'POUNDS' is not an ISO 4217 currency code"
    assert reasons[12] == "reading: required for meter_reading_submitted records"
    assert reasons[13] == "posted_at: '2026-02-30T02:00:00Z' is not an ISO-8601 timestamp"


def test_billing_json_lines_with_their_own_names() -> None:
    publisher = Recorder()

    summary = ingest("billing", DATA / "billing.jsonl", publisher)

    events = _by_id(publisher.events)
    assert [e.type for e in publisher.events] == [
        "account_opened",
        "invoice_issued",
        "payment_failed",
        "payment_demand_issued",
        "meter_reading_submitted",
    ]
    assert events["billing-B-6001"].attributes == {"credit_limit": "2500"}
    assert events["billing-B-6002"].amount == 310.55 and events["billing-B-6002"].currency == "EUR"
    assert events["billing-B-6004"].due_date == date(2026, 3, 10)
    assert events["billing-B-6005"].occurred_at == 1_772_000_000_000  # epoch seconds
    assert events["billing-B-6005"].attributes["reading"] == "1203.5"
    assert rejections(summary.rejected) == [
        (6, "due_date: required for invoice_issued records"),
        (7, "customer_id: missing required field"),
        (8, "amount: 'NaN' is not a finite amount"),
        (9, "not valid JSON: Expecting ',' delimiter (column 61)"),
    ]


def test_billing_adapter_maps_one_record() -> None:
    adapter = BillingAdapter()

    event = adapter.map_record(
        {
            "record_id": " R-1 ",
            "customer_id": "C9",
            "record_type": "payment",
            "posted_at": "2026-01-02T03:04:05+01:00",
            "amount": "12.5",
            "currency": "eur",
        }
    )

    assert event.event_id == "billing-R-1"
    assert event.occurred_at == 1_767_319_445_000
    assert (event.amount, event.currency) == (12.5, "EUR")
    with pytest.raises(RecordError, match="currency: required when an amount is given"):
        adapter.map_record(
            {"record_id": "R-2", "customer_id": "C9", "record_type": "DISPUTE_RESOLVED",
             "posted_at": 1, "amount": 3}
        )  # fmt: skip


# --- email ------------------------------------------------------------------------------------


def test_eml_messages_map_to_email_events() -> None:
    publisher = Recorder()

    summary = ingest("email", DATA / "email", publisher, customers=CUSTOMERS)

    events = _by_id(publisher.events)
    assert summary.accepted == 5
    cancel = events["email-20260302081244.4411@mail.example.com"]
    assert (cancel.customer_id, cancel.channel, cancel.type) == (
        "CUST-200",
        "email",
        "cancellation_requested",
    )
    assert cancel.occurred_at == 1_772_435_564_000  # 08:12:44 +0100
    assert cancel.source == "helpdesk" and cancel.product == "broadband"
    assert cancel.text is not None and "Maria López" not in cancel.text  # signature removed
    assert cancel.text.startswith("Hello, My mother passed away last month")
    dispute = events["email-CAF7x-dispute-2301@mail.example.org"]
    assert dispute.type == "dispute_opened"
    assert dispute.reference == "DSP-2301"  # the case id wins over the invoice number
    assert dispute.text == (
        "I want to dispute this bill: the reading used is estimated and the amount is far "
        "higher than my actual usage."
    )  # quoted reply dropped, plain part preferred
    move = events["email-move-0001@example.net"]
    assert move.type == "address_changed"
    assert move.attributes["new_address"] == "7 Quay Street, Bristol BS1 4DJ"
    assert move.product == "electricity"
    feedback = events["email-fb-77@example.com"]
    assert feedback.type == "feedback_given"
    assert feedback.text == (
        "It would be nice to submit meter readings with a photo & get a reminder."
    )  # html only: tags and styles stripped
    by_header = [e for e in publisher.events if e.customer_id == "CUST-205"]
    assert len(by_header) == 1 and by_header[0].type == "inquiry"
    assert by_header[0].event_id.startswith("email-sha256-")  # no Message-ID


def test_bad_messages_are_reported_with_file_and_reason() -> None:
    summary = ingest("email", DATA / "email", None, dry_run=True, customers=CUSTOMERS)

    reasons = {Path(r.file).name: r.reason for r in summary.rejected}
    assert reasons == {
        # an address is customer data: the reason names the file and header, never the address
        "05-unknown-sender.eml": "From: the sender's address is not in the customer lookup and "
        "the message has no X-Customer-ID header",
        "06-no-date.eml": "Date: header is missing",
        "07-bad-date.eml": "Date: 'sometime last tuesday' is not an RFC 5322 date",
    }


def test_an_mbox_is_read_with_line_numbers_of_each_message() -> None:
    publisher = Recorder()

    summary = ingest("email", DATA / "inbox.mbox", publisher, customers=CUSTOMERS)

    assert [e.type for e in publisher.events] == [
        "complaint_filed",
        "meter_reading_submitted",
        "feedback_given",
    ]
    assert publisher.events[0].reference == "CMP-4401"
    assert rejections(summary.rejected) == [(19, "From: header is missing")]


def test_a_maildir_is_read(tmp_path: Path) -> None:
    for sub in ("cur", "new", "tmp"):
        (tmp_path / sub).mkdir()
    raw = (DATA / "email" / "03-address.eml").read_bytes()
    (tmp_path / "new" / "1700000000.M1P1.host").write_bytes(raw)
    (tmp_path / "cur" / "1700000001.M2P1.host:2,S").write_bytes(
        raw.replace(b"<move-0001@example.net>", b"<move-0002@example.net>")
    )
    publisher = Recorder()

    summary = ingest("email", tmp_path, publisher, customers=CUSTOMERS)

    assert summary.accepted == 2
    assert sorted(e.event_id for e in publisher.events) == [
        "email-move-0001@example.net",
        "email-move-0002@example.net",
    ]


def test_the_type_comes_from_the_words_not_from_keywords() -> None:
    adapter = EmailAdapter(customers={"a@b.example": "C1"})

    assert adapter.event_type("Complaint", "I want to complain about the engineer.") == (
        "complaint_filed"
    )
    assert adapter.event_type("Hello", "Please cancel my contract.") == "cancellation_requested"
    assert adapter.event_type("Hello", "I do not want to cancel my contract.") == "inquiry"
    assert adapter.event_type("Hello", "My NEW   ADDRESS is: 1 Elm St") == "address_changed"
    assert adapter.event_type("Hello", "what is the balance?") == "inquiry"
    assert adapter.event_type("Re: disputed", "") == "inquiry"  # a subject alone opens nothing


def test_an_auto_reply_makes_no_event_and_is_counted(tmp_path: Path) -> None:
    raw = (DATA / "email" / "08-header-customer.eml").read_bytes()
    (tmp_path / "1.eml").write_bytes(b"Auto-Submitted: auto-replied\r\n" + raw)
    (tmp_path / "2.eml").write_bytes(
        raw.replace(b"Subject: ", b"Subject: Out of Office: ", 1).replace(
            b"Date:", b"X-A: 1\r\nDate:"
        )
    )
    (tmp_path / "3.eml").write_bytes(raw)

    summary = ingest("email", tmp_path, None, dry_run=True)

    assert summary.accepted == 1 and summary.rejected == []
    assert summary.skipped_by_reason == {"auto_reply": 2} and summary.total == 3


@pytest.mark.parametrize(
    ("kind", "path", "customers"),
    [
        ("calls", "calls.csv", None),
        ("email", "email", CUSTOMERS),
        ("billing", "billing.jsonl", None),
    ],
)
def test_out_writes_the_events_as_the_json_lines_replay_reads(
    tmp_path: Path, kind: str, path: str, customers: Path | None
) -> None:
    published = Recorder()
    ingest(kind, DATA / path, published, customers=customers)
    out = tmp_path / "events.jsonl"

    with JsonLinesOut(out) as writer:
        summary = ingest(kind, DATA / path, writer, customers=customers)

    assert summary.accepted == writer.written == len(published.events) > 0
    assert list(read_events_jsonl(out)) == published.events
    assert out.read_bytes() == to_json_lines(published.events)
    if kind == "email":
        named = [e for e in published.events if not e.event_id.startswith("email-sha256-")]
        assert all(e.attributes["message_id"] == e.event_id[len("email-") :] for e in named)


def test_the_cli_writes_out_without_a_broker(tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"

    result = CliRunner().invoke(
        app, ["ingest", "calls", str(DATA / "calls.csv"), "--out", str(out)], terminal_width=200
    )
    both = CliRunner().invoke(
        app, ["ingest", "calls", str(DATA / "calls.csv"), "--out", str(out), "--dry-run"]
    )

    assert result.exit_code == 0, result.output
    assert "8 written, 4 rejected of 12 records" in result.output
    assert len(list(read_events_jsonl(out))) == 8
    assert both.exit_code != 0 and "at most one of --dry-run, --out FILE" in both.output


def test_parse_message_and_clean_text() -> None:
    message = parse_message(
        b"From: A <A@B.example>\r\nDate: Mon, 02 Mar 2026 08:00:00 GMT\r\n"
        b"Subject: hi\r\n\r\nLine one\r\n> quoted\r\nLine  two\r\n-- \r\nsig\r\n"
    )

    assert message.sender == "a@b.example"
    assert message.occurred_at == 1_772_438_400_000
    assert clean_text(message.body, 100) == "Line one Line two"
    assert clean_text("x" * 50, 10) == "x" * 10
    assert clean_text("   ", 10) is None


def test_customer_lookup_files(tmp_path: Path) -> None:
    as_json = tmp_path / "lookup.json"
    as_json.write_text('{"X@Y.example": "C7"}', encoding="utf-8")
    broken = tmp_path / "lookup.csv"
    broken.write_text("address_book\nx@y\n", encoding="utf-8")

    assert load_customer_lookup(CUSTOMERS)["maria.lopez@example.com"] == "CUST-200"
    assert load_customer_lookup(as_json) == {"x@y.example": "C7"}
    with pytest.raises(MappingError, match=r"lookup\.csv:1: expected a header"):
        load_customer_lookup(broken)


# --- ingest -----------------------------------------------------------------------------------


def test_dry_run_validates_without_publishing_and_counts_types() -> None:
    summary = ingest("billing", DATA / "billing.csv", None, dry_run=True)

    assert summary.dry_run and summary.accepted == 7
    assert summary.by_type["invoice_issued"] == 1 and summary.duplicates == 0


def test_progress_hook_is_called_with_the_expected_total() -> None:
    calls: list[tuple[int, int | None]] = []

    ingest(
        "calls", DATA / "calls.csv", None, dry_run=True, progress=lambda d, t: calls.append((d, t))
    )

    assert calls[-1] == (12, 12)


def test_unknown_kind_and_missing_publisher_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown channel kind 'fax'"):
        ingest("fax", DATA / "calls.csv", None, dry_run=True)
    with pytest.raises(ValueError, match="needs a publisher"):
        ingest("calls", DATA / "calls.csv", None)
    with pytest.raises(FileNotFoundError):
        ingest("calls", DATA / "nope.csv", None, dry_run=True)


def test_two_columns_claiming_one_field_keep_the_better_alias(tmp_path: Path) -> None:
    export = tmp_path / "calls.csv"
    export.write_text(
        "id,call_id,customer_id,start_time,timestamp,disposition\n"
        "row-1,CL-9,C1,2026-01-01T10:00:00Z,2026-01-01T09:00:00Z,CANCEL\n",
        encoding="utf-8",
    )
    publisher = Recorder()

    summary = ingest("calls", export, publisher)

    assert summary.accepted == 1
    event = publisher.events[0]
    assert event.event_id == "call-CL-9"  # call_id is listed before id in calls.yaml
    assert event.occurred_at == 1_767_261_600_000  # start_time before timestamp
    assert event.attributes["id"] == "row-1"
    assert event.attributes["timestamp"] == "2026-01-01T09:00:00Z"


# --- the registry: a new adapter is one class ------------------------------------------------


@pytest.fixture
def toy_registered() -> Iterator[None]:
    # Imported here, not at the top: registering on import, the toy would otherwise sit in
    # the registry for the whole session (and in the kind list of any CLI loaded after).
    toy = importlib.import_module("tests.support.toy_adapter").ToyAdapter
    register(toy)  # again, when an earlier test already imported it and unregistered it
    yield
    unregister(toy.kind)


def test_the_registry_lists_the_packaged_kinds_in_their_order() -> None:
    assert adapter_kinds()[:3] == ("calls", "email", "billing")
    assert adapter_class("email") is EmailAdapter


def test_a_kind_cannot_be_registered_twice() -> None:
    class Impostor(CallAdapter):
        pass

    with pytest.raises(ValueError, match="channel kind 'calls' is taken by CallAdapter"):
        register(Impostor)
    assert adapter_class("calls") is CallAdapter


@pytest.mark.usefixtures("toy_registered")
def test_a_registered_adapter_is_ingested_with_no_other_edit(tmp_path: Path) -> None:
    export = tmp_path / "export.toy"
    export.write_text("C1,inquiry\n\nC2\nC3,feedback_given\n", encoding="utf-8")
    publisher = Recorder()
    progress: list[tuple[int, int | None]] = []

    summary = ingest("toy", export, publisher, progress=lambda d, t: progress.append((d, t)))

    assert adapter_kinds()[-1] == "toy"
    assert [(e.event_id, e.customer_id, e.type) for e in publisher.events] == [
        ("toy-1", "C1", "inquiry"),
        ("toy-4", "C3", "feedback_given"),
    ]
    assert rejections(summary.rejected) == [(3, "event_type: missing")]
    assert progress[-1] == (3, 3)


def test_the_cli_offers_a_registered_adapter(tmp_path: Path) -> None:
    export = tmp_path / "export.toy"
    export.write_text("C1,inquiry\n", encoding="utf-8")
    # The CLI reads the kinds when it loads: a fresh process, the toy imported first,
    # stands for an adapter module in producers/adapters/.
    script = (
        "import sys\n"
        "import tests.support.toy_adapter\n"
        "from typer.testing import CliRunner\n"
        "from moments.cli import app\n"
        "runner = CliRunner()\n"
        "print(runner.invoke(app, ['ingest', '--help'], terminal_width=200).output)\n"
        "print(runner.invoke(app, ['ingest', 'toy', sys.argv[1], '--dry-run']).output)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(export)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert "<calls|email|billing|toy>" in done.stdout
    assert "1 valid, 0 rejected of 1 records" in done.stdout
