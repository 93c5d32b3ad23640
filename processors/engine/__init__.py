"""The trigger engine: pure Python (compiled with mypyc where the install could), no Kafka,
no Faust.

Public surface: `Engine`, `load_rule_pack`, `check_rule_pack`, `RulePack`,
`RulePackError`, `forget_customer` (erasure, `erasure.py`), and the interfaces
(`StateStore`, `DictStore`, `EngineConfig`, `EngineOutput`). Semantics live in
`core.py` (its docstring is the reading order and names the module of each part), the
rule language in `rules.py`, the state layout and its version in `state.py`.
"""

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

#: The modules every event runs through, which the install compiles with mypyc (setup.py
#: reads this list), in dependency order: each imports of these only the ones before it.
COMPILED_MODULES = (
    "times",
    "ids",
    "candidates",
    "customer",
    "rendering",
    "kinds",
    "runtime",
    "arbitration",
    "core",
)


def _load_compiled() -> bool:
    """Import the hot modules: the mypyc-compiled ones the install built, unless one of them
    is missing or its source was edited after it was built: then every one of them from its
    source, so an edit always runs (compiled modules call each other natively: all of them
    compiled or none). True when the compiled modules run."""
    here = Path(__file__).parent
    compiled = stale = False
    for short in COMPILED_MODULES:
        found = importlib.util.find_spec(f"{__name__}.{short}")
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
    for short in COMPILED_MODULES:
        name = f"{__name__}.{short}"
        loader = importlib.machinery.SourceFileLoader(name, str(here / f"{short}.py"))
        spec = importlib.util.spec_from_loader(name, loader)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loader.exec_module(module)
    return False


#: Whether the compiled engine runs (same semantics, more events per CPU-second).
ENGINE_COMPILED = _load_compiled()

from processors.engine.core import Engine, future_cap  # noqa: E402
from processors.engine.erasure import forget_customer  # noqa: E402
from processors.engine.interfaces import (  # noqa: E402
    CLOCK_KEY,
    CUSTOMER_PREFIX,
    DictStore,
    EngineConfig,
    EngineOutput,
    StateStore,
    customer_key,
)
from processors.engine.rules import (  # noqa: E402
    DEFAULT_PACK_PATH,
    CustomerProfile,
    Rule,
    RulePack,
    RulePackError,
    check_rule_pack,
    load_rule_pack,
    parse_rule_pack,
)

__all__ = [
    "CLOCK_KEY",
    "COMPILED_MODULES",
    "CUSTOMER_PREFIX",
    "DEFAULT_PACK_PATH",
    "ENGINE_COMPILED",
    "CustomerProfile",
    "DictStore",
    "Engine",
    "EngineConfig",
    "EngineOutput",
    "Rule",
    "RulePack",
    "RulePackError",
    "StateStore",
    "check_rule_pack",
    "customer_key",
    "forget_customer",
    "future_cap",
    "load_rule_pack",
    "parse_rule_pack",
]
