"""PartitionState and StagedTable, the worker's StateStore over a Faust table (faked here)."""

from __future__ import annotations

from typing import Any

from processors.faust_support import PartitionState, StagedTable


class FakeTable:
    """What StagedTable uses of a Faust table: `get`, the local store `data`, `send_changelog`."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.changelog: list[tuple[int, str, bytes | None]] = []

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def send_changelog(self, partition: int, key: str, value: Any, **_: Any) -> None:
        self.changelog.append((partition, key, value))


def test_writes_are_pending_until_commit_and_land_under_the_partition_prefix() -> None:
    table = FakeTable()
    staged = StagedTable(table)
    store = PartitionState(staged, 3)
    store.set("c:ann", {"seen": ["e1"]})
    assert store.get("c:ann") == {"seen": ["e1"]}
    assert table.data == {}
    assert store.commit() == 1
    assert table.data == {"3/e/c:ann": b'{"seen":["e1"]}'}
    assert PartitionState(staged, 2).get("c:ann") is None


def test_changelog_records_wait_for_send_and_are_coalesced_per_key() -> None:
    table = FakeTable()
    staged = StagedTable(table)
    for n in range(3):
        store = PartitionState(staged, 1)
        store.set("p:clock", {"max": n})
        store.commit()
    gone = PartitionState(staged, 2)
    gone.delete("c:bob")
    gone.commit()
    assert table.changelog == []
    assert staged.send(staged.take()) == 2
    assert table.changelog == [(1, "1/e/p:clock", b'{"max":2}'), (2, "2/e/c:bob", None)]
    assert staged.take() == {}


def test_falsy_values_survive_and_deletes_remove_the_key() -> None:
    table = FakeTable()
    staged = StagedTable(table)
    store = PartitionState(staged, 0)
    store.set("zero", 0)
    store.set("empty", [])
    store.set_worker("clock", [1, 2])
    store.commit()
    fresh = PartitionState(staged, 0)
    assert (fresh.get("zero"), fresh.get("empty"), fresh.get_worker("clock")) == (0, [], [1, 2])
    fresh.delete("zero")
    assert fresh.get("zero") is None
    fresh.commit()
    assert "0/e/zero" not in table.data


def test_unchanged_values_cost_no_write_and_reads_are_fresh_objects() -> None:
    table = FakeTable()
    table.data["1/e/k"] = b'{"n":1}'
    staged = StagedTable(table)
    store = PartitionState(staged, 1)
    value = store.get("k")
    assert value == {"n": 1}
    store.set("k", {"n": 1})
    assert store.commit() == 0
    value["n"] = 2  # mutating what was read never reaches the table
    assert PartitionState(staged, 1).get("k") == {"n": 1}
    assert staged.take() == {}
