"""What a published pack can no longer do to a worker (docs/design.md 8.2, 8.3): grow a
partition's lineage without bound, leave it naming a pack it cannot find, run any function,
carry a duration no action can hold, or let one rule's predicate stop the others."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest
import yaml

from processors.engine import DictStore, Engine, EngineConfig, RulePackError, parse_rule_pack
from processors.engine.rule_model import CustomerProfile
from processors.engine.rules import MAX_PACK_BYTES, check_rule_pack, pack_from_text
from processors.engine.state import LINE_KEY, TEXTS_KEY
from processors.engine.switching import (
    MissingPack,
    PackLibrary,
    feed,
    pack_id,
    request_switch,
    start,
)
from schemas.records import InteractionEvent
from tests.support.engine import T0, D, H, ev, rule, run
from tests.support.packs import DEFAULT_DOC, case_pack
from tests.support.switching import A_TEXT, Partition, restarted

#: A pack of one rule. A publication parses the whole text, and 500 of the default pack's
#: cost seconds; the lineage value holds one pack's text whatever its size.
ONE_RULE = yaml.safe_dump({"rules": [rule("reply", {"kind": "match", "type": "inquiry"})]})


def commented(n: int, text: str = A_TEXT) -> str:
    """The pack `text` with a changed comment: a new pack id, the same rules."""
    return f"# publication {n}\n{text}"


def line_bytes(store: DictStore) -> int:
    return len(orjson.dumps(store.data[LINE_KEY]))


# -- a partition's lineage stays bounded ------------------------------------------------


def test_500_publishes_of_a_changed_comment_keep_the_lineage_value_bounded() -> None:
    worker = Partition(ONE_RULE)
    worker.feed([ev("inquiry", T0)])
    first = line_bytes(worker.store)
    sizes = []
    for n in range(500):
        worker.publish(commented(n, ONE_RULE))
        worker.feed([ev("inquiry", T0 + (n + 1) * 1000, event_id=f"e{n}")])
        sizes.append(line_bytes(worker.store))
    assert worker.line.epoch == 500 and worker.line.pending is None
    last = pack_id(commented(499, ONE_RULE))
    assert worker.line.chain == (last,)
    assert set(worker.store.data[LINE_KEY]["packs"]) == {last}
    # one pack's text, the counters and the last switches: the same after 100 as after 500
    assert max(sizes[100:]) - min(sizes[100:]) < 16 and max(sizes) < first + 2000
    assert TEXTS_KEY not in worker.store.data


def test_a_version_a_timer_needs_is_kept_until_the_timer_fired_then_let_go() -> None:
    worker = Partition()
    worker.feed([ev("dispute_opened", T0, reference="R1")])  # escalates at 48 h under v1
    worker.publish(case_pack("24h", 2))
    worker.feed([ev("inquiry", T0 + H, event_id="i1")])
    for n in range(50):  # comment-only publications meanwhile
        worker.publish(f"# {n}\n{case_pack('24h', 2)}")
        worker.feed([ev("inquiry", T0 + H + (n + 1) * 1000, event_id=f"c{n}")])
    assert worker.line.retired == (("case_unresolved", 1, pack_id(A_TEXT)),)
    assert len(worker.line.chain) == 2
    worker.restart()  # rebuilt from the one state value
    worker.feed([ev("inquiry", T0 + 3 * D, event_id="later")])
    fired = [a for a in worker.out.actions if a.rule == "case_unresolved"]
    assert [(a.rule_version, a.triggered_at) for a in fired] == [(1, T0 + 2 * D)]
    worker.publish(case_pack("24h", 3))
    worker.feed([ev("inquiry", T0 + 4 * D, event_id="after")])
    assert worker.line.retired == ()  # the timer fired: nothing refers to v1 or v2
    assert worker.line.chain == (pack_id(case_pack("24h", 3)),)


def test_a_restart_after_many_switches_runs_what_the_partition_ran() -> None:
    """A pruned lineage rebuilds an engine deciding exactly as the running one."""
    packs = [case_pack("48h", 1), case_pack("24h", 2), case_pack("36h", 3, "cancel")]
    live, again = Partition(), Partition()
    for n, text in enumerate(packs * 3):
        for worker in (live, again):
            worker.feed([ev("dispute_opened", T0 + n * D, reference=f"R{n}", event_id=f"d{n}")])
            worker.publish(f"# {n}\n{text}")
        again.restart()
    events = [ev("inquiry", T0 + 20 * D, event_id="end")]
    live.feed(events)
    again.feed(events)
    assert [a.action_id for a in again.out.actions] == [a.action_id for a in live.out.actions]
    assert [d.decision_id for d in again.out.decisions] == [
        d.decision_id for d in live.out.decisions
    ]
    assert again.store.data == live.store.data


def test_a_lineage_of_the_old_layout_is_converted_and_a_missing_pack_is_no_crash() -> None:
    """Layout 1: `p:line` named a pack missing from `p:packs` (two changelog records, one
    lost); every start failed with KeyError. Now: logged, the partition goes on."""
    worker = Partition()
    worker.feed([ev("dispute_opened", T0, reference="R1")])
    b = case_pack("24h", 2)
    worker.publish(b)
    worker.feed([ev("inquiry", T0 + H, event_id="i1")])
    store = worker.store
    store.data[LINE_KEY] = {
        "chain": [pack_id(A_TEXT), pack_id(b), pack_id(A_TEXT)],
        "at": [T0 + 1, T0 + 2],
        "pending": None,
    }
    store.data[TEXTS_KEY] = {pack_id(A_TEXT): A_TEXT}  # b's text was never written
    library, copy_ = restarted(store)
    library.add(A_TEXT, "host")
    line = library.load(copy_)
    assert line is not None and line.head == pack_id(A_TEXT) and line.epoch == 2
    assert TEXTS_KEY not in copy_.data and copy_.data[LINE_KEY]["layout"] == 2
    # its head missing too and no fallback: one clear error; with the host's pack: goes on
    copy_.data[LINE_KEY]["packs"] = {}
    with pytest.raises(MissingPack, match="neither in its state nor known"):
        PackLibrary(EngineConfig()).load(copy_)
    fresh = PackLibrary(EngineConfig())
    fallback = fresh.add(b, "host")
    line = fresh.load(copy_, fallback)
    assert line is not None and line.head == fallback
    _, out = feed(fresh, copy_, line, ev("inquiry", T0 + 3 * D, event_id="x"))
    # (and the follow-up, never done, is escalated at its due_by: docs/design.md 12.4)
    assert [a.rule for a in out.actions] == ["case_follow_up.when_overdue", "case_unresolved"]


def test_a_partition_without_events_starts_over_on_a_new_pack() -> None:
    library = PackLibrary(EngineConfig())
    store = DictStore()
    line = start(library, store, library.add(A_TEXT, "A"))
    line = request_switch(library, store, line, library.add(commented(1), "B"))
    assert (line.head, line.epoch) == (pack_id(commented(1)), 0)
    assert set(store.data[LINE_KEY]["packs"]) == {pack_id(commented(1))}


# -- what a pack may say -----------------------------------------------------------------


def test_a_pack_over_256_kb_is_refused_naming_its_size(tmp_path: Path) -> None:
    text = A_TEXT + "#" * MAX_PACK_BYTES + "\n"
    path = tmp_path / "big.yaml"
    path.write_text(text, encoding="utf-8")
    [problem] = check_rule_pack(path)
    assert problem.startswith(f"{path}: the pack is {len(text)} bytes; at most {MAX_PACK_BYTES}")
    with pytest.raises(RulePackError, match="at most 262144"):
        pack_from_text(text, "rules@7")


@pytest.mark.parametrize("field", ["due_by", "cool_down", "defer_for"])
def test_a_duration_over_ten_years_is_refused(field: str) -> None:
    doc = copy.deepcopy(DEFAULT_DOC)
    doc["rules"][0][field] = "999999999999d"
    with pytest.raises(RulePackError) as refused:
        parse_rule_pack(doc, source="p.yaml")
    rid = doc["rules"][0]["id"]
    assert f"p.yaml: rule {rid}: {field}: at most 10 years (3650d)" in refused.value.problems
    doc["rules"][0][field] = "3650d"
    parse_rule_pack(doc)


def with_predicate(name: str) -> dict[str, object]:
    return {"rules": [rule("r", {"kind": "match", "type": "inquiry", "predicate": name})]}


def test_a_predicate_from_a_module_off_the_allow_list_is_refused_before_importing() -> None:
    with pytest.raises(RulePackError) as refused:
        parse_rule_pack(with_predicate("builtins:print"), source="p.yaml")
    [problem] = refused.value.problems
    assert problem.startswith(
        "p.yaml: rule r: when.predicate: module builtins is not allowed to give predicates"
    )
    assert "processors.engine.predicates" in problem
    # on the list, but a name the module only imported: refused too
    with pytest.raises(RulePackError, match="defines no function InteractionEvent"):
        parse_rule_pack(with_predicate("processors.engine.predicates:InteractionEvent"))
    parse_rule_pack(with_predicate("processors.engine.predicates:large_payment"))


def test_the_allow_list_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMENTS_PREDICATE_MODULES", "tests.unit.test_rules_safety")
    parse_rule_pack(with_predicate("tests.unit.test_rules_safety:explodes"))
    with pytest.raises(RulePackError, match="not allowed"):
        parse_rule_pack(with_predicate("processors.engine.predicates:large_payment"))


# -- a predicate that raises is its rule's alone ------------------------------------------


def explodes(event: InteractionEvent, customer: CustomerProfile) -> bool:
    """A predicate that fails on every event."""
    raise KeyError(event.customer_id)


BROKEN = f"{__name__}:explodes"


def test_a_predicate_that_raises_suppresses_its_own_rule_and_no_other() -> None:
    doc = {
        "rules": [
            rule(
                "broken", {"kind": "match", "type": "inquiry", "predicate": f"{__name__}:explodes"}
            ),
            rule("fine", {"kind": "match", "type": "inquiry"}),
        ]
    }
    engine = Engine(parse_rule_pack(doc, predicate_modules=[__name__]), EngineConfig())
    store = DictStore()
    out = run(engine, store, ev("inquiry", T0, event_id="e1"), ev("inquiry", T0 + H, event_id="e2"))
    assert [a.rule for a in out.actions] == ["fine", "fine"]
    errors = [d for d in out.decisions if d.rule == "broken"]
    assert [(d.outcome, d.reason, d.evidence) for d in errors] == [
        ("suppressed", "rule_error", ["e1"]),
        ("suppressed", "rule_error", ["e2"]),
    ]
    again = run(engine, store, ev("inquiry", T0 + H, event_id="e2"))  # a duplicate delivery
    assert {d.reason for d in again.decisions} == {"duplicate_event"}


def test_two_parses_of_a_predicate_rule_are_the_same_rule() -> None:
    doc = with_predicate("processors.engine.predicates:large_payment")
    text = yaml.safe_dump(doc)
    a, b = pack_from_text(text, "a"), pack_from_text(text, "b")
    assert a.rules == b.rules


# -- the CLI -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ("when: {kind: match, type: inquiry, predicate: 'builtins:print'}", "not allowed"),
        ("when: {kind: match, type: inquiry}\n    due_by: 999999999999d", "at most 10 years"),
        ("when: {kind: match, type: inquiry}\n# " + "x" * MAX_PACK_BYTES, "at most 262144"),
    ],
)
def test_rules_check_and_publish_refuse_it_before_any_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str, problem: str
) -> None:
    from typer.testing import CliRunner

    from moments.cli import app

    path = tmp_path / "pack.yaml"
    path.write_text(
        "rules:\n  - id: r\n    " + change + "\n    action: r\n    destination: care\n"
        "    priority: 50\n    class: service\n    reason: Why.\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("MOMENTS_BOOTSTRAP", "127.0.0.1:9")  # nothing listens: never reached
    runner = CliRunner()
    for args in (["rules", "check", str(path)], ["rules", "publish", str(path)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert problem in " ".join(result.output.split())


def test_rules_publish_needs_a_known_publisher_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from moments.cli import app

    path = tmp_path / "pack.yaml"
    path.write_text(A_TEXT, encoding="utf-8")
    monkeypatch.setenv("MOMENTS_BOOTSTRAP", "127.0.0.1:9")
    monkeypatch.setenv("MOMENTS_RULES_SIGNING_KEYS", "ann=k1,ci=k2")
    runner = CliRunner()
    for args, problem in (
        ([], "several publisher keys (ann, ci): name one"),
        (["--key", "eve"], "no publisher key 'eve' (known: ann, ci)"),
    ):
        result = runner.invoke(app, ["rules", "publish", str(path), *args])
        assert result.exit_code == 2 and problem in " ".join(result.output.split())
        assert "k1" not in result.output and "k2" not in result.output
