"""PartitionState, the worker's StateStore over a Faust table (a plain dict stands in for it)."""

from __future__ import annotations

from processors.faust_support import PartitionState


def test_writes_are_pending_until_commit_and_land_under_the_partition_prefix() -> None:
    table: dict[str, bytes] = {}
    store = PartitionState(table, 3)
    store.set("c:ann", {"seen": ["e1"]})
    assert store.get("c:ann") == {"seen": ["e1"]}
    assert table == {}
    assert store.commit() == 1
    assert table == {"3/e/c:ann": b'{"seen":["e1"]}'}
    assert PartitionState(table, 2).get("c:ann") is None


def test_falsy_values_survive_and_deletes_remove_the_key() -> None:
    table: dict[str, bytes] = {}
    store = PartitionState(table, 0)
    store.set("zero", 0)
    store.set("empty", [])
    store.set_worker("clock", [1, 2])
    store.commit()
    fresh = PartitionState(table, 0)
    assert (fresh.get("zero"), fresh.get("empty"), fresh.get_worker("clock")) == (0, [], [1, 2])
    fresh.delete("zero")
    assert fresh.get("zero") is None
    fresh.commit()
    assert "0/e/zero" not in table


def test_unchanged_values_cost_no_write_and_reads_are_fresh_objects() -> None:
    table: dict[str, bytes] = {"1/e/k": b'{"n":1}'}
    store = PartitionState(table, 1)
    value = store.get("k")
    assert value == {"n": 1}
    store.set("k", {"n": 1})
    assert store.commit() == 0
    value["n"] = 2  # mutating what was read never reaches the table
    assert PartitionState(table, 1).get("k") == {"n": 1}
