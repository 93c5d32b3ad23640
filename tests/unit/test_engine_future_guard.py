"""The future-dated guard: a wrong clock moves the watermark at most to record time + skew."""

from __future__ import annotations

from processors.engine import DictStore, Engine, future_cap, load_rule_pack
from tests.support.engine import T0, D, H, ev, fired, run_settled

YEAR_9999 = 253_402_214_400_000  # 9999-12-31T00:00:00Z


def test_future_cap_only_for_events_beyond_the_skew() -> None:
    assert future_cap(T0 + H, T0, H) is None
    assert future_cap(T0 + H + 1, T0, H) == T0 + H
    assert future_cap(YEAR_9999, T0, H) == T0 + H


def test_an_event_dated_9999_fires_no_pending_timer_and_is_applied_with_its_own_time() -> None:
    engine = Engine(load_rule_pack())
    store = DictStore()
    opened = ev("dispute_opened", T0, customer="c1", reference="R-1")
    assert fired(run_settled(engine, store, opened)) == ["case_follow_up"]
    bogus = ev("feedback_given", YEAR_9999, customer="c2", text="hello")
    out = engine.process(store, bogus, future_cap(YEAR_9999, T0 + H, H))
    assert fired(out) == ["route_feedback"]  # applied, with its own time
    assert out.actions[0].triggered_at == YEAR_9999
    assert engine.watermark(store) == T0 + 2 * H - engine.config.allowed_lateness_ms
    # The case is resolved in time: no escalation, before or after.
    resolved = ev("dispute_resolved", T0 + 2 * H, customer="c1", reference="R-1")
    later = ev("inquiry", T0 + 3 * D, customer="c3")
    assert fired(engine.process(store, resolved)) == []
    assert "case_unresolved" not in fired(engine.process(store, later))


def test_without_the_cap_the_same_event_fires_every_pending_timer() -> None:
    engine = Engine(load_rule_pack())
    store = DictStore()
    run_settled(engine, store, ev("dispute_opened", T0, customer="c1", reference="R-1"))
    out = engine.process(store, ev("inquiry", YEAR_9999, customer="c2"))
    # what the guard prevents (the follow-up's escalation at its due_by too, section 12.4)
    assert fired(out) == ["case_follow_up.when_overdue", "case_unresolved"]
