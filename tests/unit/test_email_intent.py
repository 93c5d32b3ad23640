"""The intent classifier on the messages that used to open cases customers were closing, and on
what it must understand: negation, thanks, replies, quotes, signatures, uncertainty, languages."""

from __future__ import annotations

from pathlib import Path

import pytest

from producers.adapters.base import MappingError
from producers.adapters.calls import CallAdapter
from producers.adapters.email import EmailAdapter, EmailMessage, own_words
from producers.adapters.intent import IntentClassifier, default_classifier, reply_subject

CAREFUL = ("cancellation_requested", "dispute_opened", "complaint_filed")


@pytest.fixture(scope="module")
def adapter() -> EmailAdapter:
    return EmailAdapter(customers={"ann@example.com": "C-1"})


@pytest.mark.parametrize(
    ("subject", "body", "expected"),
    [
        # The messages that opened cases, and their like.
        ("Re: your dispute", "Thank you for resolving my dispute so quickly", "feedback_given"),
        ("Question", "Thank you for resolving my dispute so quickly!", "feedback_given"),
        (
            "first bill",
            "I do not want to cancel, I just want to understand my first bill",
            "inquiry",
        ),
        ("CMP-77", "My complaint CMP-77 was resolved yesterday", "inquiry"),
        ("Hello", "I have no complaint at all, I only wanted to ask about my tariff", "inquiry"),
        ("Hi", "I don't want to cancel anything, I want to know my balance.", "inquiry"),
        ("Hi", "I'm not complaining, when is the engineer coming?", "inquiry"),
        ("Hi", "This is not a complaint, just a question about my meter.", "inquiry"),
        ("Hi", "What happens if I cancel before the end of the contract?", "inquiry"),
        ("Hi", "How do I dispute a bill?", "inquiry"),
        ("Thanks", "Thanks, the complaint has been resolved to my satisfaction.", "feedback_given"),
        ("Thanks", "Thank you for the letter. Can I pay quarterly?", "inquiry"),
        # What must still open a case.
        (
            "Cancel",
            "Please cancel my broadband from the end of the month.",
            "cancellation_requested",
        ),
        ("Hi", "i wnat to cancle my acount pls", "cancellation_requested"),
        ("Hi", "Could you please close my account?", "cancellation_requested"),
        ("Bill", "I dispute this bill, the reading is estimated.", "dispute_opened"),
        ("Charge", "I don't recognise this charge of 12.00, please reverse it.", "dispute_opened"),
        ("Complaint", "I want to make a formal complaint about your engineer.", "complaint_filed"),
        ("Outage", "Third outage this week. Completely unacceptable.", "complaint_filed"),
        ("Moved", "We have moved. New address: 1 Elm Street, York", "address_changed"),
        ("Meter", "Gas meter reading today: 04521", "meter_reading_submitted"),
        ("Idea", "It would be nice to get a text before the engineer comes.", "feedback_given"),
    ],
)
def test_what_the_words_say(adapter: EmailAdapter, subject: str, body: str, expected: str) -> None:
    assert adapter.event_type(subject, body) == expected


def test_a_reply_is_about_its_thread_unless_it_clearly_reopens_it(adapter: EmailAdapter) -> None:
    chasing = adapter.classify("Re: [DSP-1] Your dispute", "Any news on my dispute? Still wrong.")
    mentioned = adapter.classify("Hi", "This still looks wrong to me. Any news?", in_thread=True)
    reopened = adapter.classify("Re: [DSP-1]", "I do not accept this. I am disputing it again.")

    assert chasing.type == "inquiry"
    assert mentioned.type == "inquiry" and mentioned.classified_as == "dispute_opened"
    assert 0 < mentioned.confidence < 0.8
    assert reopened.type == "dispute_opened"
    # Standing alone, two signs are enough; in a thread they are not.
    assert adapter.classify("Bill", "The amount is far too high. It is wrong.").type == (
        "dispute_opened"
    )


def test_quoted_messages_and_signatures_are_not_read(adapter: EmailAdapter) -> None:
    body = (
        "Thanks, that answers it.\n\nKind regards\nAnn\n07700 900123\n\n"
        "On Mon, 2 Mar 2026 at 09:00, Care <care@utility.example> wrote:\n"
        "> We have registered your complaint and your request to cancel.\n"
    )
    outlook = "Ok.\n\nFrom: Care <care@utility.example>\nSent: Monday\nPlease cancel my contract"
    forward = "---------- Forwarded message ---------\nI want to cancel my contract now."

    assert own_words(body) == "Thanks, that answers it."
    assert adapter.classify("Re: complaint", body, in_thread=True).type == "inquiry"
    assert adapter.event_type("Hi", outlook) == "inquiry"
    assert adapter.classify("Fwd: old mail", forward).classified_as == "unknown"


def test_other_languages_and_empty_text_are_inquiries_classified_unknown(
    adapter: EmailAdapter,
) -> None:
    for subject, body in [
        ("Kündigung", "Ich möchte meinen Vertrag kündigen. Bitte bestätigen Sie die Kündigung."),
        ("Résiliation", "Bonjour, je souhaite résilier mon contrat. Merci."),
        ("", ""),
    ]:
        intent = adapter.classify(subject, body)
        assert (intent.type, intent.classified_as, intent.confidence) == ("inquiry", "unknown", 0)


