"""Changelog staging: per-partition engine state in a Faust table, sent at offset commits.

`PartitionState` and `BatchState` are the worker's side of
`processors.engine.StateStore`: the state of ONE interactions partition, kept
in a changelog-backed Faust table under keys `"<partition>/e/<engine key>"`
(the engine's own keys, including its partition-level ones such as the
watermark) and `"<partition>/w/<name>"` (the worker's bookkeeping). Values are
stored as JSON bytes (orjson, sorted keys), so falsy values (`0`, `[]`)
survive recovery (Faust's memory store drops recovered keys whose value is
falsy) and the bytes a batch or an event started from are what an engine
failure falls back to.

`PartitionState` decodes the values an event reads afresh for that event (the
engine cannot change the table by mutating what it read), buffers its writes
and applies them with `commit()` inside the stream iteration of that event, so
an event whose processing fails leaves no half-written state behind.
`BatchState` keeps the decoded values and the writes of a whole batch of
events in memory and applies them once at its end (`flush()`): each key costs
one decode and one encode per batch instead of per event, but an event whose
processing fails spoils the batch (`BatchSpoiled`: the host drops the
instance, nothing of the batch having reached the table, and handles the
batch again per event). `StagedTable` stages their changelog records
(addressed explicitly to the partition, coalesced per key) until the next
offset commit, when `WorkerConsumer` sends them after the output of those
events is acknowledged. This costs a record per changed key per commit
instead of per event. A memory store gets the writes at once; a persistent
(rocksdb) store, which survives a kill, only once their changelog records are
acknowledged (reads see them meanwhile in an overlay), so it never holds the
state of an event whose output was not delivered.

This module writes a table's local store directly, never through
`Table.__setitem__` (which Faust forbids inside `take()`); the caller must make
the event being handled the current event (a rocksdb store files each key
under its partition). Staged changelog records carry their partition
explicitly. The Faust internals it relies on are listed in
`processors.faust_host.internals`. It knows nothing of rules or Avro.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import orjson
from faust.stores.memory import Store as MemoryStore
from faust.streams import _current_event
from faust.types import TP, EventT

from processors.faust_host.output import OutputDelivery, OutputSender

_DELETED = object()
#: Sorted keys make an unchanged value the same bytes (no changelog record for it).
_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


class StagedTable:
    """A Faust table whose changelog records wait for the next offset commit.

    `write` stages one changelog record per key and partition (a key
    written by many events between two commits costs one record) and changes a
    memory store at once (inside the stream iteration of the event, as Faust
    requires); a persistent store only in `apply`, after the changelog is
    acknowledged (until then `get` reads the write from an overlay).
    `WorkerConsumer` sends the staged records when Faust commits offsets: first
    it waits until everything produced so far (the actions and decisions of
    those events) is acknowledged, then it sends the records, then Faust
    flushes and commits. So the changelog never holds state whose output was
    not delivered, and never lags the committed offsets.
    """

    def __init__(self, table: Any, sender: OutputSender | None = None) -> None:
        self.table = table
        #: Produces the changelog with librdkafka when set (else through Faust's producer).
        self.sender = sender
        self._staged: dict[int, dict[str, bytes | None]] = {}
        self._local: Any = None
        #: Persistent stores only: writes whose changelog is not acknowledged yet.
        self._overlay: dict[str, bytes | None] | None = None
        #: Changelog offsets acknowledged, recorded in the store by `apply`.
        self._acked: dict[TP, int] = {}
        #: Per partition: the key prefixes of its engine and worker keys (see `PartitionState`).
        self.prefixes: dict[int, tuple[str, str]] = {}
        #: A state key's changelog key bytes (`_key_bytes`, chosen at the first send).
        self._key_writer: Callable[[str], bytes | None] | None = None

    def prefixes_of(self, partition: int) -> tuple[str, str]:
        """The key prefixes of a partition's engine keys and worker keys (made once)."""
        prefixes = self.prefixes.get(partition)
        if prefixes is None:
            prefixes = self.prefixes[partition] = (f"{partition}/e/", f"{partition}/w/")
        return prefixes

    @property
    def local(self) -> Any:
        """The local store, as a mapping: a memory store's own dict (no proxy per access)."""
        local = self._local
        if local is None:
            store = self.table.data
            if isinstance(store, MemoryStore | dict):  # dict: a plain mapping (tests)
                local = store.data if isinstance(store, MemoryStore) else store
            else:  # persistent (rocksdb): it survives a crash, so it waits for the changelog
                local = store
                self._overlay = {}
            self._local = local
        return local

    def get(self, key: str) -> bytes | None:
        local = self.local
        overlay = self._overlay
        # the overlay first, then the local store (as `apply` or `write` wrote it)
        value = overlay[key] if overlay is not None and key in overlay else local.get(key)
        return None if value is None else bytes(value)

    def reader(self) -> Callable[[str], Any]:
        """`get` for a caller that only parses the value (any bytes-like will do): a memory
        store's own `dict.get`, no Python call per read."""
        local = self.local
        return self.get if self._overlay is not None else local.get

    def write(self, partition: int, writes: dict[str, bytes | None]) -> None:
        """Stage the changed keys of one event of `partition` (None: deleted)."""
        local = self.local
        overlay = self._overlay
        if overlay is None:
            for key, data in writes.items():
                if data is not None:
                    local[key] = data
                elif key in local:
                    del local[key]
        else:
            overlay.update(writes)
        staged = self._staged.get(partition)
        if staged is None:
            self._staged[partition] = dict(writes)
        else:
            staged.update(writes)

    def take(self) -> dict[int, dict[str, bytes | None]]:
        """Detach the records staged so far (later writes stage anew)."""
        staged, self._staged = self._staged, {}
        return staged

    def apply(self, staged: dict[int, dict[str, bytes | None]]) -> None:
        """The changelog of `staged` is acknowledged: write it to a persistent local store,
        then record the changelog offsets it covers (a crash in between re-reads them).

        A memory store got its writes at once (it does not survive a crash; a restart
        recovers the changelog). A persistent store gets them only now, so after a kill
        it never holds the state of an event whose output was not delivered; until
        then `get` reads them from the overlay.
        """
        overlay = self._overlay
        store = self.table.data
        if overlay is not None:
            for partition, writes in staged.items():
                # the store files each key under the current event's partition
                event = cast(EventT[Any], _PartitionEvent(partition))
                token = _current_event.set(weakref.ref(event))
                try:
                    for key, data in writes.items():
                        if data is None:
                            if key in store:
                                del store[key]
                        else:
                            store[key] = data
                        if overlay.get(key, _DELETED) is data:  # nothing newer staged since
                            del overlay[key]
                finally:
                    _current_event.reset(token)
        acked, self._acked = self._acked, {}
        for tp, offset in acked.items():
            store.set_persisted_offset(tp, offset)

    def acknowledged(self, tp: TP, offset: int) -> None:
        """A changelog record of `tp` at `offset` was acknowledged."""
        if offset > self._acked.get(tp, -1):
            self._acked[tp] = offset

    async def send(self, staged: dict[int, dict[str, bytes | None]]) -> list[asyncio.Future[Any]]:
        """Hand detached records to the producer, each to its partition; their delivery futures.

        Straight to the producer rather than through `Table.send_changelog`, whose
        per-record buffer overflows at every commit and stalls the stream; like it,
        each acknowledgement records the persisted offset (used by rocksdb stores),
        here at `apply`, once the local store holds what it covers.
        """
        table = self.table
        topic = table.changelog_topic.get_topic_name()
        dumps_key = self._key_bytes()
        if self.sender is not None:
            sender = self.sender
            delivery = ChangelogDelivery(sender, self, topic)
            for partition, writes in staged.items():
                for key, data in writes.items():
                    raw_key = dumps_key(key)
                    sender.send(topic, raw_key, data, partition=partition, delivery=delivery)
                    if delivery.sent % _SEND_SLICE == 0:
                        await asyncio.sleep(0)  # a commit's thousands of records: let events in
            return [asyncio.ensure_future(delivery.acknowledged())]
        send = table.app.producer.send
        futures: list[asyncio.Future[Any]] = []
        for partition, writes in staged.items():
            acknowledged = partial(_acknowledged, self, TP(topic, partition))
            for key, data in writes.items():
                raw_key = dumps_key(key)
                future = await send(topic, raw_key, data, partition, None, None)
                future.add_done_callback(acknowledged)
                futures.append(future)
        return futures

    def _key_bytes(self) -> Callable[[str], bytes | None]:
        """A state key's changelog key bytes: what the table's own key codec writes (recovery
        reads them back with it), made once per key at every commit.

        Faust's JSON key codec writes a str as a JSON string with only the escapes JSON
        requires. When the table's codec writes a probe key that way (non-ASCII, astral
        and DEL characters left as they are), a key with no character JSON must escape is
        that key's UTF-8 between quotes, made here without Faust's codec lookup per key;
        every other key, and every key of a table whose codec writes otherwise, goes
        through the table's codec.
        """
        writer = self._key_writer
        if writer is None:
            table = self.table
            codec = partial(
                table.app.serializers.dumps_key,
                table.key_type,
                serializer=table.key_serializer,
            )
            if codec(_KEY_PROBE) != _quoted(_KEY_PROBE):
                writer = codec
            else:
                needs_escape = _JSON_ESCAPED.search

                def writer(key: str) -> bytes | None:
                    if needs_escape(key):
                        return codec(key)
                    try:
                        return _quoted(key)
                    except UnicodeEncodeError:  # a lone surrogate: the codec's own error
                        return codec(key)

            self._key_writer = writer
        return writer


