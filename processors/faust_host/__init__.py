"""What the worker adds to faust-streaming, one module per mechanism.

- `changelog`: `PartitionState` (the engine's `StateStore` of one
  interactions partition) over a `StagedTable`, whose changelog records wait
  for the next offset commit.
- `output`: `OutputSender`, the worker's actions, decisions and dead letters
  produced with librdkafka, their delivery reports counted per commit.
- `consumer`: `WorkerConsumer`, which commits offsets only after the output
  and then the changelog (held by a `CommitBarrier`) are acknowledged, drains
  messages without a task per message, fetches promptly and seeks fresh
  partitions to the beginning.
- `batches`: `take_batches`, Faust's `take_events` with the wait for more
  records chosen per batch (short while the worker keeps up, long while it is
  behind).
- `recovery`: `FencingTableManager`, the recovery fence that makes Faust's
  table recovery read to the end on Tansu, only where the broker needs it
  (`MOMENTS_BROKER_FENCE`: auto, on, off).
- `credentials`: `broker_credentials`, librdkafka security options as Faust's, and
  the worker's broker URLs and credentials from the settings.
- `startup`: `use_fast_event_loop` (uvloop) and `FrozenHeapWorker` (the start-up
  heap frozen out of the cyclic collector's reach).
- `internals`: every private member of faust-streaming, mode and aiokafka
  that the modules above use, checked by `tests/unit/test_faust_host_internals.py`.

Faust stays the live host: these modules extend it and never replace its
stream, table or rebalance machinery. They know nothing of rules or Avro.
"""

from processors.faust_host.changelog import PartitionState, StagedTable
from processors.faust_host.consumer import CommitBarrier, WorkerConsumer
from processors.faust_host.credentials import (
    CredentialsError,
    broker_credentials,
    broker_urls,
    worker_credentials,
)
from processors.faust_host.output import OutputSender
from processors.faust_host.recovery import FencingTableManager
from processors.faust_host.startup import FrozenHeapWorker, use_fast_event_loop

__all__ = [
    "CommitBarrier",
    "CredentialsError",
    "FencingTableManager",
    "FrozenHeapWorker",
    "OutputSender",
    "PartitionState",
    "StagedTable",
    "WorkerConsumer",
    "broker_credentials",
    "broker_urls",
    "use_fast_event_loop",
    "worker_credentials",
]
