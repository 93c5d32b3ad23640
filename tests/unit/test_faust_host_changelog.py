"""PartitionState, BatchState and StagedTable (processors.faust_host.changelog) over a faked
Faust table."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, MutableMapping
from types import SimpleNamespace
from typing import Any, cast

import pytest
from faust.serializers.codecs import dumps as faust_dumps
from faust.streams import current_event
from faust.types import TP

from processors.faust_host.changelog import BatchSpoiled, BatchState, PartitionState, StagedTable


class FakeStore(dict[str, bytes]):
    """A Faust store: a mapping that also keeps the persisted changelog offset."""

    persisted: dict[Any, int]

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted = {**getattr(self, "persisted", {}), tp: offset}


class FakeTable:
    """What StagedTable uses of a Faust table: the local store `data`, its changelog topic
    name and the app's producer (which records what it is sent)."""

    def __init__(self) -> None:
        self.data = FakeStore()
        self.changelog: list[tuple[int, str, bytes | None]] = []
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: "app-state-changelog")
        self.key_type, self.key_serializer = str, "json"
        self.app = SimpleNamespace(
            producer=SimpleNamespace(send=self._send),
            serializers=SimpleNamespace(dumps_key=self._dumps_key),
        )

    @staticmethod
    def _dumps_key(key_type: type, key: str, *, serializer: str) -> bytes:
        assert (key_type, serializer) == (str, "json")
        return json.dumps(key).encode()

    async def _send(self, topic: str, key: bytes, value: Any, partition: int, *_: Any) -> Any:
        assert topic == "app-state-changelog"
        self.changelog.append((partition, json.loads(key), value))
        future = asyncio.get_running_loop().create_future()
        future.set_result(SimpleNamespace(offset=len(self.changelog) - 1))
        return future


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

    async def send() -> int:
        detached = staged.take()
        futures = await staged.send(detached)
        await asyncio.sleep(0)  # the done-callbacks run
        assert getattr(table.data, "persisted", {}) == {}  # recorded once applied
        staged.apply(detached)
        return len(futures)

    assert asyncio.run(send()) == 2
    assert table.changelog == [(1, "1/e/p:clock", b'{"max":2}'), (2, "2/e/c:bob", None)]
    assert staged.take() == {}
    assert table.data.persisted == {
        TP("app-state-changelog", 1): 0,
        TP("app-state-changelog", 2): 1,
    }


def _faust_json_key(key_type: type, key: str, *, serializer: str) -> bytes:
    """Faust's own JSON key codec (orjson when installed), as a real table's app has it."""
    return cast(bytes, faust_dumps(serializer, key))


@pytest.mark.parametrize(
    "dumps_key",
    [_faust_json_key, FakeTable._dumps_key],
    ids=["faust-json", "json-escaping-non-ascii"],
)
def test_changelog_keys_are_the_bytes_the_tables_own_key_codec_writes(
    dumps_key: Callable[..., bytes],
) -> None:
    table = FakeTable()
    codec_keys: list[str] = []

    def counted_dumps_key(key_type: type, key: str, *, serializer: str) -> bytes:
        codec_keys.append(key)
        return dumps_key(key_type, key, serializer=serializer)

    table.app.serializers.dumps_key = counted_dumps_key
    raw_keys: list[bytes] = []
    send = table.app.producer.send

    async def recording_send(topic: str, key: bytes, *args: Any) -> Any:
        raw_keys.append(key)
        return await send(topic, key, *args)

    table.app.producer.send = recording_send
    staged = StagedTable(table)
    customers = ["CUST-1", "Zoë", 'say "hi"', "back\\slash", "tab\there", "\u2028\x7f", "😀"]
    for customer in customers:
        store = PartitionState(staged, 4)
        store.set(f"c/{customer}", 1)
        store.commit()
    asyncio.run(staged.send(staged.take()))
    keys = [f"4/e/c/{customer}" for customer in customers]
    assert raw_keys == [dumps_key(str, key, serializer="json") for key in keys]
    assert [key for _, key, _ in table.changelog] == keys
    escaped = ['4/e/c/say "hi"', "4/e/c/back\\slash", "4/e/c/tab\there"]
    if dumps_key is _faust_json_key:  # the probe, then only the keys JSON must escape
        assert codec_keys[1:] == escaped
    else:  # a codec that escapes non-ASCII writes every key itself
        assert codec_keys[1:] == keys


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


def test_a_batch_decodes_each_key_once_and_writes_its_changes_once_at_the_end() -> None:
    table = FakeTable()
    table.data.update({"2/e/c:ann": b'{"n":1}', "2/e/same": b"[1]", "2/e/gone": b"0"})
    staged = StagedTable(table)
    reads: list[str] = []
    read = staged.reader()

    def counted_read(key: str) -> Any:
        reads.append(key)
        return read(key)

    staged.reader = lambda: counted_read  # type: ignore[method-assign]
    store = BatchState(staged, 2)
    for n in range(2, 5):  # three events of the batch
        ann = store.get("c:ann")
        assert ann is not None and ann["n"] == n - 1  # the previous event's change, shared
        ann["n"] = n
        store.set("c:ann", ann)
        assert store.get("same") == [1]
        store.commit()  # the end of an event: nothing written yet
    store.set_worker("applied", 7)
    store.delete("gone")
    store.delete("never")  # deleting a missing key is no change
    assert store.get("gone") is None and store.get_worker("applied") == 7
    assert table.data["2/e/c:ann"] == b'{"n":1}' and staged.take() == {}
    assert sorted(reads) == ["2/e/c:ann", "2/e/same"]  # once each, for three events
    assert store.flush() == 3
    assert table.data == {"2/e/c:ann": b'{"n":4}', "2/e/same": b"[1]", "2/w/applied": b"7"}
    assert staged.take() == {2: {"2/e/c:ann": b'{"n":4}', "2/w/applied": b"7", "2/e/gone": None}}
    assert store.flush() == 0  # flushed: a new batch starts from the table