def _quoted(key: str) -> bytes:
    return b'"' + key.encode() + b'"'


#: Characters a JSON string must escape: the quote, the backslash, control characters.
_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')
#: A key whose JSON form tells a codec that writes strings as they are from one that escapes.
_KEY_PROBE = "0/e/\u00e9\u2028\x7f\U0001f600"

#: Changelog records produced between two yields to the event loop.
_SEND_SLICE = 256


class _PartitionEvent:
    """Stands for an event of `partition` while `StagedTable.apply` writes a store."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, partition: int) -> None:
        self.message = _PartitionOnly(partition)


class _PartitionOnly:
    __slots__ = ("partition",)

    def __init__(self, partition: int) -> None:
        self.partition = partition


def _acknowledged(table: StagedTable, tp: TP, future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is None:
        table.acknowledged(tp, future.result().offset)


class ChangelogDelivery(OutputDelivery):
    """The delivery of one commit's changelog records (all to `topic`), telling `table` the
    last acknowledged offset of each partition (recorded in its store once the store holds
    the records)."""

    __slots__ = ("offsets", "table", "topic")

    def __init__(self, sender: OutputSender, table: StagedTable, topic: str) -> None:
        super().__init__(sender.producer)
        self.table = table
        self.topic = topic
        #: Per partition: the highest offset acknowledged.
        self.offsets: dict[int, int] = {}

    def report(self, error: Any, message: Any) -> None:
        if error is not None:
            super().report(error, message)
            return
        self.settled += 1
        partition, offset = message.partition(), message.offset()
        if offset > self.offsets.get(partition, -1):
            self.offsets[partition] = offset

    async def acknowledged(self) -> None:
        """Wait for the records; tell the table their offsets; raise the first delivery
        error."""
        failure = await self.wait()
        for partition, offset in self.offsets.items():
            self.table.acknowledged(TP(self.topic, partition), offset)
        if failure is not None:
            raise failure


class PartitionState:
    """The `StateStore` of one interactions partition, backed by a `StagedTable`.

    Reads see this event's own pending writes first; `commit()` applies them
    (one staged changelog record per changed key) and must be called inside
    the stream iteration of the event being processed. Never share one
    instance between events.
    """

    __slots__ = (
        "_engine_prefix",
        "_partition",
        "_pending",
        "_raw",
        "_read",
        "_table",
        "_worker_prefix",
    )

    def __init__(self, table: StagedTable, partition: int) -> None:
        self._table = table
        self._raw = table.reader()
        self._partition = partition
        self._engine_prefix, self._worker_prefix = table.prefixes_of(partition)
        self._pending: dict[str, Any] = {}
        #: full key -> (stored bytes or None, value read): what `commit` compares against.
        self._read: dict[str, tuple[bytes | None, Any]] = {}

    # -- StateStore (engine keys) -------------------------------------------------------------

    def get(self, key: str) -> Any | None:
        return self._get(self._engine_prefix + key)

    def set(self, key: str, value: Any) -> None:
        self._pending[self._engine_prefix + key] = value

    def delete(self, key: str) -> None:
        self._pending[self._engine_prefix + key] = _DELETED

    # -- the worker's own keys ----------------------------------------------------------------

    def get_worker(self, name: str) -> Any | None:
        """A value the worker keeps beside the engine's state (e.g. the idle clock)."""
        return self._get(self._worker_prefix + name)

    def set_worker(self, name: str, value: Any) -> None:
        self._pending[self._worker_prefix + name] = value

    # -- applying -----------------------------------------------------------------------------

    def discard_engine_writes(self) -> None:
        """Forget the engine's pending writes (it failed on the event); keep the worker's."""
        prefix = self._engine_prefix
        for full_key in [k for k in self._pending if k.startswith(prefix)]:
            del self._pending[full_key]

    def commit(self) -> int:
        """Apply the pending changes to the table; return how many keys changed."""
        read = self._read
        writes: dict[str, bytes | None] = {}
        dumps = orjson.dumps
        for full_key, value in self._pending.items():
            seen = read.get(full_key)
            if value is _DELETED:
                if seen is None or seen[0] is not None:  # deleting a missing key is no change
                    writes[full_key] = None
                continue
            data = dumps(value, option=_JSON_OPTIONS)
            if seen is None or seen[0] != data:  # unchanged values cost no record
                writes[full_key] = data
        if writes:
            self._table.write(self._partition, writes)
        self._pending.clear()
        read.clear()
        return len(writes)

    def _get(self, full_key: str) -> Any | None:
        pending = self._pending
        if full_key in pending:
            value = pending[full_key]
            return None if value is _DELETED else value
        seen = self._read.get(full_key)
        if seen is not None:
            return seen[1]
        raw = self._raw(full_key)
        value = None if raw is None else orjson.loads(raw)
        self._read[full_key] = (raw, value)
        return value


