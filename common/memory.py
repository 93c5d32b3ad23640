"""Memory of long bulk runs (replay, backfill, diff, the simulator, the bench).

`no_cyclic_gc` pauses Python's cyclic garbage collector for a run that builds
millions of objects without cycles (engine state, records, planned moments).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector (engine state and records hold no cycles).

    With a large population the collector would walk every customer's state again
    and again; that costs a third of a replay. Reference counting still frees
    everything. On the way out, everything allocated meanwhile is moved straight to
    the oldest generation (`gc.freeze` then `gc.unfreeze`): otherwise the first
    allocation after re-enabling would walk those millions of young objects once more
    (a second or so after a large backfill) only to find them alive.
    """
    was_enabled = gc.isenabled()
    frozen_before = gc.get_freeze_count()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if not frozen_before:  # leave a caller's own frozen objects frozen
            gc.unfreeze()
        if was_enabled:
            gc.enable()
