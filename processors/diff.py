"""Shadow comparison of two rule packs over the same history (docs/design.md 8.5, `rules diff`).

Both packs run over the same events on the backfill path: for a file, one pass
reads each event once and feeds it to both engines (`diff_file`), or, on a
machine with CPUs to share, each pack replays the file in its own process at
the same time; for a topic, two backfills (`diff_topic`). The actions are compared by action_id (an
action_id does not depend on the rule version): per rule, how many actions
each pack gives (`old`, `new`), the ids only the new pack gives (`added`),
only the old one gives (`removed`), and the ids both give with another
reason, details, priority, destination, due_by or triggered_at (`changed`).
The relationship ledger's details (`LEDGER_DETAILS`: the customer's balance, as
of each action) are left out of the comparison unless `strict`: they follow
the customer's history, so a pack that fires one action more would otherwise
"change" every later action of that customer.
`PackDiff.to_json` is the JSON of section 8. No Kafka here except through
`processors.backfill` for a topic.
"""

from __future__ import annotations

import json
import multiprocessing
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final

import orjson

from common.memory import no_cyclic_gc
from processors.engine import Engine, EngineConfig
from processors.engine.rules import RulePack
from processors.replay import Replayer, ReplaySummary, replay_file
from processors.replay_shards import shard_count
from schemas.codec import action_from_json, read_events_jsonl
from schemas.records import ActionEvent

if TYPE_CHECKING:
    from common.settings import Settings

#: The fields whose difference makes the same action "changed".
COMPARED: Final = ("reason", "details", "priority", "destination", "due_by", "triggered_at")
#: The details the relationship ledger writes on every action; compared only when strict.
LEDGER_DETAILS: Final = frozenset(
    {"relationship_balance", "relationship_positives", "relationship_negatives"}
)
#: Examples kept per rule and kind of difference.
EXAMPLES_PER_KIND: Final = 2


@dataclass(slots=True)
class RuleDiff:
    """One rule's counts: actions under each pack and how they differ."""

    old: int = 0
    new: int = 0
    added: int = 0
    removed: int = 0
    changed: int = 0