class BatchSpoiled(Exception):
    """The engine failed on an event of a batch handled with a `BatchState`.

    The engine may have changed values it read in place before it raised, and a
    `BatchState` cannot tell those changes from the batch's earlier ones: the host
    drops the instance (nothing of the batch reached the table) and handles the
    batch again with a `PartitionState` per event.
    """


#: A key this batch has not read yet (`BatchState`).
_UNREAD = object()


class BatchState:
    """The `StateStore` of one interactions partition for a whole batch of events.

    Like `PartitionState`, but a value read is decoded once per batch and then
    shared by the batch's events (as a `DictStore` shares it: a value the
    engine changes in place is changed for the events after it), and the
    writes stay in memory until `flush()` at the end of the batch. `flush`
    encodes every key the batch read or wrote, once, and writes those whose
    bytes changed (one call to the table); a value changed in place without
    being set is therefore kept too, as a `DictStore` keeps it. `commit()`
    after each event does nothing. An event whose processing failed cannot be
    undone: `discard_engine_writes` raises `BatchSpoiled`, and the instance
    must be dropped without `flush`. Reads happen inside the stream iteration
    of an event of the partition (see `PartitionState`); `flush` needs none.
    """

    __slots__ = (
        "_engine_prefix",
        "_partition",
        "_raw",
        "_stored",
        "_table",
        "_values",
        "_worker_prefix",
    )

    def __init__(self, table: StagedTable, partition: int) -> None:
        self._table = table
        self._raw = table.reader()
        self._partition = partition
        self._engine_prefix, self._worker_prefix = table.prefixes_of(partition)
        #: full key -> the batch's value (`_DELETED`: deleted or missing).
        self._values: dict[str, Any] = {}
        #: full key -> the stored bytes the batch read (None: missing), what `flush` compares.
        self._stored: dict[str, bytes | None] = {}

    # -- StateStore (engine keys) -------------------------------------------------------------

    def get(self, key: str) -> Any | None:
        full_key = self._engine_prefix + key
        value = self._values.get(full_key, _UNREAD)
        if value is _UNREAD:
            value = self._load(full_key)
        return None if value is _DELETED else value

    def set(self, key: str, value: Any) -> None:
        self._values[self._engine_prefix + key] = value

    def delete(self, key: str) -> None:
        self._values[self._engine_prefix + key] = _DELETED

    # -- the worker's own keys ----------------------------------------------------------------

    def get_worker(self, name: str) -> Any | None:
        """A value the worker keeps beside the engine's state (e.g. the idle clock)."""
        full_key = self._worker_prefix + name
        value = self._values.get(full_key, _UNREAD)
        if value is _UNREAD:
            value = self._load(full_key)
        return None if value is _DELETED else value

    def set_worker(self, name: str, value: Any) -> None:
        self._values[self._worker_prefix + name] = value

    # -- applying -----------------------------------------------------------------------------

    def discard_engine_writes(self) -> None:
        """The engine failed on an event: its changes cannot be told apart; raise."""
        raise BatchSpoiled(f"the engine failed on an event of partition {self._partition}")

    def commit(self) -> int:
        """The end of one event: nothing to do (the batch's writes wait for `flush`)."""
        return 0

    def flush(self) -> int:
        """Apply the batch's changes to the table; return how many keys changed."""
        stored = self._stored
        raw = self._raw
        writes: dict[str, bytes | None] = {}
        dumps = orjson.dumps
        for full_key, value in self._values.items():
            before = stored[full_key] if full_key in stored else raw(full_key)
            if value is _DELETED:
                if before is not None:  # deleting a missing key is no change
                    writes[full_key] = None
                continue
            data = dumps(value, option=_JSON_OPTIONS)
            if data != before:  # unchanged values cost no record
                writes[full_key] = data
        if writes:
            self._table.write(self._partition, writes)
        self._values.clear()
        stored.clear()
        return len(writes)

    def _load(self, full_key: str) -> Any:
        raw = self._raw(full_key)
        self._stored[full_key] = raw
        value = _DELETED if raw is None else orjson.loads(raw)
        self._values[full_key] = value
        return value
