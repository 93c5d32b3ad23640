"""Fixtures of the fault-injection tests: the integration stack, a database per test, figures.

The broker, PostgreSQL, per-test `settings` and `database` are the integration fixtures
(imported from `tests.support.stack`). Every test here is marked
`reliability` (by tests/conftest.py); the long versions are also marked `soak` and run only with
`make soak`. After every test the logs of the processes it started are
searched for the customer ids, texts and addresses it published
(`no_customer_data_in_logs`). Each test records its figures (events, kills, lost, duplicates,
...) with the `figures` fixture; the table of all of them is printed at the end
of the session and written to `.moments/reliability-figures.md`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import (
    CUSTOMER_DATA,
    FIGURES,
    LOG_DIRS,
    Figures,
    figures_markdown,
    figures_table,
)
from tests.reliability.security import customer_data_leaks
from tests.support.stack import broker, database, postgres, settings

__all__ = ["broker", "database", "postgres", "settings"]


@pytest.fixture(autouse=True)
def no_customer_data_in_logs() -> Iterator[None]:
    """Fails a fault test whose children logged a customer id, text or address it published."""
    CUSTOMER_DATA.clear()
    LOG_DIRS.clear()
    yield
    leaks = customer_data_leaks(LOG_DIRS, CUSTOMER_DATA)
    CUSTOMER_DATA.clear()
    LOG_DIRS.clear()
    assert not leaks, f"customer data in the logs: {leaks}"


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """The figures row of this test (printed in the session's table)."""
    row = Figures(test=request.node.name)
    FIGURES.append(row)
    return row


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = [row for row in FIGURES if row.values]
    if not rows:
        return
    terminalreporter.write_line("")
    terminalreporter.write(figures_table(rows))
    out = Path(".moments") / "reliability-figures.md"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(figures_markdown(rows), encoding="utf-8")
        terminalreporter.write_line(f"figures written to {out}")
    except OSError as exc:
        terminalreporter.write_line(f"could not write {out}: {exc}")
