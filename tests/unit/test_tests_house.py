"""The test suite's own layout: what more than one test module uses lives in tests/support.

A test module never imports from another test module (what it would import belongs in
tests/support), a helper module of a tier (tests/integration/read_back.py, ...) is used
only within its tier, and tests/support depends on no tier.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
TIERS = ("unit", "integration", "reliability", "bench")


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted module) of every import in the file, at any depth, under `tests.`."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from tests.unit import test_x` imports the module test_x
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "tests" or name.startswith("tests."):
                yield node.lineno, name


def is_test_module(dotted: str) -> bool:
    return dotted.rsplit(".", 1)[-1].startswith("test_")


def tier_of(parts: tuple[str, ...]) -> str | None:
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


def problems() -> list[str]:
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        relative = path.relative_to(TESTS)
        where = f"tests/{relative.as_posix()}"
        own_tier = tier_of(relative.parts)
        for line, module in imported_modules(path):
            parts = tuple(module.split(".")[1:])
            if is_test_module(module):
                found.append(f"{where}:{line} imports the test module {module}")
            elif relative.parts[0] == "support" and tier_of(parts):
                found.append(f"{where}:{line}: tests/support imports the tier module {module}")
            elif tier_of(parts) and tier_of(parts) != own_tier:
                found.append(f"{where}:{line} imports {module} of another tier")
    return found


def test_no_test_module_imports_another_and_helpers_stay_in_their_tier() -> None:
    assert problems() == []


def test_the_check_sees_a_test_module_imported(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "from tests.unit.test_engine import ev\n"
        "def f():\n"
        "    from tests.unit import test_replay\n"
        "    import tests.support.engine\n",
        encoding="utf-8",
    )
    modules = [module for _, module in imported_modules(sample)]
    assert [m for m in modules if is_test_module(m)] == [
        "tests.unit.test_engine",
        "tests.unit.test_replay",
    ]