def test_an_uncertain_message_carries_what_it_reads_as(adapter: EmailAdapter) -> None:
    message = EmailMessage(
        "m-1@example.com", "ann@example.com", 1_772_438_400_000, "Re: bill", "This looks wrong."
    )

    event = adapter.map_record(message)

    assert event.type == "inquiry"
    assert event.attributes["classified_as"] == "dispute_opened"
    assert 0 < float(event.attributes["confidence"]) < 1
    assert event.attributes["message_id"] == "m-1@example.com"


def test_a_subject_naming_a_case_opened_earlier_in_the_run_is_a_reply() -> None:
    adapter = EmailAdapter(customers={"ann@example.com": "C-1"}, remember_cases=True)

    def mail(number: int, subject: str, body: str) -> str:
        message = EmailMessage(f"m{number}@x", "ann@example.com", number, subject, body)
        return adapter.map_record(message).type

    assert mail(1, "[CMP-9] Engineer", "Nobody came again. Unacceptable.") == "complaint_filed"
    # The same words about the same case, in a new message: about that case, no new one.
    assert mail(2, "[CMP-9] Engineer", "Nobody came again. Unacceptable.") == "inquiry"
    assert mail(3, "[CMP-10] Engineer", "Nobody came again. Unacceptable.") == "complaint_filed"


def test_reply_subject_prefixes() -> None:
    assert reply_subject("RE: AW: Re[2]: bill") == ("bill", True, False)
    assert reply_subject("Fwd: bill") == ("bill", False, True)
    assert reply_subject("Rebate") == ("Rebate", False, False)


def test_the_same_text_always_gets_the_same_answer() -> None:
    fresh = IntentClassifier()
    texts = ["I do not want to cancel", "please cancel my plan", "Overcharged again!!"]

    assert [fresh.classify("", t) for t in texts] == [
        default_classifier().classify("", t) for t in texts
    ]


def test_a_broken_cue_table_is_one_error_naming_it() -> None:
    with pytest.raises(MappingError, match=r"intents table: .*order"):
        IntentClassifier({"types": {"inquiry": {}}, "order": [], "negation": "x"})
    table = {
        "__file__": "mine.yaml",
        "types": {"a": {"strong": ["(unclosed"]}},
        "order": ["a"],
        "negation": "x",
        "hypothetical": "x",
        "question": "x",
        "request": "x",
    }
    with pytest.raises(MappingError, match=r"mine\.yaml: missing \)"):
        IntentClassifier(table)


def test_an_email_mapping_with_the_old_keyword_rules_is_refused(tmp_path: Path) -> None:
    mapping = tmp_path / "email.yaml"
    mapping.write_text("rules:\n  - type: complaint_filed\n    keywords: [bad]\n", "utf-8")

    with pytest.raises(MappingError, match="section 'rules' is no longer read"):
        EmailAdapter(mapping)


# --- calls: the free text of rows without a known disposition --------------------------------


@pytest.mark.parametrize(
    ("disposition", "reason", "notes", "expected", "classified_as"),
    [
        ("CANCEL", None, "customer does not want to cancel", "cancellation_requested", None),
        (None, None, "Customer wants to cancel broadband, moving abroad", "cancellation_requested",
         None),
        ("ROUTER_HELP", None, "Customer does not want to cancel, asked about fees", "inquiry",
         None),
        (None, "Bill looks wrong", "Disputes the estimate", "inquiry", "dispute_opened"),
        (None, None, "Caller complained about the engineer, very upset", "complaint_filed", None),
        (None, None, None, "inquiry", None),
    ],
)  # fmt: skip
def test_call_rows_without_a_known_disposition_are_typed_from_their_text(
    disposition: str | None,
    reason: str | None,
    notes: str | None,
    expected: str,
    classified_as: str | None,
) -> None:
    row = {"call_id": "1", "customer_id": "C-1", "started_at": "2026-03-02T09:00:00Z"}
    for name, value in (("disposition", disposition), ("reason", reason), ("notes", notes)):
        if value is not None:
            row[name] = value

    event = CallAdapter().map_record(row)

    assert event.type == expected
    assert event.attributes.get("classified_as") == classified_as
    if disposition is None and (reason or notes):
        assert event.attributes["classified_from"] == ("reason" if reason else "notes")


def test_call_text_classification_can_be_turned_off(tmp_path: Path) -> None:
    mapping = tmp_path / "calls.yaml"
    mapping.write_text("classify_text: false\n", "utf-8")
    row = {"call_id": "1", "customer_id": "C-1", "started_at": "2026-03-02T09:00:00Z",
           "notes": "Customer wants to cancel"}  # fmt: skip

    assert CallAdapter(mapping).map_record(row).type == "inquiry"
    mapping.write_text("classify_text: sometimes\n", "utf-8")
    with pytest.raises(MappingError, match="classify_text must be true or false"):
        CallAdapter(mapping)
