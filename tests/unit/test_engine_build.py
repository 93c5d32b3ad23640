"""Which engine modules run: the mypyc-compiled ones the install built, never a stale one."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import processors.engine as engine_package

HERE = Path(engine_package.__file__).parent
PROBE = (
    "import processors.engine as e, importlib;"
    "print(e.ENGINE_COMPILED, *(importlib.import_module('processors.engine.' + m).__file__"
    " for m in e.COMPILED_MODULES))"
)


def _probe() -> tuple[str, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    return out[0], out[1:]


def _sources() -> list[str]:
    return [str(HERE / f"{name}.py") for name in engine_package.COMPILED_MODULES]


def _built(name: str) -> list[Path]:
    return [p for p in HERE.glob(f"{name}.*") if p.suffix in (".so", ".pyd")]


@contextmanager
def _edited_after_build(source: Path, built: list[Path]) -> Iterator[None]:
    """`source` looks edited after its build (its mtime past the newest built file), then
    its own mtime again."""
    before = source.stat()
    try:
        os.utime(source, (before.st_atime, max(p.stat().st_mtime for p in built) + 10))
        yield
    finally:
        os.utime(source, (before.st_atime, before.st_mtime))


def test_the_flag_says_which_modules_were_imported() -> None:
    for name in engine_package.COMPILED_MODULES:
        module = importlib.import_module(f"processors.engine.{name}")
        imported_compiled = not str(module.__file__).endswith(".py")
        assert imported_compiled is engine_package.ENGINE_COMPILED, name


@pytest.mark.parametrize("edited", ["core", "kinds"])
def test_an_edited_source_runs_instead_of_the_modules_compiled_before_the_edit(
    edited: str,
) -> None:
    source = HERE / f"{edited}.py"
    compiled = _built(edited)
    if not compiled:
        assert _probe() == ("False", _sources())  # no compiled module: the sources run
        return
    with _edited_after_build(source, compiled):
        assert _probe() == ("False", _sources())  # every hot module from source, not a mix
    assert _probe()[0] == "True"


def test_the_json_form_runs_compiled_unless_its_source_is_newer() -> None:
    """The JSON form (`schemas.COMPILED_MODULES`) has the same guard as the engine."""
    import schemas

    probe = (
        "import schemas, schemas.json_form as j;"
        "print(schemas.JSON_FORM_COMPILED, j.__file__.endswith('.py'))"
    )

    def run() -> str:
        return subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
        ).stdout.strip()

    here = Path(schemas.__file__).parent
    built = [p for p in here.glob("json_form.*") if p.suffix in (".so", ".pyd")]
    if not built:
        assert run() == "False True"
        return
    assert run() == "True False"
    with _edited_after_build(here / "json_form.py", built):
        assert run() == "False True"
