"""The trigger engine: pure Python (compiled with mypyc where the install could), no Kafka,
no Faust.

Public surface: `Engine`, `load_rule_pack`, `check_rule_pack`, `RulePack`,
`RulePackError`, `forget_customer` (erasure, `erasure.py`), and the interfaces
(`StateStore`, `DictStore`, `EngineConfig`, `EngineOutput`). Semantics live in
`core.py` (its docstring is the reading order and names the module of each part), the
rule language in `rules.py`, the rule kinds (one class each, the registry `KINDS`) in
`kinds.py`, the state layout and its version in `state.py`.
"""

from pathlib import Path

from schemas.compiled import load_fresh

#: The modules every event runs through, which the install compiles with mypyc (setup.py
#: reads this list), in dependency order: each imports of these only the ones before it.
COMPILED_MODULES = (
    "times",
    "ids",
    "candidates",
    "customer",
    "actions",
    "cases",
    "rendering",
    "kinds",
    "runtime",
    "arbitration",
    "timers",
    "core",
)

#: Whether the compiled engine runs (same semantics, more events per CPU-second).
ENGINE_COMPILED = load_fresh(__name__, COMPILED_MODULES, Path(__file__).parent)

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
from processors.engine.times import future_cap  # noqa: E402

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
