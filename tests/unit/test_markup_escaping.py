"""Customer text is printed as text: rich markup in it neither crashes a command nor styles it."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from common.privacy import printable
from moments.cli import app
from moments.cli.common import printable_rows
from moments.cli.stacks import actions_table
from sinks.timeline import TIMELINE_COLUMNS, timeline_table

HOSTILE = "closing [/b] tag and [link=https://evil.example]click[/link] [bold red]x"


def test_timeline_and_actions_tables_show_markup_as_text() -> None:
    row = dict.fromkeys(TIMELINE_COLUMNS)
    row.update(customer_id=f"c-[/b]{HOSTILE}", kind="event", at="2026-01-02T03:04:05")
    row.update(summary=HOSTILE, channel="[/i]web")
    action = {"priority": 80, "rule": "r", "destination": "care"}
    action.update(customer_id=HOSTILE, reason=HOSTILE)
    console = Console(record=True, width=400)
    console.print(timeline_table([row]))
    console.print(actions_table([action], title="actions"))
    text = console.export_text()
    html = console.export_html()
    assert text.count(HOSTILE) == 4  # title, summary, customer, reason: verbatim
    assert "[/i]web" in text
    assert 'evil.example"' not in html and "<a href" not in html  # no hyperlink made


def test_ingest_prints_rejections_with_markup_as_text(tmp_path: Path) -> None:
    message = tmp_path / "hostile.eml"
    message.write_bytes(
        b"From: someone@example.com\r\nDate: " + HOSTILE.encode() + b"\r\n"
        b"Subject: hi\r\nMessage-ID: <m1@example.com>\r\n\r\nbody\r\n"
    )
    result = CliRunner().invoke(app, ["ingest", "email", str(message), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "0 valid, 1 rejected" in result.output
    assert HOSTILE in result.output.replace("\n", "")


#: Terminal escape sequences a channel's text may carry: set the window title, clear the
#: screen, move the cursor up and overwrite, ring the bell, a hyperlink (OSC 8), a bidi override.
ESCAPES = (
    "\x1b]0;pwned\x07",
    "\x1b[2J",
    "\x1b[1A\rok",
    "\x07",
    "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\",
    "\u202e",
    "\x9b31m",
)
TEXT_WITH_ESCAPES = "Hello" + "".join(ESCAPES) + " world"


def test_timeline_prints_no_control_character_of_customer_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sinks.relationship
    import sinks.timeline

    row = dict.fromkeys(TIMELINE_COLUMNS)
    row.update(customer_id="c-\x1b[31m1", kind="event", at="2026-01-02T03:04:05")
    row.update(summary=TEXT_WITH_ESCAPES, channel="web\x1b[8m")
    monkeypatch.setattr(sinks.timeline, "customer_timeline", lambda *a, **k: [row])
    monkeypatch.setattr(sinks.relationship, "customer_relationship", lambda *a, **k: None)
    monkeypatch.setenv("MOMENTS_DATABASE_URL", "postgresql://127.0.0.1:9/x")
    result = CliRunner().invoke(app, ["timeline", "c-1"])
    assert result.exit_code == 0, result.output
    assert not any(ch in result.output for ch in "\x1b\x07\x9b\u202e\r")
    assert "Hello" in result.output and "c-[31m1" in result.output  # the text itself is kept


def test_printable_removes_controls_and_keeps_text() -> None:
    assert printable(TEXT_WITH_ESCAPES) == (
        "Hello]0;pwned[2J[1Aok]8;;https://evil.example\\click]8;;\\31m world"
    )
    assert printable("a\tb\nc") == "a b c" and printable("a\nb", newlines=True) == "a\nb"
    assert printable("Grüße, 東京 ✓") == "Grüße, 東京 ✓"
    assert printable_rows([{"x": ["\x1b[2J"], "n": 1}]) == [{"x": ["[2J"], "n": 1}]


def test_demo_actions_table_prints_no_control_character() -> None:
    action = {"priority": 80, "rule": "r", "destination": "care"}
    action.update(customer_id="c\x1b]0;t\x07", reason=TEXT_WITH_ESCAPES)
    console = Console(record=True, width=400)
    console.print(actions_table([action], title="actions"))
    text = console.export_text()
    assert "Hello" in text and not any(ch in text for ch in "\x1b\x07\x9b\u202e")
