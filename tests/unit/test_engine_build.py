"""Which engine core runs: the mypyc-compiled one the install built, never a stale one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import processors.engine as engine_package
from processors.engine import core

SOURCE = Path(engine_package.__file__).with_name("core.py")
PROBE = (
    "import processors.engine as e, processors.engine.core as c;"
    "print(e.ENGINE_COMPILED, c.__file__)"
)


def _probe() -> tuple[str, str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    return out[0], out[1]


def test_the_flag_says_which_core_was_imported() -> None:
    imported_compiled = not str(core.__file__).endswith(".py")
    assert imported_compiled is engine_package.ENGINE_COMPILED


def test_an_edited_source_runs_instead_of_the_module_compiled_before_the_edit() -> None:
    compiled = [p for p in SOURCE.parent.glob("core.*") if p.suffix in (".so", ".pyd")]
    if not compiled:
        assert _probe() == ("False", str(SOURCE))  # no compiled module: the source runs
        return
    before = SOURCE.stat()
    newest = max(p.stat().st_mtime for p in compiled)
    try:
        os.utime(SOURCE, (before.st_atime, newest + 10))  # "edited" after the build
        assert _probe() == ("False", str(SOURCE))
    finally:
        os.utime(SOURCE, (before.st_atime, before.st_mtime))
    assert _probe()[0] == "True"
