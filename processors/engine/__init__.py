"""The trigger engine: pure Python (compiled with mypyc where the install could), no Kafka,
no Faust.

Public surface: `Engine`, `load_rule_pack`, `check_rule_pack`, `RulePack`,
`RulePackError`, `forget_customer` (erasure, `erasure.py`), and the interfaces
(`StateStore`, `DictStore`, `EngineConfig`, `EngineOutput`). Semantics live in
`core.py`, the rule language in `rules.py`.
"""

import importlib.machinery
import importlib.util
import sys
from pathlib import Path


def _load_core() -> bool:
    """Import `core`: the mypyc-compiled module the install built (see setup.py), unless
    `core.py` was edited after it was built: then the source, so an edit always runs.
    True when the compiled module runs."""
    name = f"{__name__}.core"
    found = importlib.util.find_spec(name)
    origin = found.origin if found is not None else None
    if origin is None or origin.endswith(".py"):
        return False
    source = Path(__file__).with_name("core.py")
    if not source.exists() or source.stat().st_mtime <= Path(origin).stat().st_mtime:
        return True
    loader = importlib.machinery.SourceFileLoader(name, str(source))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return False


#: Whether the compiled engine core runs (same semantics; ~1.3x events per CPU-second).
ENGINE_COMPILED = _load_core()

from processors.engine.core import Engine  # noqa: E402
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
    "load_rule_pack",
    "parse_rule_pack",
]
