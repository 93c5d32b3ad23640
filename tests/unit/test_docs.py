"""The project's own design document is the one cited: every citation of docs/design.md
names a section it has, and nothing cites a design file outside the repository or an
issue number."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs" / "design.md"

#: Folders that are not the project's own text (tools' caches, builds, the environment).
SKIPPED_DIRS = frozenset(
    {".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__", "build"}
)
#: An applied migration is never edited (sinks/migrate.py compares its checksum), so its
#: comments stay as they were written.
FROZEN = frozenset({"sinks/migrations/005_relationship.sql"})

# Built from pieces so that this file does not match its own patterns.
OUTSIDE_DESIGN = re.compile(r"\b" + "DESIGN" + r"(?:\.md|\s+§?[0-9])")
ISSUE_NUMBER = re.compile(r"\b" + "issues?" + r" #?[0-9]+", re.IGNORECASE)
CITATION = re.compile(
    r"docs/design\.md,?\s+(?:sections?\s+|§\s*)?"
    r"(?P<first>[0-9]+(?:\.[0-9]+)?)(?:\s*(?:-|to|and)\s*(?P<last>[0-9]+(?:\.[0-9]+)?))?"
)
HEADING = re.compile(r"^#{2,3} (?P<number>[0-9]+(?:\.[0-9]+)?)\.? ", re.MULTILINE)


def _project_files() -> list[Path]:
    """Every file of the working tree that git would track (new ones too), else a walk."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        found: list[Path] = []
        for folder, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
            found.extend(Path(folder, name) for name in files)
        return found
    return [ROOT / name for name in listed.decode().split("\0") if name]


def _texts() -> list[tuple[str, str]]:
    """(path relative to the root, text) of every readable text file of the project."""
    texts = []
    for path in _project_files():
        relative = path.relative_to(ROOT).as_posix()
        if relative in FROZEN or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary
        texts.append((relative, data.decode("utf-8", errors="replace")))
    return texts


@pytest.fixture(scope="module")
def texts() -> list[tuple[str, str]]:
    return _texts()


def _lines_matching(texts: list[tuple[str, str]], pattern: re.Pattern[str]) -> list[str]:
    return [
        f"{name}:{number}: {line.strip()}"
        for name, text in texts
        for number, line in enumerate(text.splitlines(), 1)
        if pattern.search(line)
    ]


def test_no_design_file_outside_the_repository_is_cited(texts: list[tuple[str, str]]) -> None:
    assert _lines_matching(texts, OUTSIDE_DESIGN) == []


def test_no_issue_number_is_cited(texts: list[tuple[str, str]]) -> None:
    assert _lines_matching(texts, ISSUE_NUMBER) == []


def _sections() -> set[str]:
    return {m["number"] for m in HEADING.finditer(DESIGN.read_text(encoding="utf-8"))}


def test_the_design_document_keeps_its_numbered_sections() -> None:
    sections = _sections()
    assert {str(n) for n in range(1, 14)} <= sections


def test_every_citation_names_a_section_that_exists(texts: list[tuple[str, str]]) -> None:
    sections = _sections()
    missing = []
    cited = 0
    for name, text in texts:
        # A citation may wrap onto the next line of a comment or docstring.
        flat = re.sub(r"\s*\n\s*(?:#:?|--|//)?\s*", " ", text)
        for match in CITATION.finditer(flat):
            cited += 1
            for number in filter(None, (match["first"], match["last"])):
                if number not in sections:
                    missing.append(f"{name}: {match[0]!r}")
    assert missing == []
    assert cited > 0


def test_the_readme_points_at_the_design_document() -> None:
    assert "docs/design.md" in (ROOT / "README.md").read_text(encoding="utf-8")
