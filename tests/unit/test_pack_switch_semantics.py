"""What a switch of rule packs keeps and drops (docs/design.md, section 8), in the engine, in
`replay --rules-change` and on the worker's switch path: unchanged rules keep all state, a
changed rule keeps cool-downs, first keys and deferred candidates and its timers fire under the
version that set them (unless `pending: cancel`), a removed rule's timers and deferred
candidates are dropped, a new rule starts empty; the worker switches at a recorded time,
survives restarts and refuses a changed rule without a new version."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from processors.engine import DictStore, EngineConfig, EngineOutput, parse_rule_pack
from processors.engine.rules import RulePack
from processors.engine.state import PACK_KEY
from processors.engine.switching import pack_id, refusal, tick
from processors.replay import replay_events
from schemas.records import InteractionEvent
from tests.support.engine import T0, D, H, engine, ev, rule, run, run_settled
from tests.support.packs import DEFAULT_DOC, case_pack
from tests.support.switching import A_TEXT, Partition


def unresolved(version: int = 1, within: str = "48h", **extra: Any) -> dict[str, Any]:
    """An absence rule: a dispute not resolved (same reference) within `within`."""
    return rule(
        "unresolved",
        {
            "kind": "absence",
            "first": {"type": "dispute_opened"},
            "missing": {"type": "dispute_resolved"},
            "within": within,
            "correlate": "reference",
        },
        version=version,
        priority=90,
        reason=f"Not resolved (v{version}) {{via}} since {{first_date}}.",
        **extra,
    )


def thanks(version: int = 1, **extra: Any) -> dict[str, Any]:
    return rule(
        "thanks",
        {"kind": "match", "type": "meter_reading_submitted"},
        class_="engagement",
        version=version,
        **{"priority": 20} | extra,
    )


def pack(*rules: dict[str, Any]) -> RulePack:
    return parse_rule_pack({"rules": list(rules)})


def dispute(at: int, ref: str = "R1", **kw: Any) -> InteractionEvent:
    return ev("dispute_opened", at, reference=ref, **kw)


def test_a_changed_rule_timer_fires_under_the_version_that_set_it() -> None:
    eng = engine(unresolved(1, "48h"))
    store = DictStore()
    run(eng, store, dispute(T0, event_id="d1"))
    new, out = eng.switch_pack([store], pack(unresolved(2, "24h")), T0 + H)
    assert out.decisions == []
    late = run(new, store, ev("inquiry", T0 + 49 * H))
    [action] = late.actions
    assert (action.rule_version, action.triggered_at) == (1, T0 + 48 * H)
    assert "(v1)" in action.reason
    [decision] = [d for d in late.decisions if d.rule == "unresolved"]
    assert (decision.outcome, decision.rule_version) == ("fired", 1)
    # a case opened after the switch follows version 2
    after = run(new, store, dispute(T0 + 50 * H, "R2"), ev("inquiry", T0 + 75 * H))
    [action2] = after.actions
    assert (action2.rule_version, action2.triggered_at) == (2, T0 + 74 * H)


def test_pending_cancel_drops_the_timers_with_rule_changed() -> None:
    eng = engine(unresolved(1))
    store = DictStore()
    run(eng, store, dispute(T0, event_id="d1"))
    new, out = eng.switch_pack([store], pack(unresolved(2, pending="cancel")), T0 + H)
    [decision] = out.decisions
    assert (decision.outcome, decision.reason, decision.rule_version) == (
        "suppressed",
        "rule_changed",
        1,
    )
    assert (decision.evidence, decision.decided_at) == (["d1"], T0 + H)
    assert run(new, store, ev("inquiry", T0 + 60 * H)).actions == []


def test_a_removed_rule_timers_and_deferred_candidates_are_dropped() -> None:
    eng = engine(unresolved(1), thanks(due_by="3d"))
    store = DictStore()
    run_settled(
        eng,
        store,
        # another customer's case: an open case would defer c1's thanks (reason open_case)
        dispute(T0, event_id="d1", customer="c0"),
        ev("meter_reading_submitted", T0 + H, event_id="m1"),
        ev("meter_reading_submitted", T0 + 2 * H, event_id="m2"),  # deferred by the cap
    )
    new, out = eng.switch_pack(
        [store], pack(rule("other", {"kind": "match", "type": "x"})), T0 + 3 * H
    )
    reasons = sorted((d.rule, d.outcome, d.reason, tuple(d.evidence)) for d in out.decisions)
    assert reasons == [
        ("thanks", "suppressed", "rule_removed", ("m2",)),
        ("unresolved", "suppressed", "rule_removed", ("d1",)),
    ]
    later = run(new, store, ev("inquiry", T0 + 10 * D))
    assert later.actions == [] and later.decisions == []
    assert store.get(PACK_KEY)["versions"] == {"other": 1}


def test_a_changed_rule_keeps_cool_downs_and_deferred_candidates() -> None:
    eng = engine(thanks(1, cool_down="2h", due_by="3d"))
    store = DictStore()
    run(eng, store, ev("meter_reading_submitted", T0, event_id="m1"))
    run_settled(eng, store, ev("meter_reading_submitted", T0 + 3 * H, event_id="m2"))  # deferred
    new, out = eng.switch_pack(
        [store], pack(thanks(2, cool_down="2h", due_by="3d", priority=25)), T0 + 4 * H
    )
    assert out.decisions == []
    later = run_settled(
        new, store, ev("meter_reading_submitted", T0 + 24 * H + 30 * 60_000, event_id="m3")
    )
    # the deferred m2 fired when the cap freed (T0 + 24 h) under version 1; m3 is then in
    # its cool-down (kept across the switch)
    [action] = later.actions
    assert (action.evidence, action.rule_version, action.triggered_at) == (["m2"], 1, T0 + 24 * H)
    assert ("suppressed", "cool_down") in [(d.outcome, d.reason) for d in later.decisions]


def test_unchanged_rules_keep_state_and_a_new_rule_starts_empty() -> None:
    first_bill = rule("first_bill", {"kind": "first", "type": "invoice_issued", "per": "product"})
    counted = rule("three", {"kind": "count", "type": "inquiry", "window": "1d", "min_count": 3})
    eng = engine(first_bill)
    store = DictStore()
    run(
        eng,
        store,
        ev("invoice_issued", T0, product="gas"),
        ev("inquiry", T0 + 1),
        ev("inquiry", T0 + 2),
    )
    new, _ = eng.switch_pack([store], pack(first_bill, counted), T0 + H)
    out = run(
        new, store, ev("invoice_issued", T0 + 2 * H, product="gas"), ev("inquiry", T0 + 2 * H)
    )
    assert [d.reason for d in out.decisions if d.rule == "first_bill"] == ["already_raised"]
    assert out.actions == []  # the new rule saw only one inquiry since the switch


def test_replay_switches_before_the_first_event_at_or_after_ts() -> None:
    a = pack(unresolved(1, "48h"))
    b = pack(unresolved(2, "48h", pending="cancel"))
    events = [dispute(T0, event_id="d1"), dispute(T0 + 10 * H, "R2", event_id="d2")]
    # the switch at T0 + 49 h: the event at T0 + 49 h advances the watermark first, d1's
    # timer (T0 + 48 h) fires under version 1; then the switch cancels d2's timer
    events.append(ev("inquiry", T0 + 49 * H))
    actions, decisions = replay_events(
        events, pack=a, changes=[(T0 + 49 * H, b)], config=EngineConfig()
    )
    assert [(x.evidence, x.rule_version) for x in actions] == [(["d1"], 1)]
    assert [
        (d.reason, d.evidence, d.decided_at) for d in decisions if d.reason == "rule_changed"
    ] == [("rule_changed", ["d2"], T0 + 49 * H)]


def test_replay_until_past_the_last_event_switches_at_ts() -> None:
    a = pack(unresolved(1, "48h"))
    b = pack(unresolved(2, "48h", pending="cancel"))
    events = [dispute(T0, event_id="d1"), dispute(T0 + 10 * H, "R2", event_id="d2")]
    actions, decisions = replay_events(
        events, pack=a, changes=[(T0 + 50 * H, b)], until_ms=T0 + 100 * H
    )
    assert [x.evidence for x in actions] == [["d1"]]  # due at T0 + 48 h, before the switch
    assert [d.evidence for d in decisions if d.reason == "rule_changed"] == [["d2"]]
    # without --until nothing pending fires and the switch is not reached
    actions, decisions = replay_events(events, pack=a, changes=[(T0 + 50 * H, b)])
    assert actions == [] and not [d for d in decisions if d.reason == "rule_changed"]


def test_switch_output_is_empty_for_an_unchanged_pack() -> None:
    eng = engine(unresolved(1))
    store = DictStore()
    run(eng, store, dispute(T0))
    new, out = eng.switch_pack([store], pack(unresolved(1)), T0 + H)
    assert out == EngineOutput() and new.retired == {}
    assert [a.rule_version for a in run(new, store, ev("inquiry", T0 + 49 * H)).actions] == [1]


def test_cli_replay_rules_change_is_deterministic_and_checks_versions(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from moments.cli import app
    from tests.support.event_lines import iso, line

    events = tmp_path / "events.jsonl"
    events.write_text(
        line("d1", "c1", "call", "dispute_opened", T0, reference="R1")
        + "\n"
        + line("d2", "c1", "call", "dispute_opened", T0 + 10 * H, reference="R2")
        + "\n",
        encoding="utf-8",
    )
    old, new, bad = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    old.write_text(yaml.safe_dump({"rules": [unresolved(1)]}), encoding="utf-8")
    new.write_text(yaml.safe_dump({"rules": [unresolved(2, pending="cancel")]}), encoding="utf-8")
    bad.write_text(yaml.safe_dump({"rules": [unresolved(1, "24h")]}), encoding="utf-8")
    runner = CliRunner()
    outputs = []
    for run_no in range(2):
        decisions = tmp_path / f"d{run_no}.jsonl"
        args = ["replay", str(events), "--rules", str(old), "--until", iso(T0 + 100 * H)]
        args += ["--actions-out", str(tmp_path / f"a{run_no}.jsonl")]
        args += ["--decisions-out", str(decisions), "--rules-change", f"{iso(T0 + 50 * H)}={new}"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        outputs.append(decisions.read_bytes())
    assert outputs[0] == outputs[1]
    assert [json.loads(x)["reason"] for x in outputs[0].splitlines()][-1] == "rule_changed"
    result = runner.invoke(
        app, ["replay", str(events), "--rules", str(old), "--rules-change", f"{iso(T0)}={bad}"]
    )
    assert result.exit_code == 2 and "unresolved" in result.output
    # a rollback (version 2, then the version 1 pack again) is a pack that ran before: taken
    back = [
        "--rules-change",
        f"{iso(T0 + 50 * H)}={new}",
        "--rules-change",
        f"{iso(T0 + 60 * H)}={old}",
    ]
    out = str(tmp_path / "back.jsonl")
    result = runner.invoke(
        app, ["replay", str(events), "--rules", str(old), "--actions-out", out, *back]
    )
    assert result.exit_code == 0, result.output


def test_a_changed_rule_forgets_its_window_and_a_readded_rule_starts_empty() -> None:
    def count(version: int, min_count: int) -> dict[str, Any]:
        when = {"kind": "count", "type": "inquiry", "window": "1d", "min_count": min_count}
        return rule("busy", when, version=version)

    eng = engine(count(1, 3))
    store = DictStore()
    run(eng, store, ev("inquiry", T0), ev("inquiry", T0 + 1))
    changed, _ = eng.switch_pack([store], pack(count(2, 2)), T0 + H)
    # the window restarts at the switch: one inquiry after it is not two
    assert run(changed, store, ev("inquiry", T0 + 2 * H)).actions == []
    assert [a.rule_version for a in run(changed, store, ev("inquiry", T0 + 3 * H)).actions] == [2]
    # removed, then added again: none of the old window is left
    other = rule("other", {"kind": "match", "type": "x"})
    gone, _ = changed.switch_pack([store], pack(other), T0 + 4 * H)
    run(gone, store, ev("inquiry", T0 + 5 * H))
    back, _ = gone.switch_pack([store], pack(other, count(3, 2)), T0 + 6 * H)
    assert run(back, store, ev("inquiry", T0 + 7 * H)).actions == []
    assert [a.rule_version for a in run(back, store, ev("inquiry", T0 + 8 * H)).actions] == [3]


def test_cli_replay_rules_change_needs_an_events_file() -> None:
    from typer.testing import CliRunner

    from moments.cli import app

    args = ["replay", "--from-topic", "t", "--rules-change", "2026-01-01T00:00:00Z=b.yaml"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--rules-change" in result.output


def test_a_timer_of_a_version_the_engine_does_not_know_still_fires() -> None:
    """E.g. a host restarted with only the new pack: the promise is kept, under the new version."""
    eng = engine(unresolved(1, "48h"))
    store = DictStore()
    run(eng, store, dispute(T0, event_id="d1"))
    new, _ = eng.switch_pack([store], pack(unresolved(2, "24h")), T0 + H)
    restarted = engine(unresolved(2, "24h"))  # knows nothing of version 1
    restarted.migrations, restarted.epoch = new.migrations, new.epoch
    [action] = run(restarted, store, ev("inquiry", T0 + 49 * H)).actions
    assert (action.triggered_at, action.rule_version) == (T0 + 48 * H, 2)


# -- the worker's switch path ------------------------------------------------------------


def test_a_timer_set_under_the_old_version_fires_under_it_after_a_restart() -> None:
    worker = Partition()
    worker.feed([ev("dispute_opened", T0, reference="R1")])
    at = worker.publish(case_pack("24h", 2))
    assert at == T0 + 1
    worker.feed([ev("inquiry", T0 + H, event_id="later")])  # switches
    worker.restart()
    assert len(worker.line.chain) == 2 and worker.line.pending is None
    assert worker.store.data[PACK_KEY]["versions"]["case_unresolved"] == 2
    worker.feed([ev("inquiry", T0 + 3 * D, event_id="much-later")])
    fired = [a for a in worker.out.actions if a.rule == "case_unresolved"]
    assert [(a.rule_version, a.triggered_at) for a in fired] == [(1, T0 + 2 * D)]


def test_an_idle_tick_switches_after_the_timers_due_by_then_fired_under_the_old_pack() -> None:
    worker = Partition()
    worker.feed([ev("dispute_opened", T0, reference="R1")])
    doc = copy.deepcopy(DEFAULT_DOC)
    doc["rules"] = [r for r in doc["rules"] if r["id"] != "case_unresolved"]
    worker.publish(yaml.safe_dump(doc, sort_keys=False))
    worker.line, out = tick(worker.library, worker.store, worker.line, T0 + 3 * D)
    # switched once; nothing refers to the old pack any more, so it is not kept
    assert worker.line.pending is None and worker.line.epoch == 1
    assert len(worker.line.chain) == 1
    # due before the switch: the follow-up (decided at the watermark), its escalation at its
    # due_by (docs/design.md 12.4) and the unresolved case's
    assert [a.rule for a in out.actions] == [
        "case_follow_up",
        "case_follow_up.when_overdue",
        "case_unresolved",
    ]
    assert not [d for d in out.decisions if d.reason == "rule_removed"]


def test_a_pack_that_changes_a_rule_without_a_new_version_is_refused_unless_it_ran_before() -> None:
    a = parse_rule_pack(DEFAULT_DOC)
    same_version = parse_rule_pack(yaml.safe_load(case_pack("24h", 1)))
    problems = refusal(a, same_version, "new", set())
    assert problems and "case_unresolved" in problems[0]
    assert refusal(a, parse_rule_pack(yaml.safe_load(case_pack("24h", 2))), "new", set()) == []
    assert refusal(same_version, a, pack_id(A_TEXT), {pack_id(A_TEXT)}) == []  # a rollback


def test_a_partition_without_events_switches_at_once_and_back_calls_a_switch_off() -> None:
    worker = Partition()
    assert worker.publish(case_pack("24h", 2)) is None
    assert worker.line.chain == (pack_id(case_pack("24h", 2)),)
    worker = Partition()
    worker.feed([ev("inquiry", T0)])
    assert worker.publish(case_pack("24h", 2)) == T0 + 1
    assert worker.publish(A_TEXT) is None and worker.line.chain == (pack_id(A_TEXT),)
