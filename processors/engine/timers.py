"""The partition's pending timers: sorted chunks of bounded size, and their index.

Every timer is an entry [deadline, customer_id, rule_id, key] (state.py names the
positions). Entries live in chunks (`TIMER_CHUNK_PREFIX` + chunk id), each a sorted
list of at most `TIMER_CHUNK_MAX` entries; the index (`TIMER_INDEX_KEY`) lists the
chunks as [lowest deadline, chunk id], sorted by deadline. Chunks cover consecutive
ranges of deadlines (a chunk's entries are no later than the next chunk's lowest
deadline), so the due timers are at the front, and a new timer goes into the last
chunk whose lowest deadline is not after its own.

Why chunks: a store writes a changed value whole (a changelog record, a batch's
encoding). Every event the engine holds and every action it follows adds a timer
near "now", so one value per hour of deadlines grew with the traffic and was
decoded and written again by every batch. A chunk is split in two when it passes
the maximum, and leaves the index when its last entry fires or is cancelled: what a
batch rewrites stays small however many timers are pending.

A chunk's index deadline is a lower bound of its entries (exact after it fires from
the front; a cancellation may leave it lower), which is all that finding the due
chunks and placing a new timer need. Entries of equal deadline may straddle two
chunks: the engine fires due timers through a heap, so only the set of due entries
matters, and a cancellation looks in each chunk that may hold its deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from processors.engine.interfaces import DictStore, StateStore
from processors.engine.state import (
    CLOCK_KEY,
    STATE_VERSION,
    TIMER_CHUNK_MAX,
    TIMER_CHUNK_PREFIX,
    TIMER_INDEX_KEY,
    VERSION_FIELD,
    upgrade_partition,
)

_CHUNK_KEYS: dict[int, str] = {}


def chunk_key(chunk: int) -> str:
    """The store key of chunk `chunk`."""
    key = _CHUNK_KEYS.get(chunk)
    if key is None:
        if len(_CHUNK_KEYS) >= 65_536:
            _CHUNK_KEYS.clear()
        key = _CHUNK_KEYS[chunk] = f"{TIMER_CHUNK_PREFIX}{chunk}"
    return key


# The searches below are written out rather than left to `bisect` with a key: compiled,
# they compare the deadlines as machine integers, where `bisect` calls the key and compares
# boxed values at every step (placing timers was among the engine's largest costs).


def _not_after(rows: list[list[Any]], t: int) -> int:
    """How many rows of a list sorted by first item (an index by lowest deadline, a chunk
    by deadline) have that item <= `t` (`bisect_right` on it)."""
    lo = 0
    hi = len(rows)
    while lo < hi:
        mid = (lo + hi) >> 1
        first: int = rows[mid][0]
        if t < first:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _place(entries: list[list[Any]], entry: list[Any], after_equal: bool) -> int:
    """Where `entry` goes in a sorted chunk, in list order (the deadline first, then the
    rest): after the entries equal to it (`bisect_right`) or before them (`bisect_left`)."""
    deadline: int = entry[0]
    lo = 0
    hi = len(entries)
    while lo < hi:
        mid = (lo + hi) >> 1
        other = entries[mid]
        other_deadline: int = other[0]
        if deadline != other_deadline:
            before = deadline < other_deadline
        elif after_equal:
            before = entry < other
        else:
            before = entry <= other
        if before:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _unused_chunk_id(index: list[list[int]]) -> int:
    """One more than the highest chunk id in the index (a loop over machine integers, where
    `max` over a generator boxes every id into a list first)."""
    highest: int = index[0][1]
    for item in index:
        number: int = item[1]
        if number > highest:
            highest = number
    return highest + 1


def _reader(store: StateStore) -> tuple[Callable[[str], Any], bool]:
    """The store's `get`, and whether its values are changed in place (a DictStore: its
    dict's own `get`, and nothing to write back)."""
    if type(store) is DictStore:
        return store.data.get, True
    return store.get, False


