"""The trigger engine: pure Python, no Kafka, no Faust.

Public surface: `Engine`, `load_rule_pack`, `check_rule_pack`, `RulePack`,
`RulePackError`, and the interfaces (`StateStore`, `DictStore`,
`EngineConfig`, `EngineOutput`). Semantics live in `core.py`, the rule
language in `rules.py`.
"""

from processors.engine.core import Engine
from processors.engine.interfaces import (
    CLOCK_KEY,
    CUSTOMER_PREFIX,
    DictStore,
    EngineConfig,
    EngineOutput,
    StateStore,
    customer_key,
)
from processors.engine.rules import (
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
    "load_rule_pack",
    "parse_rule_pack",
]
