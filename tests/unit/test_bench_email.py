"""The bench's e-mail section: parsing and classifying the labelled corpus, per message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from moments.bench import offline
from moments.bench.report import TARGETS


class _Figures:
    """What a bench section fills (the part of `Bench` the e-mail section uses)."""

    def __init__(self) -> None:
        self.details: dict[str, Any] = {}
        self.figures: dict[str, Any] = {}
        self.unmeasured: dict[str, str] = {}


def test_every_corpus_message_is_parsed_and_classified() -> None:
    bench = _Figures()
    offline.email(bench, passes=1)  # type: ignore[arg-type]  # one pass reads every message
    measured = bench.details["email"]
    assert measured["messages"] >= 300  # the whole corpus, both parts
    assert measured["parse_ms_per_message"] > 0 and measured["classify_ms_per_message"] > 0
    assert bench.figures["email_classify_ms"] == measured["classify_ms_per_message"]
    assert any(key == "email_classify_ms" for key, *_ in TARGETS)


def test_without_the_corpus_the_figure_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offline, "EMAIL_CORPUS", tmp_path)
    bench = _Figures()
    offline.email(bench)  # type: ignore[arg-type]
    assert "email_classify_ms" not in bench.figures
    assert "no labelled corpus" in bench.unmeasured["email_classify_ms"]
