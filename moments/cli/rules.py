"""`moments rules ...`: check, diff, publish, list and roll back rule packs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from moments.cli.common import (
    UserError,
    console,
    friendly,
    load_settings,
    parse_time,
    require_broker,
    require_raised_versions,
)

rules_app = typer.Typer(help="Work with rule packs.", no_args_is_help=True)


@rules_app.command("check")
@friendly
def rules_check(
    file: Annotated[Path, typer.Argument(help="Rule pack (YAML).")],
    new: Annotated[
        Path | None,
        typer.Argument(
            help="A new version of the pack: every changed rule must raise its version."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='One JSON object: {"ok", "problems": [...], ...}.')
    ] = False,
) -> None:
    """Validate a rule pack; report every problem with file, rule and field.

    A pack is at most 256 KB, durations at most 10 years, predicates only from the
    modules of MOMENTS_PREDICATE_MODULES. With NEW, also validate NEW and refuse it when
    a rule changed (anything but its description) without a higher version."""
    from processors.engine import load_rule_pack
    from processors.engine.lifecycle import compare_packs

    if as_json:
        _check_json(file, new)
        return
    pack = load_rule_pack(file)
    if new is None:
        console.print(f"[green]ok[/]: {escape(str(file))}: {len(pack.rules)} rules")
        return
    new_pack = load_rule_pack(new)
    require_raised_versions(pack, new_pack)
    changes = compare_packs(pack, new_pack)
    console.print(
        f"[green]ok[/]: {escape(str(new))}: {len(new_pack.rules)} rules; "
        f"{len(changes.changed)} changed ({escape(', '.join(changes.changed)) or '-'}), "
        f"{len(changes.added)} added, {len(changes.removed)} removed, "
        f"{len(changes.unchanged)} unchanged"
    )


@rules_app.command("diff")
@friendly
def rules_diff(
    old: Annotated[Path, typer.Argument(help="The rule pack in use (YAML).")],
    new: Annotated[Path, typer.Argument(help="The new version of the pack (YAML).")],
    events: Annotated[
        Path | None, typer.Option(help="History: interaction events, JSON lines.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Advance the clock to this time at the end (ISO-8601).")
    ] = None,
    from_topic: Annotated[
        str | None, typer.Option(help="History: read this Kafka topic from its beginning.")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the comparison as JSON.")
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            help="Also compare the relationship ledger's details (details.relationship_balance,"
            " relationship_positives, relationship_negatives), which follow the customer's"
            " history rather than the rule (docs/design.md 8.5)."
        ),
    ] = False,
) -> None:
    """What NEW would change against OLD over the same history (a shadow run of both).

    An action both give counts as changed when its reason, details, priority,
    destination, due_by or triggered_at differ; without --strict, details
    other than the relationship ledger's."""
    from processors.config import engine_config
    from processors.diff import diff_file, diff_topic
    from processors.engine import load_rule_pack

    if (events is None) == (from_topic is None):
        raise UserError("give the history as --events FILE or --from-topic TOPIC (one of them)")
    settings = load_settings()
    until_ms = parse_time(until, "--until")
    old_pack, new_pack = load_rule_pack(old), load_rule_pack(new)
    require_raised_versions(old_pack, new_pack)
    if events is not None:
        result = diff_file(
            events,
            old_pack,
            new_pack,
            until_ms=until_ms,
            config=engine_config(settings),
            strict=strict,
        )
    else:
        assert from_topic is not None
        result = diff_topic(
            require_broker(settings),
            from_topic,
            old_pack,
            new_pack,
            until_ms=until_ms,
            strict=strict,
        )
    _print_diff(result)
    if json_out is not None:
        result.write_json(json_out)
        console.print(f"JSON: {escape(str(json_out))}")


def _pack_name(text: str) -> str:
    import yaml

    document = yaml.safe_load(text)
    name = document.get("name") if isinstance(document, dict) else None
    return name if isinstance(name, str) and name else "default"


def _signing_key(settings: Any, key: str | None) -> Any:
    """The publisher key to sign with (None when MOMENTS_RULES_SIGNING_KEYS is empty)."""
    from common.rules_topic import signing_key

    try:
        return signing_key(settings, key)
    except ValueError as exc:
        raise UserError(f"--key: {exc}") from None


