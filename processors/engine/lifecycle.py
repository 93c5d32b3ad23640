"""Rule versions across packs (docs/design.md 8.1): what changed, and was the version raised.

A rule's canonical form is everything about it but its `description` (and the
version number itself): two rules with the same id and the same canonical form
are the same rule. A rule whose canonical form changed keeps its id and must
carry a higher version; `version_problems` lists every rule that does not, naming
the file, the rule and the fields that changed. `compare_packs` sorts rule ids
into unchanged, changed, removed and added, which is what a switch of packs
(`Engine.switch_pack`) needs. Pure: no files, no Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Final

from processors.engine.kinds import KINDS
from processors.engine.rule_model import Rule, RulePack

#: Rule attributes that are not part of the canonical form.
_NOT_CANONICAL: Final = frozenset({"description", "version", "key_field"})

#: How a rule attribute is spelled in the YAML pack where it differs (the fields of `when`
#: are spelled by the rule's kind: `yaml_name`).
_YAML_NAME: Final = {
    "kind": "when.kind",
    "pattern": "when",
    "rule_class": "class",
    "cool_down_ms": "cool_down",
    "due_by_ms": "due_by",
    "holdout_percent": "holdout",
    "defer_for_ms": "defer_for",
}


def yaml_name(attr: str, *rules: Rule) -> str:
    """How a pack spells the attribute `attr` of these rules (`when.within` for `within_ms`):
    as the first rule whose kind has the field says."""
    for rule in rules:
        kind = KINDS.get(rule.kind)
        for spec in kind.fields if kind is not None else ():
            if spec.attr == attr:
                return f"when.{spec.yaml}"
    return _YAML_NAME.get(attr, attr)


CANONICAL_FIELDS: Final = tuple(f.name for f in fields(Rule) if f.name not in _NOT_CANONICAL)


def canonical_form(rule: Rule) -> dict[str, Any]:
    """The rule without its description and version: what its behaviour depends on."""
    return {name: getattr(rule, name) for name in CANONICAL_FIELDS}


def changed_fields(old: Rule, new: Rule) -> list[str]:
    """The fields (as spelled in YAML) whose value differs between two versions of a rule."""
    names = [name for name in CANONICAL_FIELDS if getattr(old, name) != getattr(new, name)]
    return sorted({yaml_name(name, new, old) for name in names})


@dataclass(frozen=True, slots=True)
class PackChanges:
    """Rule ids of a new pack against an old one, each tuple sorted."""

    unchanged: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    added: tuple[str, ...]


def compare_packs(old: RulePack, new: RulePack) -> PackChanges:
    """Which rules a switch from `old` to `new` keeps, changes, removes and adds."""
    before = {rule.id: rule for rule in old.rules}
    after = {rule.id: rule for rule in new.rules}
    same = [
        rid
        for rid in before
        if rid in after and canonical_form(before[rid]) == canonical_form(after[rid])
    ]
    changed = [rid for rid in before if rid in after and rid not in same]
    return PackChanges(
        unchanged=tuple(sorted(same)),
        changed=tuple(sorted(changed)),
        removed=tuple(sorted(set(before) - set(after))),
        added=tuple(sorted(set(after) - set(before))),
    )


def same_rules(a: RulePack, b: RulePack) -> bool:
    """Whether two packs hold the same rules at the same versions (a rollback to `a` is `b`)."""
    versions = {rule.id: rule.version for rule in a.rules}
    if versions != {rule.id: rule.version for rule in b.rules}:
        return False
    changes = compare_packs(a, b)
    return not (changes.changed or changes.added or changes.removed)


def version_problems(old: RulePack, new: RulePack) -> list[str]:
    """One line per rule of `new` that changed without a higher version than in `old`."""
    before = {rule.id: rule for rule in old.rules}
    problems = []
    for rule in new.rules:
        prior = before.get(rule.id)
        if prior is None:
            continue
        diff = changed_fields(prior, rule)
        if diff and rule.version <= prior.version:
            problems.append(
                f"{new.source}: rule {rule.id}: {', '.join(diff)} changed but version "
                f"{rule.version} is not higher than {prior.version} in {old.source}; "
                f"raise it to {prior.version + 1}"
            )
    return problems
