"""Which hot modules run compiled: the mypyc-built ones the install made, never a stale one.

setup.py compiles the modules each package lists in its `COMPILED_MODULES`
(`processors.engine`, `schemas`) when a C compiler is at hand. A package calls
`load_fresh` before anything imports those modules: if one of them is missing its
build or its source was edited after the build, every one of them is imported from
its source (compiled modules call each other natively: all of them compiled or none),
so an edit always runs. Imports nothing of ours.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path


def load_fresh(package: str, modules: Sequence[str], here: Path) -> bool:
    """Import `package`'s `modules` (in `here`, in dependency order) compiled if all their
    builds are fresh, else all from source. True when the compiled modules run."""
    compiled = stale = False
    for short in modules:
        found = importlib.util.find_spec(f"{package}.{short}")
        origin = found.origin if found is not None else None
        if origin is None or origin.endswith(".py"):
            stale = True
            continue
        compiled = True
        source = here / f"{short}.py"
        if source.exists() and source.stat().st_mtime > Path(origin).stat().st_mtime:
            stale = True
    if not compiled:
        return False
    if not stale:
        return True
    for short in modules:
        name = f"{package}.{short}"
        loader = importlib.machinery.SourceFileLoader(name, str(here / f"{short}.py"))
        spec = importlib.util.spec_from_loader(name, loader)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loader.exec_module(module)
    return False
