"""The partition's timer chunks (processors/engine/timers.py) against a plain sorted list:
whatever the order of additions, cancellations and firings, the same timers are pending and
the same ones fire, and no chunk grows past its maximum."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.engine.interfaces import DictStore
from processors.engine.state import TIMER_CHUNK_MAX, TIMER_CHUNK_PREFIX, TIMER_INDEX_KEY
from processors.engine.timers import add_timer, all_timers, cancel_timer, first_due, take_due
from tests.support.engine import JsonStore

#: (operation, deadline, customer): few deadlines and customers, so ties and splits abound.
OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["add", "add", "add", "cancel", "fire"]),
        st.integers(0, 40),
        st.integers(0, 30),
    ),
    max_size=1500,
)


def _check_chunks(store: Any) -> None:
    index = store.get(TIMER_INDEX_KEY) or []
    assert index == sorted(index, key=lambda item: item[0])
    previous_last = None
    for low, chunk in index:
        entries = store.get(f"{TIMER_CHUNK_PREFIX}{chunk}")
        assert entries and entries == sorted(entries) and len(entries) <= TIMER_CHUNK_MAX
        assert low <= entries[0][0]  # a lower bound of its deadlines
        if previous_last is not None:
            assert previous_last[0] <= entries[0][0]  # consecutive ranges of deadlines
        previous_last = entries[-1]


@settings(max_examples=60, deadline=None)
@given(operations=OPERATIONS, json_store=st.booleans())
def test_chunks_hold_and_fire_what_a_sorted_list_would(
    operations: list[tuple[str, int, int]], json_store: bool
) -> None:
    store: Any = JsonStore() if json_store else DictStore()
    reference: list[list[Any]] = []
    watermark = -1
    for operation, deadline, customer in operations:
        entry = [deadline, f"c{customer}", "r", "k"]
        if operation == "add" and deadline > watermark and entry not in reference:
            add_timer(store, entry)
            reference.append(entry)
        elif operation == "cancel":
            assert cancel_timer(store, entry) == (entry in reference)
            if entry in reference:
                reference.remove(entry)
        elif operation == "fire" and deadline > watermark:
            watermark = deadline
            expected = sorted(e for e in reference if e[0] <= watermark)
            assert first_due(store, watermark) == bool(expected)
            assert sorted(take_due(store, watermark)) == expected
            reference = [e for e in reference if e[0] > watermark]
        _check_chunks(store)
    assert sorted(all_timers(store)) == sorted(reference)


def test_a_thousand_timers_at_one_deadline_split_and_fire_together() -> None:
    store = DictStore()
    for n in range(1000):
        add_timer(store, [5, f"c{n:04d}", "r", "k"])
    assert len(store.data[TIMER_INDEX_KEY]) > 1000 // TIMER_CHUNK_MAX
    assert cancel_timer(store, [5, "c0000", "r", "k"]) and cancel_timer(
        store, [5, "c0999", "r", "k"]
    )
    assert len(take_due(store, 5)) == 998
    assert not store.data.get(TIMER_INDEX_KEY)
