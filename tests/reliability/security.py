"""Checks the security tests share: metric labels within bounded sets, secrets nowhere.

`metric_label_problems(text, settings)` parses Prometheus text and checks
every label value against the bounded set its label may take (channels,
event types or `other`, rule ids of the pack, destinations, outcomes,
reasons, stages, status codes, partition numbers, the configured groups and
topics): a customer id or free text as a label value is a problem, and so is
a label name this file does not know (a new label must be reviewed here).
`customer_data_leaks(log_dirs, data)` searches the logs children wrote for
customer ids, free texts and addresses a test gave them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from common.metrics import PROCESSES, TRIGGERS
from common.settings import Settings
from processors.engine import load_rule_pack
from processors.engine.actions import escalation_rule
from schemas.records import CHANNELS, DESTINATIONS, EVENT_TYPES, OUTCOMES
from schemas.wire import Topics

_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,39}")
_NUMBER = re.compile(r"\d{1,6}")

STAGES = frozenset(
    {"decode", "validate", "size", "engine", "webhook", "collector", "adapter", "publish"}
)
WEBHOOK_OUTCOMES = frozenset({"delivered", "retried", "failed"})
SINKS = frozenset({"postgres", "webhook"})
TABLES = frozenset({"actions", "decisions", "interaction_events", "action_status_history"})
#: Labels of prometheus_client's own process/platform collectors.
PLATFORM_LABELS = frozenset(
    {"implementation", "major", "minor", "patchlevel", "version", "generation"}
)


def metric_total(text: str, name: str) -> float:
    """The sum of every sample of metric NAME (a counter's `_total` samples)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


_PACK_ID = re.compile(r"[0-9a-f]{16}")
_BASE_TOPICS = tuple(Topics("").all())


def metric_label_problems(
    text: str, settings: Settings, customers: Iterable[str] = ()
) -> list[str]:
    """Every label value in TEXT outside its bounded set (see the module docstring)."""
    pack = load_rule_pack(settings.engine.rules_path)
    rules = {rule.id for rule in pack.rules}
    rules |= {escalation_rule(rule.id) for rule in pack.rules if rule.when_overdue is not None}
    allowed: dict[str, set[str]] = {
        "channel": set(CHANNELS),
        "type": {*EVENT_TYPES, "other"},
        "rule": rules,
        "destination": {*DESTINATIONS, "other"},
        "stage": set(STAGES),
        "sink": set(SINKS),
        "table": set(TABLES),
        "trigger": set(TRIGGERS),
        "process": set(PROCESSES),
    }
    known_customers = set(customers)
    problems: list[str] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label, value in sample.labels.items():
                where = f"{sample.name}{{{label}={value!r}}}"
                if value in known_customers or "CUST-" in value:
                    problems.append(f"{where}: a customer id")
                elif label == "group":
                    # configured consumer groups (tests give each its own suffix), never data
                    if not value.startswith("moments-"):
                        problems.append(f"{where}: not a moments consumer group")
                elif label == "topic":
                    # configured topics, possibly under a prefix (MOMENTS_TOPIC_PREFIX)
                    if not any(value.endswith(base) for base in _BASE_TOPICS):
                        problems.append(f"{where}: not a moments topic")
                elif label in allowed:
                    if value not in allowed[label]:
                        problems.append(f"{where}: not one of the bounded {label} values")
                elif label == "outcome":
                    if value not in {*OUTCOMES, *WEBHOOK_OUTCOMES}:
                        problems.append(f"{where}: not an outcome")
                elif label == "reason":
                    if not _IDENTIFIER.fullmatch(value):
                        problems.append(f"{where}: free text as a reason")
                elif label == "pack":  # moments_rules_pack_info: the sha256 of a pack's YAML
                    if not _PACK_ID.fullmatch(value):
                        problems.append(f"{where}: not a pack id")
                elif label in ("partition", "code"):
                    if not _NUMBER.fullmatch(value):
                        problems.append(f"{where}: not a number")
                elif label == "le" or label == "quantile" or label in PLATFORM_LABELS:
                    continue
                else:
                    problems.append(f"{where}: a label nobody reviewed")
    return problems


def secrets_in(text: str, secrets: Iterable[str]) -> list[str]:
    """Which of SECRETS appear in TEXT (each reported by its first 3 characters only)."""
    return [f"{s[:3]}…" for s in secrets if s and s in text]


def customer_data_leaks(log_dirs: Iterable[Path], data: Iterable[str]) -> dict[str, list[str]]:
    """Per log file under LOG_DIRS, which of DATA (customer ids, texts, addresses) it shows."""
    wanted = sorted({d for d in data if d})
    leaks: dict[str, list[str]] = {}
    for directory in log_dirs:
        for path in sorted(directory.glob("*.log")):
            text = path.read_text(errors="replace")
            found = [d for d in wanted if d in text]
            if found:
                leaks[str(path)] = found[:10]
    return leaks
