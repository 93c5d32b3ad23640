"""Build hook: the hot paths compiled with mypyc, when a C compiler is at hand.

Compiled: the modules of the trigger engine that every event runs through
(`processors.engine.COMPILED_MODULES`: the Engine, arbitration, the rule kinds, rendering,
candidates, the per-rule runtime, the customer state helpers, times and ids), the JSON form
that file replay reads and writes every line with (`schemas.COMPILED_MODULES`), the sharded
file replay's loop (`processors.COMPILED_MODULES`) and the generated Avro decoders
(`schemas/_native/`).
All are optional: without a compiler, with MOMENTS_PURE_PYTHON=1, or when mypyc
refuses a module, the install goes on in pure Python (same code, same results).
`processors.engine.ENGINE_COMPILED`, `schemas.JSON_FORM_COMPILED` and
`processors.REPLAY_SHARDS_COMPILED` say which run (an
edited source runs until the next install, see `schemas.compiled`); the codec uses a
compiled decoder only when it was generated from the source it would run itself.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup


def listed_modules(package_dir: str) -> list[str]:
    """The `COMPILED_MODULES` a package's __init__.py lists, as source files, read from the
    source: the package cannot be imported before it is installed."""
    init = Path(package_dir) / "__init__.py"
    tree = ast.parse(init.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "COMPILED_MODULES"
            for target in node.targets
        ):
            return [f"{package_dir}/{name}.py" for name in ast.literal_eval(node.value)]
    raise SystemExit(f"setup.py: {init} names no COMPILED_MODULES")


COMPILED = [
    *listed_modules("processors/engine"),
    *listed_modules("schemas"),
    *listed_modules("processors"),
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
