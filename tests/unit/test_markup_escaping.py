"""Customer text is printed as text: rich markup in it neither crashes a command nor styles it."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from moments.cli import app
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
