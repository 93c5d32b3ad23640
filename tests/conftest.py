"""The tiers of the suite: every test is marked by the directory it lives in.

`tests/unit` → `unit` (no broker, no database), `tests/integration` →
`integration` (the embedded Tansu broker and PostgreSQL), `tests/reliability`
→ `reliability` and `integration` (fault injection on the same stack),
`tests/bench` → `bench`. So `-m unit` and `-m "not integration"` run without
starting a broker, and `-m integration` runs everything that needs one.
A `pytestmark` in a conftest marks nothing, hence this hook.

`soak` and `bench` tests are long: they run only when the `-m` expression names
them (`make soak`, `-m bench`), whatever else it selects.

A tier's directory that the `-m` expression cannot select from is not even collected
(`-m unit` imports no integration module: seconds per xdist worker).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression

# CLI output in tests is that of a pipe (moments.cli.common.make_console), whoever runs
# them: pytest-xdist workers are given COLUMNS=80, and the CLI's console reads it once, at
# import, so a table would fold there and not in one process.
os.environ.pop("COLUMNS", None)

_HERE = Path(__file__).parent
#: Directory under tests/ → the markers of its tier.
TIERS: dict[str, tuple[pytest.MarkDecorator, ...]] = {
    "unit": (pytest.mark.unit,),
    "integration": (pytest.mark.integration,),
    "reliability": (pytest.mark.reliability, pytest.mark.integration),
    "bench": (pytest.mark.bench,),
}
#: Tiers left out unless the `-m` expression names them.
ON_REQUEST = ("soak", "bench")


class _NotATier(Exception):
    """The `-m` expression asked about a marker that is not a tier's."""


def _tier_cannot_match(tier: str, markexpr: str) -> bool:
    """Whether no test of the tier directory `tier` can match `markexpr`, whatever other
    markers its tests carry: the expression is false from the tier's markers alone (a
    marker not a tier's, such as `soak`, leaves the question open: False)."""
    names = {mark.name for mark in TIERS[tier]}
    tier_names = {mark.name for marks in TIERS.values() for mark in marks}

    def matches(name: str, /, **kwargs: object) -> bool:
        if name not in tier_names or kwargs:
            raise _NotATier(name)
        return name in names

    try:
        return not Expression.compile(markexpr).evaluate(matches)
    except (_NotATier, SyntaxError):  # pytest reports a malformed expression itself
        return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    markexpr = config.getoption("markexpr") or ""
    if markexpr and collection_path.parent == _HERE and collection_path.name in TIERS:
        return _tier_cannot_match(collection_path.name, markexpr) or None
    return None


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection sees the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path))
        if _HERE in path.parents:
            for marker in TIERS.get(path.relative_to(_HERE).parts[0], ()):
                item.add_marker(marker)
    asked = config.getoption("markexpr") or ""
    left_out = [name for name in ON_REQUEST if name not in asked]
    keep = [item for item in items if not any(item.get_closest_marker(n) for n in left_out)]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep
