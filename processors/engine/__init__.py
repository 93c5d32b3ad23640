"""The trigger engine: pure Python, no Kafka, no Faust.

Public surface: `Engine`, `load_rule_pack`, `RulePack`, `RulePackError`,
and the interfaces (`StateStore`, `DictStore`, `EngineConfig`, `EngineOutput`).
"""

from processors.engine.interfaces import DictStore, EngineConfig, EngineOutput, StateStore

__all__ = ["DictStore", "EngineConfig", "EngineOutput", "StateStore"]
