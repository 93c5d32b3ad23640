"""The labelled e-mail corpus (tests/data/email_corpus): its YAML source written as mboxes.

`heldout.yaml` and `tuning.yaml` hold the messages as a person wrote them (subject, body,
whether it is a reply, HTML-only, a lying charset, a forward below it, an auto-reply);
`build()` renders each part as an mbox of real RFC 5322 messages plus `labels.csv`
(`message_id,type,part`), which `moments ingest email PATH --evaluate LABELS` reads.
Run `python -m tests.support.email_corpus` after editing a YAML file; a test checks the
rendered files are up to date.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import yaml

CORPUS = Path(__file__).resolve().parents[1] / "data" / "email_corpus"
PARTS = ("tuning", "heldout")
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def messages(part: str) -> list[dict[str, Any]]:
    """The messages of one part, as written in its YAML file."""
    loaded = yaml.safe_load((CORPUS / f"{part}.yaml").read_text(encoding="utf-8"))
    return list(loaded["messages"])


def message_id(item: dict[str, Any]) -> str:
    return f"{item['id']}@corpus.example"


def render(item: dict[str, Any], number: int) -> bytes:
    """One corpus message as RFC 5322 bytes (CRLF-free: an mbox holds LF lines)."""
    ident = str(item["id"])
    sent = START + timedelta(minutes=37 * number)
    subject = str(item.get("subject") or "")
    headers = [
        f"From: Customer {ident} <{ident}@customers.example>",
        "To: care@utility.example",
        f"Subject: {Header(subject, 'utf-8').encode() if not subject.isascii() else subject}",
        f"Date: {format_datetime(sent)}",
        f"Message-ID: <{message_id(item)}>",
        f"X-Customer-ID: CORP-{ident}",
    ]
    if item.get("reply"):
        headers.append(f"In-Reply-To: <thread-{ident}@utility.example>")
        headers.append(f"References: <thread-{ident}@utility.example>")
    if item.get("auto"):
        headers.append("Auto-Submitted: auto-replied")
    body = str(item.get("body") or "")
    if item.get("forwarded"):
        body = f"{body}\n{item['forwarded']}"
    charset = str(item.get("charset") or "utf-8")
    declared = str(item.get("declared") or charset)
    subtype = "html" if item.get("html") else "plain"
    headers += [
        "MIME-Version: 1.0",
        f'Content-Type: text/{subtype}; charset="{declared}"',
        "Content-Transfer-Encoding: 8bit",
    ]
    encoded = body.encode(charset, errors="replace")
    return ("\n".join(headers) + "\n\n").encode("ascii") + encoded


def mbox(part: str) -> bytes:
    """Every message of a part as one mbox (lines starting "From " in a body are quoted)."""
    out = io.BytesIO()
    for number, item in enumerate(messages(part)):
        raw = render(item, number)
        lines = [b">" + line if line.startswith(b"From ") else line for line in raw.split(b"\n")]
        out.write(b"From corpus@customers.example Mon Mar  2 08:00:00 2026\n")
        out.write(b"\n".join(lines).rstrip(b"\n") + b"\n\n")
    return out.getvalue()


def labels() -> str:
    """`labels.csv`: message_id,type,part for both parts."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["message_id", "type", "part"])
    for part in PARTS:
        for item in messages(part):
            writer.writerow([message_id(item), item["label"], part])
    return out.getvalue()


def build() -> dict[Path, bytes]:
    """The rendered files and their content."""
    files = {CORPUS / f"{part}.mbox": mbox(part) for part in PARTS}
    files[CORPUS / "labels.csv"] = labels().encode("utf-8")
    return files


if __name__ == "__main__":
    for path, content in build().items():
        path.write_bytes(content)
        print(f"wrote {path}")
