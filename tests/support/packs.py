"""The default rule pack as text and as a document, and variants of it: edited or random."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from processors.engine import DEFAULT_PACK_PATH

DEFAULT_TEXT = DEFAULT_PACK_PATH.read_text(encoding="utf-8")
DEFAULT_DOC: dict[str, Any] = yaml.safe_load(DEFAULT_TEXT)

#: A pack of two rules with a problem each: two error lines, each longer than 80 columns.
BAD_PACK = """\
rules:
  - id: a_rule_whose_name_is_long_enough_to_pass_eighty_columns_with_its_problem
    version: 1
    when: {kind: match, type: [inquiry]}
    action: x
    destination: nowhere
    priority: 5
    class: service
    reason: r
  - id: another_rule_whose_name_is_long_enough_to_pass_eighty_columns_too
    version: 1
    when: {kind: match, type: [inquiry]}
    action: y
    destination: care
    priority: 5
    class: nonsense
    reason: r
"""

#: An edit that makes recognize_tenure ask for ten years instead of five.
TENURE_10 = ("min_tenure_years: 5", "min_tenure_years: 10")


def variant(tmp_path: Path, name: str, *edits: tuple[str, str]) -> Path:
    """The default pack with textual edits, written to tmp_path/name."""
    text = DEFAULT_TEXT
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def tenure_version(version: int) -> tuple[str, str]:
    """An edit that gives recognize_tenure `version`."""
    marker = "  - id: recognize_tenure\n    version: 1"
    return marker, marker.replace("version: 1", f"version: {version}")


@st.composite
def new_pack_docs(draw: st.DrawFn) -> dict[str, Any]:
    """The default pack's document with rules removed, re-prioritised, re-timed or cancelling."""
    doc = copy.deepcopy(DEFAULT_DOC)
    kept = []
    for raw in doc["rules"]:
        change = draw(st.sampled_from(["same", "same", "remove", "priority", "timing"]))
        if change == "remove":
            continue
        if change == "priority":
            raw["priority"] = (raw["priority"] + 7) % 100
            raw["version"] = raw.get("version", 1) + 1
        if change == "timing" and raw["when"]["kind"] == "absence":
            raw["when"]["within"] = draw(st.sampled_from(["1h", "24h", "96h"]))
            raw["version"] = raw.get("version", 1) + 1
            raw["pending"] = draw(st.sampled_from(["keep", "cancel"]))
        kept.append(raw)
    doc["rules"] = kept
    return doc


def case_pack(within: str, version: int, pending: str | None = None) -> str:
    """The default pack as YAML, case_unresolved given `within`, `version` (and `pending`)."""
    doc = copy.deepcopy(DEFAULT_DOC)
    for raw in doc["rules"]:
        if raw["id"] == "case_unresolved":
            raw["when"]["within"], raw["version"] = within, version
            if pending is not None:
                raw["pending"] = pending
    return yaml.safe_dump(doc, sort_keys=False)