def add_timer(store: StateStore, entry: list[Any]) -> None:
    """Put the timer `entry` into the partition's chunks."""
    get, in_place = _reader(store)
    index: list[list[int]] | None = get(TIMER_INDEX_KEY)
    deadline: int = entry[0]
    if not index:
        store.set(TIMER_INDEX_KEY, [[deadline, 0]])
        store.set(chunk_key(0), [entry])
        return
    index_changed = False
    last = len(index) - 1
    if index[last][0] <= deadline:  # the usual case: no later than the latest chunk
        at = last
    else:
        at = _not_after(index, deadline) - 1
        if at < 0:  # earlier than every chunk: the first one takes it
            at = 0
            index[0][0] = deadline
            index_changed = True
    key = chunk_key(index[at][1])
    entries: list[list[Any]] = get(key)
    last_deadline: int = entries[-1][0]
    if last_deadline < deadline or (last_deadline == deadline and entries[-1] < entry):
        entries.append(entry)
    else:
        entries.insert(_place(entries, entry, True), entry)
    if len(entries) > TIMER_CHUNK_MAX:
        half = len(entries) // 2
        upper = entries[half:]
        del entries[half:]
        new = _unused_chunk_id(index)
        index.insert(at + 1, [upper[0][0], new])
        store.set(chunk_key(new), upper)
        index_changed = True
    if not in_place:
        store.set(key, entries)
        if index_changed:
            store.set(TIMER_INDEX_KEY, index)


def first_due(store: StateStore, watermark: int) -> bool:
    """Whether a timer is due at `watermark` (a look at the first chunk only)."""
    get = _reader(store)[0]
    index: list[list[int]] | None = get(TIMER_INDEX_KEY)
    if not index or index[0][0] > watermark:
        return False
    entries: list[list[Any]] | None = get(chunk_key(index[0][1]))
    return not entries or entries[0][0] <= watermark


def take_due(store: StateStore, watermark: int) -> list[list[Any]]:
    """Remove and return every timer with deadline <= `watermark` (in chunk order)."""
    get, in_place = _reader(store)
    index: list[list[int]] | None = get(TIMER_INDEX_KEY)
    due: list[list[Any]] = []
    if not index:
        return due
    changed = False
    while index and index[0][0] <= watermark:
        key = chunk_key(index[0][1])
        entries: list[list[Any]] = get(key) or []
        ready = _not_after(entries, watermark)
        if ready < len(entries):
            if ready:
                due.extend(entries[:ready])
                del entries[:ready]
                if not in_place:
                    store.set(key, entries)
            if index[0][0] != entries[0][0]:
                index[0][0] = entries[0][0]
                changed = True
            break
        due.extend(entries)
        store.delete(key)
        index.pop(0)
        changed = True
    if changed and not in_place:
        store.set(TIMER_INDEX_KEY, index)
    return due


def cancel_timer(store: StateStore, entry: list[Any]) -> bool:
    """Remove the timer `entry`; whether it was pending."""
    get, in_place = _reader(store)
    index: list[list[int]] | None = get(TIMER_INDEX_KEY)
    if not index:
        return False
    deadline: int = entry[0]
    at = _not_after(index, deadline) - 1
    while at >= 0:
        key = chunk_key(index[at][1])
        entries: list[list[Any]] = get(key) or []
        found = _place(entries, entry, False)
        if found < len(entries) and entries[found] == entry:
            del entries[found]
            if entries:
                if not in_place:
                    store.set(key, entries)
            else:
                store.delete(key)
                del index[at]
                if not in_place:
                    store.set(TIMER_INDEX_KEY, index)
            return True
        if index[at][0] < deadline:
            return False  # an earlier chunk holds only earlier deadlines
        at -= 1
    return False


def _upgraded(store: StateStore) -> None:
    """A partition of an older layout brought up to date first: a pack switch or an erasure
    may walk the timers before the partition's next event does."""
    clock: dict[str, Any] | None = store.get(CLOCK_KEY)
    if clock is not None and clock.get(VERSION_FIELD) != STATE_VERSION:
        upgrade_partition(store, clock)


def all_timers(store: StateStore) -> Iterator[list[Any]]:
    """Every pending timer, chunk by chunk (sorted within a chunk)."""
    _upgraded(store)
    for _, chunk in store.get(TIMER_INDEX_KEY) or []:
        yield from store.get(chunk_key(chunk)) or []


def remove_timers(store: StateStore, drop: Callable[[list[Any]], bool]) -> int:
    """Remove every pending timer for which `drop` is true; how many went."""
    _upgraded(store)
    index: list[list[int]] | None = store.get(TIMER_INDEX_KEY)
    if not index:
        return 0
    removed = 0
    kept_index: list[list[int]] = []
    for low, chunk in index:
        key = chunk_key(chunk)
        entries: list[list[Any]] = store.get(key) or []
        kept = [entry for entry in entries if not drop(entry)]
        if len(kept) != len(entries):
            removed += len(entries) - len(kept)
            if kept:
                store.set(key, kept)
            else:
                store.delete(key)
        if kept:
            kept_index.append([low, chunk])
    if kept_index != index:
        store.set(TIMER_INDEX_KEY, kept_index)
    return removed