def _author(author: str | None) -> str:
    import getpass

    if author:
        return author
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@rules_app.command("publish")
@friendly
def rules_publish(
    file: Annotated[Path, typer.Argument(help="Rule pack (YAML).")],
    author: Annotated[str | None, typer.Option(help="Who publishes (default: the user).")] = None,
    key: Annotated[
        str | None,
        typer.Option(
            help="Sign with this publisher key of MOMENTS_RULES_SIGNING_KEYS (default: the"
            " only one); the author shown is then the key's name."
        ),
    ] = None,
) -> None:
    """Validate a pack, check it against the last published one, produce it to `rules`.

    With none published, the check is against the pack workers then run
    (MOMENTS_RULES_PATH or the default pack). A pack published before under its name,
    or that one, is a rollback: it needs no higher versions."""
    from common.rules_topic import next_version, pack_history, publish_pack
    from processors.engine import load_rule_pack
    from processors.engine.lifecycle import compare_packs
    from processors.engine.switching import pack_id

    settings = require_broker(load_settings())
    signer = _signing_key(settings, key)
    text = file.read_text(encoding="utf-8")
    pack = load_rule_pack(file, predicate_modules=settings.engine.predicate_modules)
    name = _pack_name(text)
    history = pack_history(settings, name)
    start = _startup_pack(settings)
    again = _earlier(history, start, pack_id(text))
    changes = f"; {again} again" if again else ""
    previous = None if again else _last_pack(settings, history) or (start and start.pack)
    if previous is not None:
        require_raised_versions(previous, pack)
        diff = compare_packs(previous, pack)
        changes = (
            f"; {len(diff.changed)} changed, {len(diff.added)} added, {len(diff.removed)} removed"
        )
    published = publish_pack(
        settings, name, text, _author(author), key=signer, version=next_version(history)
    )
    console.print(
        f"published {escape(name)} v{published.version} (hash {pack_id(text)}, "
        f"{len(pack.rules)} rules) to {settings.topics.rules} at offset {published.offset}"
        + escape(changes)
        + (f", signed by {escape(published.author)}" if signer else "")
    )


def _startup_pack(settings: Any) -> Any:
    """The pack a worker runs with none published (MOMENTS_RULES_PATH or the default
    pack), or None when it cannot be read."""
    from processors.engine import RulePackError
    from processors.rules_follower import startup_pack

    try:
        return startup_pack(settings)
    except (RulePackError, OSError):
        return None


def _last_pack(settings: Any, history: list[Any]) -> Any:
    """The last valid pack of `history` (what a worker would have taken), or None."""
    import yaml

    from processors.engine import parse_rule_pack

    for last in reversed(history):
        source = f"{settings.topics.rules}@{last.offset}"
        try:
            return parse_rule_pack(yaml.safe_load(last.yaml), source=source)
        except (ValueError, yaml.YAMLError):
            continue
    return None


def _earlier(history: list[Any], start: Any, pid: str) -> str | None:
    """Which earlier pack has the id `pid`: the latest version of `history` that has it,
    else the start-up pack; None when neither does (a new pack)."""
    from processors.engine.switching import pack_id

    for record in reversed(history):
        if pack_id(record.yaml) == pid:
            return f"the pack of version {record.version} (offset {record.offset})"
    if start is not None and start.pid == pid:
        return f"the pack run with none published ({start.source})"
    return None


@rules_app.command("history")
@friendly
def rules_history(
    pack: Annotated[str | None, typer.Option(help="Only this pack (its `name`).")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON list, one object a version.")
    ] = False,
) -> None:
    """List the packs published to the `rules` topic, oldest first: each version, its hash
    (the `pack` of the metric moments_rules_pack_info) and rule versions."""
    import yaml
    from rich.table import Table

    from common.rules_topic import pack_history, signature_problem
    from processors.engine import parse_rule_pack
    from processors.engine.switching import pack_id

    settings = require_broker(load_settings())
    keys = settings.engine.rules_signing_keys
    table = Table(title=f"{settings.topics.rules}")
    for column in ("offset", "pack", "version", "hash", "published_at", "author", "rules"):
        if column == "hash":  # whole on any width: it is what the metric shows
            table.add_column(column, no_wrap=True, min_width=16)
        else:
            table.add_column(column, overflow="fold")
    rows: list[dict[str, Any]] = []
    for record in pack_history(settings, pack):
        try:
            rules = parse_rule_pack(yaml.safe_load(record.yaml)).rules
            raised = [f"{r.id} v{r.version}" for r in rules if r.version > 1]
            versions = f"{len(rules)} rules" + (f"; {', '.join(raised)}" if raised else ", all v1")
        except (ValueError, yaml.YAMLError):
            versions = "(invalid pack)"
        # with publisher keys set, only a verified key's name is an author
        author = (
            record.author
            if not keys
            else record.signed_by or ""
            if signature_problem(record, keys) is None
            else "(not signed by a known key)"
        )
        digest = pack_id(record.yaml)
        rows.append(
            {"offset": record.offset, "pack": record.pack, "version": record.version}
            | {"hash": digest, "published_at": record.published_at}
            | {"author": author, "rules": versions}
        )
        table.add_row(
            str(record.offset),
            escape(record.pack),
            str(record.version),
            digest,
            record.published_at,
            escape(author),
            escape(versions),
        )
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    console.print(table)


