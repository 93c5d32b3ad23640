"""Build hook: the hot paths compiled with mypyc, when a C compiler is at hand.

Compiled: the trigger engine's core (`processors/engine/core.py`, ~1.3x the
events per CPU-second) and the generated Avro decoders (`schemas/_native/`, ~3x).
Both are optional: without a compiler, with MOMENTS_PURE_PYTHON=1, or when mypyc
refuses a module, the install goes on in pure Python (same code, same results).
`processors.engine.ENGINE_COMPILED` says which engine runs; the codec uses a
compiled decoder only when it was generated from the source it would run itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup

COMPILED = [
    "processors/engine/core.py",
    *sorted(str(p) for p in Path("schemas/_native").glob("*.py") if p.name != "__init__.py"),
]


def compiled_extensions() -> list[Any]:
    if os.environ.get("MOMENTS_PURE_PYTHON") == "1":
        return []
    try:
        from mypyc.build import mypycify

        extensions = mypycify(COMPILED, opt_level="3", separate=True)  # a library per module
    except (SystemExit, Exception) as exc:  # mypyc absent or refusing: pure Python
        print(f"moments: nothing compiled ({exc!r}); pure Python runs", file=sys.stderr)
        return []
    for extension in extensions:
        extension.optional = True  # no compiler: a warning, and pure Python
    return extensions


setup(ext_modules=compiled_extensions())
