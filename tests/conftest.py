"""The tiers of the suite: every test is marked by the directory it lives in.

`tests/unit` → `unit` (no broker, no database), `tests/integration` →
`integration` (the embedded Tansu broker and PostgreSQL), `tests/reliability`
→ `reliability` (fault injection on the same stack), `tests/bench` → `bench`.
So `-m unit` runs without starting a broker, and `-m "not integration"`
selects what it says. A `pytestmark` in a conftest marks nothing, hence this
hook.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent
#: Directory under tests/ → the marker of its tier.
TIERS = {
    "unit": pytest.mark.unit,
    "integration": pytest.mark.integration,
    "reliability": pytest.mark.reliability,
    "bench": pytest.mark.bench,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path))
        if _HERE not in path.parents:
            continue
        tier = TIERS.get(path.relative_to(_HERE).parts[0])
        if tier is not None:
            item.add_marker(tier)