@rules_app.command("rollback")
@friendly
def rules_rollback(
    pack: Annotated[str, typer.Option(help="The pack to roll back (its `name`).")] = "default",
    author: Annotated[str | None, typer.Option(help="Who rolls back (default: the user).")] = None,
    key: Annotated[
        str | None,
        typer.Option(help="Sign with this publisher key (default: the only one)."),
    ] = None,
) -> None:
    """Publish the pack published before the current one again (as one more version).

    Before the first publication that is the pack workers run with none published
    (MOMENTS_RULES_PATH or the default pack)."""
    from common.rules_topic import next_version, pack_history, publish_pack
    from processors.engine.switching import pack_id

    settings = require_broker(load_settings())
    signer = _signing_key(settings, key)
    history = pack_history(settings, pack)
    if not history:
        raise UserError(f"{settings.topics.rules}: pack {pack!r} was never published")
    current = pack_id(history[-1].yaml)
    for record in reversed(history[:-1]):
        if pack_id(record.yaml) != current:
            text, what = record.yaml, f"version {record.version} ({record.published_at})"
            break
    else:
        start = _startup_pack(settings)
        if start is None or start.pid == current:
            raise UserError(
                f"{settings.topics.rules}: no earlier version of pack {pack!r} than its current"
                f" one (hash {current})"
            )
        text, what = start.text, f"the pack run with none published ({start.source})"
    published = publish_pack(
        settings, pack, text, _author(author), key=signer, version=next_version(history)
    )
    console.print(
        f"rolled back {escape(pack)} to {escape(what)}: published as v{published.version} "
        f"(hash {pack_id(text)}) at offset {published.offset}"
    )


def _print_diff(result: Any) -> None:
    """A table per rule (old, new, added, removed, changed), then example customers."""
    from rich.table import Table

    table = Table(title=f"rules diff over {result.events} events")
    for column in ("rule", "old", "new", "added", "removed", "changed"):
        table.add_column(column, justify="left" if column == "rule" else "right")
    for rule_id, d in sorted(result.rules.items()):
        moved = d.added or d.removed or d.changed
        style = "bold" if moved else "dim"
        table.add_row(
            escape(rule_id),
            *(str(n) for n in (d.old, d.new, d.added, d.removed, d.changed)),
            style=style,
        )
    console.print(table)
    console.print(f"customers affected: {result.customers_affected}")
    if result.examples:
        examples = Table(title="examples")
        for column in ("rule", "kind", "customer", "old reason", "new reason"):
            examples.add_column(column, overflow="fold")
        for ex in result.examples:
            kind = ex["kind"] if "fields" not in ex else f"changed: {', '.join(ex['fields'])}"
            examples.add_row(
                escape(ex["rule"]),
                escape(kind),
                escape(ex["customer_id"]),
                escape(ex["old_reason"] or "-"),
                escape(ex["new_reason"] or "-"),
            )
        console.print(examples)


def _check_json(file: Path, new: Path | None) -> None:
    """`rules check --json`: every problem of FILE (and NEW) as one JSON object on stdout;
    exit code 2 when there is any."""
    from processors.engine import RulePackError, check_rule_pack, load_rule_pack
    from processors.engine.lifecycle import compare_packs, version_problems

    problems = check_rule_pack(file) + (check_rule_pack(new) if new is not None else [])
    report: dict[str, Any] = {"ok": not problems, "file": str(file), "problems": problems}
    if not problems:
        pack = load_rule_pack(file)
        report["rules"] = len(pack.rules)
        if new is not None:
            try:
                new_pack = load_rule_pack(new)
            except RulePackError as exc:
                new_pack, report["problems"] = None, exc.problems
            if new_pack is not None:
                changes = compare_packs(pack, new_pack)
                report["problems"] = version_problems(pack, new_pack)
                report |= {
                    "new": str(new),
                    "changed": list(changes.changed),
                    "added": list(changes.added),
                    "removed": list(changes.removed),
                }
            report["ok"] = not report["problems"]
    sys.stdout.write(json.dumps(report) + "\n")
    if not report["ok"]:
        raise typer.Exit(2)
