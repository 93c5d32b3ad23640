"""The simulated teams (docs/design.md 12): each destination acknowledges and completes with
its own habits and leaves some undone, the status events they send are ones the engine
applies, and an engagement rule's effect follows only the actions that were done."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from common.settings import Settings
from moments.report import simulation_rates
from processors.config import engine_config
from processors.replay import replay_file
from producers.simulator import DAY, Effects, Rates, json_line, simulate, write_simulation
from producers.simulator.habits import Plan
from producers.simulator.teams import STATUS_SOURCE, RaisedAction, Teams, act
from producers.simulator.world import World, start_day_ms
from schemas.records import InteractionEvent


def fates(destination: str, n: int = 2000) -> Counter[str]:
    teams = Teams()
    counts: Counter[str] = Counter()
    for i in range(n):
        fate = teams.fate(7, f"CUST-{i:06d}", "some_rule", destination, i * 1000)
        counts["acknowledged"] += fate.acknowledged_ms is not None
        counts["done"] += fate.done_ms is not None
        counts["completed"] += fate.completed
        if fate.done_ms is not None:
            assert fate.acknowledged_ms is not None and fate.done_ms > fate.acknowledged_ms
    return counts


def test_each_destination_has_its_own_habits_and_leaves_some_undone() -> None:
    care, billing, recognition = fates("care"), fates("billing"), fates("recognition")
    assert care["acknowledged"] > billing["acknowledged"] > recognition["acknowledged"]
    assert care["done"] > billing["done"] > recognition["done"]
    assert recognition["acknowledged"] < 2000 * 0.6  # recognition often never acts
    assert 0 < care["done"] < 2000  # even care leaves a few undone
    assert 0 < care["completed"] < care["done"]  # some end declined or unreachable


def test_a_fate_is_deterministic_per_seed() -> None:
    teams = Teams()
    assert teams.fate(7, "CUST-000001", "r", "care", 5) == teams.fate(
        7, "CUST-000001", "r", "care", 5
    )
    assert len({teams.fate(s, "CUST-000001", "r", "care", 5) for s in range(20)}) > 1


def test_the_effect_applies_only_to_done_actions() -> None:
    teams = Teams()
    rates = Rates(effects=Effects(explain_first_bill=1.0), teams=teams)
    world = World(300, 60, 3, start_day_ms(None), rates)
    out: list[Plan] = []
    outcomes: Counter[bool] = Counter()
    for customer in world.customers:
        ts = world.start_ms + DAY + 2 * 3_600_000
        product = world.open_product(customer, "broadband", world.start_ms + DAY // 2, out)
        customer.explained.clear()
        world.invoice(customer, product, ts, out)
        fate = teams.fate(3, customer.customer_id, "explain_first_bill", "billing", ts)
        if fate.completed:
            assert fate.done_ms is not None
            assert customer.explained == [ts + fate.done_ms]  # from the time it was done
        else:
            assert customer.explained == []
        outcomes[fate.completed] += 1
    assert outcomes[True] > 0 and outcomes[False] > 0


def test_act_sends_status_events_after_the_trigger_and_feeds_them_back() -> None:
    def event(n: int, at: int) -> InteractionEvent:
        return InteractionEvent(f"e{n}", f"CUST-{n:06d}", "web", "inquiry_submitted", at)

    stream = [event(n, n * 3_600_000) for n in range(1, 400)]
    seen: list[InteractionEvent] = []

    def watch(e: InteractionEvent) -> list[RaisedAction]:
        seen.append(e)
        if e.source == STATUS_SOURCE:
            return []
        return [(f"act-{e.event_id}", e.customer_id, "r", "care", e.occurred_at, [e.event_id])]

    end = 500 * 3_600_000
    out = list(act(stream, Teams(), 7, watch, end))
    assert out == seen  # every status event is fed to the engine in the order it is sent
    statuses = [e for e in out if e.source == STATUS_SOURCE]
    kinds = Counter(e.type for e in statuses)
    assert kinds["action_acknowledged"] > kinds["action_done"] > 0
    assert kinds["action_acknowledged"] < len(stream)  # some are never acknowledged
    triggered = {f"act-{e.event_id}": e.occurred_at for e in stream}
    for status in statuses:
        assert status.channel == "other" and status.reference in triggered
        assert triggered[status.reference] < status.occurred_at < end
    times = [e.occurred_at for e in out]
    assert times == sorted(times)
    assert out == list(act(stream, Teams(), 7, watch, end))[: len(out)]


def test_the_engine_applies_every_simulated_status(tmp_path: Path) -> None:
    settings = Settings(holdout_percent=10.0)
    rates = simulation_rates(settings, [])
    events = tmp_path / "events.jsonl"
    write_simulation(events, 400, 60, 3, rates=rates, workers=1)
    again = list(simulate(400, 60, 3, rates=rates))
    lines = events.read_text().splitlines()
    assert [json_line(e) for e in again] == lines  # file and stream agree: deterministic
    sent = Counter(json.loads(line)["type"] for line in lines)
    assert sent["action_acknowledged"] > 0 and sent["action_done"] > 0
    status_out = tmp_path / "status.jsonl"
    replay_file(
        events,
        actions_out=tmp_path / "a.jsonl",
        status_out=status_out,
        workers=1,
        config=engine_config(settings),  # the engine the simulation watched
        # statuses are applied once the watermark passes them: past the end, all of them
        until_ms=start_day_ms(None) + 61 * DAY,
    )
    applied = Counter(json.loads(line)["status"] for line in status_out.read_text().splitlines())
    assert applied["acknowledged"] == sent["action_acknowledged"]
    assert applied["reassigned"] == sent["action_reassigned"]
    assert applied["done"] == sent["action_done"]
    assert applied["open"] > applied["done"]  # some never done
