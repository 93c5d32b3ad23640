"""Every member of faust-streaming, mode and aiokafka that the worker uses beyond their public API.

The worker reaches into these packages where their public API cannot do what
it needs (see the modules of `processors.faust_host`): it overrides private
methods, reads and writes private attributes, replaces classes and copies one
method. Each such member is listed here, once, with what the worker relies on:

- `parameters`: the parameter list (names, kinds, defaults; no annotations)
  of a method the worker overrides or calls with positional arguments;
- `assigned_in` / `read_in`: for an instance attribute, the code that must
  still assign it (`self.<name> = ...`) and read it;
- `mentions`: text the member's source must still contain (a behaviour the
  worker depends on, such as "Faust calls `_build_highwaters`");
- `copied_sha256`: for a method the worker carries a modified copy of, the
  SHA-256 of the original's source when it was copied.

`tests/unit/test_faust_host_internals.py` checks every entry against the
installed packages and fails naming the member. faust-streaming, mode-streaming
and aiokafka are pinned (pyproject.toml, requirements/*.txt); upgrading one is a
deliberate change: run that test, re-review each failing member (for a copy,
compare the new original with ours, port what changed, then record the new
hash: `python -m processors.faust_host.internals` prints the current values).
A member that no longer exists would otherwise fail silently: e.g. if Faust
renamed `_build_highwaters`, recovery would skip the Tansu fence and lose the
tail of the last batch, with no error anywhere.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Internal:
    """One member of faust-streaming, mode or aiokafka the worker relies on.

    `member` is `"module:Qualified.name"`; `use` says what the worker does with
    it and where; the other fields say what the contract test checks.
    """

    member: str
    use: str
    parameters: str | None = None
    assigned_in: str | None = None
    read_in: tuple[str, ...] = ()
    mentions: tuple[str, ...] = ()
    copied_sha256: str | None = None

    @property
    def name(self) -> str:
        """The member's own name (the last part of its qualified name)."""
        return self.member.rpartition(".")[2].rpartition(":")[2]


_AIOKAFKA_DRIVER = "faust.transport.drivers.aiokafka"