def test_a_batch_keeps_a_value_changed_in_place_as_a_dict_store_would() -> None:
    table = FakeTable()
    table.data["0/e/k"] = b'{"n":1}'
    store = BatchState(StagedTable(table), 0)
    value = store.get("k")
    assert value is not None
    value["n"] = 2  # changed without `set`: the later events see it, so the table keeps it
    assert store.get("k") == {"n": 2}
    assert store.flush() == 1
    assert table.data["0/e/k"] == b'{"n":2}'


def test_an_engine_failure_spoils_the_batch_and_nothing_reaches_the_table() -> None:
    table = FakeTable()
    table.data["5/e/k"] = b'{"n":1}'
    staged = StagedTable(table)
    store = BatchState(staged, 5)
    value = store.get("k")
    assert value is not None
    value["n"] = 99  # the engine's change in place before it raised
    with pytest.raises(BatchSpoiled):
        store.discard_engine_writes()
    # the host drops the instance; the table still holds what the batch started from
    assert table.data["5/e/k"] == b'{"n":1}' and staged.take() == {}
    assert PartitionState(staged, 5).get("k") == {"n": 1}


class PersistentStore(MutableMapping[str, bytes]):
    """A rocksdb-like store: survives a crash, files each key under the current event's
    partition, records the changelog offset it holds."""

    def __init__(self) -> None:
        self.by_partition: dict[int, dict[str, bytes]] = {}
        self.log: list[tuple[str, Any]] = []

    def _partition(self) -> int:
        event = current_event()
        assert event is not None, "a persistent store needs the current event"
        return int(event.message.partition)

    def __getitem__(self, key: str) -> bytes:
        for data in self.by_partition.values():
            if key in data:
                return data[key]
        raise KeyError(key)

    def __setitem__(self, key: str, value: bytes) -> None:
        self.by_partition.setdefault(self._partition(), {})[key] = value
        self.log.append(("set", key))

    def __delitem__(self, key: str) -> None:
        for data in self.by_partition.values():
            data.pop(key, None)
        self.log.append(("del", key))

    def __iter__(self) -> Iterator[str]:
        return iter([k for data in self.by_partition.values() for k in data])

    def __len__(self) -> int:
        return sum(len(data) for data in self.by_partition.values())

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.log.append(("persisted", (tp.partition, offset)))


def test_a_persistent_store_holds_only_state_whose_changelog_was_acknowledged() -> None:
    table = FakeTable()
    table.data = PersistentStore()  # type: ignore[assignment]
    table.data.by_partition[4] = {"4/e/old": b"1"}
    staged = StagedTable(table)
    store = PartitionState(staged, 4)
    assert store.get("old") == 1
    store.set("c:ann", {"n": 1})
    store.delete("old")
    store.set_worker("applied", 9)
    store.commit()
    assert table.data.log == []  # nothing local before the changelog is acknowledged
    assert PartitionState(staged, 4).get("c:ann") == {"n": 1}  # read from the overlay
    assert PartitionState(staged, 4).get("old") is None
    detached = staged.take()
    later = PartitionState(staged, 4)
    later.set("c:ann", {"n": 2})  # staged after the take: waits for the next commit
    later.commit()

    async def acknowledged() -> None:
        await asyncio.gather(*await staged.send(detached))

    asyncio.run(acknowledged())
    staged.apply(detached)
    assert table.data.by_partition[4] == {"4/e/c:ann": b'{"n":1}', "4/w/applied": b"9"}
    assert table.data.log[-1] == ("persisted", (4, 2))  # after the data it covers
    assert PartitionState(staged, 4).get("c:ann") == {"n": 2}  # the newer, still pending
    assert current_event() is None


async def _step(log: list[Any], gate: asyncio.Future[int]) -> int:
    log.append("start")
    await asyncio.sleep(0)
    log.append("after a yield")
    value = await gate
    log.append(("gate", value))
    return value * 2


def test_a_callback_that_suspends_finishes_as_a_task_would_run_it() -> None:
    """WorkerConsumer's drain loop runs a message callback's first step inline and, if it
    suspends, the rest through `_resumed` (raced against suspend_flow, as Faust does)."""
    from processors.faust_host.consumer import _resumed

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        log: list[Any] = []
        gate: asyncio.Future[int] = loop.create_future()
        started = _step(log, gate)
        rest = asyncio.ensure_future(_resumed(started, started.send(None)))
        await asyncio.sleep(0.01)
        assert log == ["start", "after a yield"] and not rest.done()
        gate.set_result(21)
        assert await rest == 42 and log[-1] == ("gate", 21)

        stuck: asyncio.Future[int] = loop.create_future()
        other = _step([], stuck)
        cancelled = asyncio.ensure_future(_resumed(other, other.send(None)))
        await asyncio.sleep(0.01)
        cancelled.cancel()  # suspend_flow won the race: the callback is cancelled inside
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert stuck.cancelled()

    asyncio.run(scenario())
