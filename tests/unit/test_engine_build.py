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


@pytest.mark.parametrize(
    ("package_name", "module", "flag"),
    [
        ("schemas", "json_form", "JSON_FORM_COMPILED"),
        ("processors", "replay_shards", "REPLAY_SHARDS_COMPILED"),
    ],
)
def test_the_other_compiled_modules_run_compiled_unless_their_source_is_newer(
    package_name: str, module: str, flag: str
) -> None:
    """The JSON form (`schemas.COMPILED_MODULES`) and the sharded replay
    (`processors.COMPILED_MODULES`) have the same guard as the engine."""
    package = importlib.import_module(package_name)
    probe = (
        f"import {package_name}, {package_name}.{module} as m;"
        f"print({package_name}.{flag}, m.__file__.endswith('.py'))"
    )

    def run() -> str:
        return subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
        ).stdout.strip()

    here = Path(str(package.__file__)).parent
    built = [p for p in here.glob(f"{module}.*") if p.suffix in (".so", ".pyd")]
    if not built:
        assert run() == "False True"
        return
    assert run() == "True False"
    with _edited_after_build(here / f"{module}.py", built):
        assert run() == "False True"
