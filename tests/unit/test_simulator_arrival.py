"""How simulated records arrive (docs/design.md, section 11): in time order, except a few
a little late (inside the allowed lateness), a few far too late, and some delivered twice,
the same record; the file is the arrival order and the same for a seed, byte for byte."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from producers.simulator import DAY, HOUR, MINUTE, Rates, simulate, write_simulation
from schemas.records import InteractionEvent
from tests.support.simulated import START, arrivals

IN_ORDER = Rates(late=0.0, too_late=0.0, redelivered=0.0, redelivered_late=0.0)


def test_same_seed_same_bytes_with_late_and_repeated_records(tmp_path: Path) -> None:
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"

    write_simulation(first, 600, 45, 21, start=START, workers=1)
    write_simulation(second, 600, 45, 21, start=START, workers=1)

    lines = first.read_bytes().splitlines()
    assert first.read_bytes() == second.read_bytes()
    assert len(lines) > len(set(lines))  # some records delivered twice


def test_records_behind_the_stream_are_a_little_late_far_too_late_or_repeats() -> None:
    kinds: Counter[str] = Counter()
    for arrival in arrivals():
        behind = arrival.behind_ms
        if arrival.copy:
            assert 30 * MINUTE < behind <= 13 * HOUR or behind > 7 * DAY, arrival
            kinds["again, hours later" if behind <= 13 * HOUR else "again, days later"] += 1
        elif behind:
            assert behind <= 5 * MINUTE or behind > 7 * DAY, arrival
            kinds["late" if behind <= 5 * MINUTE else "too late"] += 1
    total = len(arrivals())

    # Modest: a percent or two a little late, a handful far too late or delivered twice.
    assert 0.003 < kinds["late"] / total < 0.04, kinds
    assert 3 <= kinds["too late"] < 0.002 * total, kinds
    assert 0.001 < kinds["again, hours later"] / total < 0.01, kinds
    assert 2 <= kinds["again, days later"] < 0.002 * total, kinds


def test_a_repeated_delivery_is_the_same_record_later_in_the_file() -> None:
    first_seen: dict[str, tuple[int, InteractionEvent]] = {}
    repeats = 0
    for arrival in arrivals():
        event = arrival.event
        if arrival.copy:
            position, original = first_seen[event.event_id]
            assert event == original and arrival.position > position
            repeats += 1
        else:
            first_seen[event.event_id] = (arrival.position, event)
    assert repeats > 0


def test_late_records_arrive_behind_later_records_of_their_own_customer_too() -> None:
    latest: dict[str, int] = {}
    behind_own = 0
    for arrival in arrivals():
        event = arrival.event
        if not arrival.copy and event.occurred_at < latest.get(event.customer_id, 0):
            behind_own += 1
        latest[event.customer_id] = max(latest.get(event.customer_id, 0), event.occurred_at)
    assert behind_own >= 5


def test_without_late_or_repeated_deliveries_records_come_in_time_order_once() -> None:
    events = list(simulate(300, 40, seed=4, start=START, rates=IN_ORDER))

    times = [e.occurred_at for e in events]
    assert times == sorted(times)
    assert len({e.event_id for e in events}) == len(events)