@dataclass(slots=True)
class PackDiff:
    """What a new pack would change over a history of `events` events."""

    events: int
    customers_affected: int
    rules: dict[str, RuleDiff]
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "customers_affected": self.customers_affected,
            "rules": {
                rule_id: {
                    "old": d.old,
                    "new": d.new,
                    "added": d.added,
                    "removed": d.removed,
                    "changed": d.changed,
                }
                for rule_id, d in sorted(self.rules.items())
            },
            "examples": self.examples,
        }

    def write_json(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")


def _without_ledger(details: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in details.items() if key not in LEDGER_DETAILS}


def _differs(a: ActionEvent, b: ActionEvent, strict: bool = False) -> list[str]:
    """The compared fields in which `a` and `b` differ (details without `LEDGER_DETAILS`
    unless `strict`)."""
    fields = []
    for name in COMPARED:
        old, new = getattr(a, name), getattr(b, name)
        if old == new:
            continue
        if name == "details" and not strict and _without_ledger(old) == _without_ledger(new):
            continue
        fields.append(name)
    return fields


def _example(
    kind: str, old: ActionEvent | None, new: ActionEvent | None, strict: bool
) -> dict[str, Any]:
    some = new if new is not None else old
    assert some is not None
    example: dict[str, Any] = {
        "rule": some.rule,
        "kind": kind,
        "customer_id": some.customer_id,
        "action_id": some.action_id,
        "old_reason": None if old is None else old.reason,
        "new_reason": None if new is None else new.reason,
    }
    if old is not None and new is not None:
        example["fields"] = _differs(old, new, strict)
    return example


def compare_actions(
    old: Iterable[ActionEvent],
    new: Iterable[ActionEvent],
    *,
    events: int,
    rule_ids: Iterable[str] = (),
    strict: bool = False,
) -> PackDiff:
    """Compare the actions of two runs over the same events by action_id; `strict` compares
    the relationship ledger's details too."""
    rules: dict[str, RuleDiff] = {rule_id: RuleDiff() for rule_id in rule_ids}
    before: dict[str, ActionEvent] = {}
    for action in old:
        before[action.action_id] = action
        rules.setdefault(action.rule, RuleDiff()).old += 1
    after: dict[str, ActionEvent] = {}
    for action in new:
        after[action.action_id] = action
        rules.setdefault(action.rule, RuleDiff()).new += 1
    affected: set[str] = set()
    found: list[tuple[str, str, str, ActionEvent | None, ActionEvent | None]] = []
    for action_id, action in after.items():
        prior = before.get(action_id)
        if prior is None:
            rules[action.rule].added += 1
            found.append((action.rule, "added", action_id, None, action))
        elif _differs(prior, action, strict):
            rules[action.rule].changed += 1
            found.append((action.rule, "changed", action_id, prior, action))
        else:
            continue
        affected.add(action.customer_id)
    for action_id, action in before.items():
        if action_id not in after:
            rules[action.rule].removed += 1
            found.append((action.rule, "removed", action_id, action, None))
            affected.add(action.customer_id)
    found.sort(key=lambda f: (f[0], f[1], f[2]))
    examples: list[dict[str, Any]] = []
    taken: dict[tuple[str, str], int] = {}
    for rule_id, kind, _, before_action, after_action in found:
        if taken.get((rule_id, kind), 0) < EXAMPLES_PER_KIND:
            taken[(rule_id, kind)] = taken.get((rule_id, kind), 0) + 1
            examples.append(_example(kind, before_action, after_action, strict))
    return PackDiff(events, len(affected), rules, examples)


def _rule_ids(old: RulePack, new: RulePack) -> list[str]:
    return sorted({rule.id for rule in old.rules} | {rule.id for rule in new.rules})


def diff_file(
    events_path: Path | str,
    old: RulePack,
    new: RulePack,
    *,
    until_ms: int | None = None,
    config: EngineConfig | None = None,
    partitions: int = 1,
    workers: int | None = None,
    strict: bool = False,
) -> PackDiff:
    """Both packs over a JSON-lines file: on a file of a few MB with CPUs to share (see
    `replay_shards.shard_count`; `workers` as there), each pack in its own process at the
    same time; else in one pass, each event read once and fed to both. `strict`: see
    `compare_actions`."""
    config = config or EngineConfig()
    if shard_count(workers, Path(events_path)) > 1:
        parallel = _diff_file_in_two_processes(
            Path(events_path),
            old,
            new,
            until_ms=until_ms,
            config=config,
            partitions=partitions,
            strict=strict,
        )
        if parallel is not None:
            return parallel
    runs = [Replayer(Engine(pack, config, decisions=False), partitions) for pack in (old, new)]
    outputs: list[list[ActionEvent]] = [[], []]
    events = 0
    with no_cyclic_gc():
        feeds = [run.feed for run in runs]
        for event in read_events_jsonl(events_path):
            events += 1
            for feed, actions in zip(feeds, outputs, strict=True):
                out = feed(event)
                if out.actions:
                    actions += out.actions
        for run, actions in zip(runs, outputs, strict=True):
            actions += run.finish(until_ms).actions
    return compare_actions(
        outputs[0], outputs[1], events=events, rule_ids=_rule_ids(old, new), strict=strict
    )


def _diff_file_in_two_processes(
    events_path: Path,
    old: RulePack,
    new: RulePack,
    *,
    until_ms: int | None,
    config: EngineConfig,
    partitions: int,
    strict: bool,
) -> PackDiff | None:
    """The new pack replayed by a forked process while this one replays the old; None when
    the forked one failed (the one-pass diff then runs, and raises what there is to raise)."""
    with tempfile.TemporaryDirectory(prefix=".moments-diff-", dir=events_path.parent) as tmp:
        paths = [Path(tmp) / "old.jsonl", Path(tmp) / "new.jsonl"]

        def replay(pack: RulePack, path: Path) -> ReplaySummary:
            return replay_file(
                events_path,
                actions_out=path,
                pack=pack,
                config=config,
                until_ms=until_ms,
                partitions=partitions,
                workers=1,
            )

        child = multiprocessing.get_context("fork").Process(
            target=replay, args=(new, paths[1]), daemon=True
        )
        child.start()
        try:
            summary = replay(old, paths[0])
        finally:
            child.join()
        if child.exitcode != 0 or not paths[1].exists():
            return None
        runs = [_actions_of(path) for path in paths]
    return compare_actions(
        runs[0], runs[1], events=summary.events, rule_ids=_rule_ids(old, new), strict=strict
    )


def _actions_of(path: Path) -> list[Any]:
    """A replay's actions as read back for `compare_actions`: the JSON form's fields as
    attributes (both runs wrote them alike, so they compare as the records would)."""
    with path.open("rb") as lines:
        return [SimpleNamespace(**orjson.loads(line)) for line in lines if line.strip()]


def diff_topic(
    settings: Settings,
    topic: str,
    old: RulePack,
    new: RulePack,
    *,
    until_ms: int | None = None,
    strict: bool = False,
) -> PackDiff:
    """Both packs over a topic from its beginning: two shadow backfills written to files.
    `strict`: see `compare_actions`."""
    # Here, not at the top: a file diff needs no Kafka client or metrics loaded.
    from processors.backfill import backfill_topic

    runs: list[list[ActionEvent]] = []
    events = 0
    with tempfile.TemporaryDirectory(prefix="moments-diff-") as tmp:
        for index, pack in enumerate((old, new)):
            path = Path(tmp) / f"actions-{index}.jsonl"
            summary = backfill_topic(
                settings, topic, actions_out=path, pack=pack, until_ms=until_ms
            )
            events = summary.events
            with path.open(encoding="utf-8") as lines:
                runs.append([action_from_json(json.loads(line)) for line in lines if line.strip()])
    return compare_actions(
        runs[0], runs[1], events=events, rule_ids=_rule_ids(old, new), strict=strict
    )