INTERNALS: tuple[Internal, ...] = (
    # -- changelog staging (processors.faust_host.changelog) and the worker's batch loop --
    Internal(
        "faust.streams:_current_event",
        "set by StagedTable.apply and TriggerWorker.handle_batch: the event whose partition "
        "a rocksdb store files each key under (read by faust.streams.current_event)",
        read_in=("faust.streams:current_event",),
    ),
    Internal(
        "faust.stores.rocksdb:Store._set",
        "StagedTable writes a rocksdb store directly; the store files the key under the "
        "partition of the current event",
        mentions=("current_event()",),
    ),
    Internal(
        "faust.stores.memory:Store.data",
        "StagedTable reads and writes a memory store's dict directly (never Table.__setitem__, "
        "which Faust forbids inside take())",
        assigned_in="faust.stores.memory:Store.__post_init__",
        read_in=("faust.stores.memory:Store._clear",),
    ),
    Internal(
        "faust.stores.base:Store.set_persisted_offset",
        "StagedTable.apply records the acknowledged changelog offsets in the store",
        parameters="(self, tp, offset)",
    ),
    Internal(
        f"{_AIOKAFKA_DRIVER}:Producer.send",
        "StagedTable.send (without a librdkafka sender) calls it with positional arguments",
        parameters="(self, topic, key, value, partition, timestamp, headers, *, "
        "transactional_id=None)",
    ),
    Internal(
        "faust.streams:Stream.take_events",
        "processors.faust_host.batches.take_batches is a modified copy (the window asked "
        "per batch; the stream members it uses, such as _enable_passive, _processors and "
        "_active_agens, are the original's)",
        parameters="(self, max_, within)",
        copied_sha256="607d48aead118ba8ea868718a0df87de1c5fcecd10ec542c659b448796728e08",
    ),
    Internal(
        "faust.streams:Stream._active_agens",
        "take_batches registers its generator there, as Faust's _tracks_buffer_agen does, "
        "so that stopping the stream finalizes it",
        assigned_in="faust.streams:Stream.__init__",
        read_in=("faust.streams:_tracks_buffer_agen",),
    ),
    # -- recovery fence (processors.faust_host.recovery) --
    Internal(
        "faust.tables.recovery:Recovery._build_highwaters",
        "overridden by FencingRecovery: the fence (where the broker needs it, probed there "
        "for MOMENTS_BROKER_FENCE=auto) is produced before high watermarks are read",
        parameters="(self, consumer, tps, destination, title)",
    ),
    Internal(
        "faust.tables.recovery:Recovery._restart_recovery",
        "must read the high watermarks through _build_highwaters and resume streams through "
        "_resume_streams (else the fence and the flow stop are skipped)",
        mentions=("self._build_highwaters", "self._resume_streams", "self.on_recovery_completed"),
    ),
    Internal(
        "faust.tables.recovery:Recovery._resume_streams",
        "overridden by FencingRecovery: stops the flow before Faust resumes and seeks streams",
        parameters="(self, generation_id=0)",
        mentions=("consumer.resume_flow()",),
    ),
    Internal(
        "faust.tables.recovery:Recovery.on_recovery_completed",
        "overridden by FencingRecovery: stops the flow; Faust resumes it after seeking",
        parameters="(self, generation_id=0)",
        mentions=("consumer.resume_flow()",),
    ),
    Internal(
        "faust.tables.recovery:Recovery.__init__",
        "FencingTableManager.recovery builds FencingRecovery(app, tables, beacon=, loop=)",
        parameters="(self, app, tables, **kwargs)",
    ),
    Internal(
        "faust.tables.recovery:Recovery.tables",
        "fence_changelogs finds the table manager of the recovery",
        assigned_in="faust.tables.recovery:Recovery.__init__",
    ),
    Internal(
        "faust.tables.manager:TableManager._changelogs",
        "fence_changelogs and high_watermark_lags (the auto probe) map a changelog topic to "
        "its table",
        assigned_in="faust.tables.manager:TableManager.__init__",
        read_in=("faust.tables.manager:TableManager.add",),
    ),
    Internal(
        "faust.tables.manager:TableManager._recovery",
        "FencingTableManager.recovery creates its FencingRecovery lazily, as Faust's does",
        read_in=("faust.tables.manager:TableManager.recovery",),
    ),
    Internal(
        "faust.types.settings.settings:Settings.TableManager",
        "faust.App(TableManager=FencingTableManager) replaces the table manager class",
    ),
    # -- consumer changes (processors.faust_host.consumer) --
    Internal(
        "faust.transport.base:Transport.Consumer",
        "replaced by CommitBarrier.install (a WorkerConsumer bound to the barrier); "
        "create_consumer must call it with keyword arguments it passes on",
        read_in=("faust.transport.base:Transport.create_consumer",),
    ),
    Internal(
        f"{_AIOKAFKA_DRIVER}:Consumer._new_consumer_thread",
        "overridden by WorkerConsumer to use WorkerConsumerThread",
        parameters="(self)",
    ),
    Internal(
        f"{_AIOKAFKA_DRIVER}:AIOKafkaConsumerThread._create_worker_consumer",
        "overridden by WorkerConsumerThread to shorten the fetch wait",
        parameters="(self, transport)",
    ),
    Internal(
        "aiokafka.consumer.consumer:AIOKafkaConsumer._fetch_max_wait_ms",
        "WorkerConsumerThread sets it (FETCH_MAX_WAIT_MS) before the consumer starts",
        assigned_in="aiokafka.consumer.consumer:AIOKafkaConsumer.__init__",
        read_in=("aiokafka.consumer.consumer:AIOKafkaConsumer.start",),
    ),
    Internal(
        "faust.transport.consumer:Consumer._commit_offsets",
        "overridden by WorkerConsumer: output and changelog acknowledged before each commit",
        parameters="(self, offsets, start_new_transaction=True)",
    ),
    Internal(
        "faust.transport.consumer:Consumer._drain_messages",
        "WorkerConsumer._drain_messages is a modified copy (callback run inline; the members "
        "it uses, such as _read_offset, _n_acked, _add_gap and CONSUMER_FETCHING, are the "
        "original's)",
        parameters="(self, fetcher)",
        copied_sha256="44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
    ),
    Internal(
        "mode.services:Service.wait_first",
        "WorkerConsumer._drain_messages races a suspended callback against suspend_flow",
        parameters="(self, *coros, timeout=None)",
    ),
    Internal(
        f"{_AIOKAFKA_DRIVER}:Consumer.seek_to_committed",
        "overridden by WorkerConsumer: fresh stream partitions are sought to the beginning",
        parameters="(self)",
    ),
    Internal(
        f"{_AIOKAFKA_DRIVER}:Consumer.earliest_offsets",
        "WorkerConsumer.seek_to_committed",
        parameters="(self, *partitions)",
    ),
    Internal(
        f"{_AIOKAFKA_DRIVER}:Consumer.seek_wait",
        "WorkerConsumer.seek_to_committed",
        parameters="(self, partitions)",
    ),
    # -- credentials (processors.faust_host.credentials) --
    Internal(
        "faust.auth:SASLCredentials.__init__",
        "broker_credentials builds SASL credentials by keyword",
        parameters="(self, *, username=None, password=None, ssl_context=None, mechanism=None)",
    ),
    Internal(
        "faust.auth:GSSAPICredentials.__init__",
        "broker_credentials builds Kerberos credentials by keyword",
        parameters="(self, *, kerberos_service_name='kafka', kerberos_domain_name=None, "
        "ssl_context=None, mechanism=None)",
    ),
)


def resolve(path: str) -> Any:
    """The object at `"module:Qualified.name"` (raises AttributeError/ImportError if gone)."""
    module_name, _, qualname = path.partition(":")
    found: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def parameters(function: Any) -> str:
    """A function's parameter list without annotations, e.g. `(self, generation_id=0)`."""
    signature = inspect.signature(function)
    bare = [p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=bare, return_annotation=inspect.Signature.empty))


def source_of(path: str) -> str:
    """The source of the function or property at `path`."""
    found = resolve(path)
    if isinstance(found, property):
        found = found.fget
    found = getattr(found, "fun", found)  # a mode `@Service.task` method
    return inspect.getsource(found)


def source_sha256(path: str) -> str:
    """The SHA-256 of the source at `path` (what `copied_sha256` records)."""
    return hashlib.sha256(source_of(path).encode()).hexdigest()


def main() -> None:
    """Print the installed values of every checked field (to re-record after a review)."""
    for internal in INTERNALS:
        print(internal.member)
        if internal.parameters is not None:
            print("  parameters:", parameters(resolve(internal.member)))
        if internal.copied_sha256 is not None:
            print("  copied_sha256:", source_sha256(internal.member))


if __name__ == "__main__":
    main()
