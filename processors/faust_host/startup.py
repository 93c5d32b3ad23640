"""Starting the worker's process: the event loop it runs on and the Faust worker that
freezes the start-up heap once the app has started."""

from __future__ import annotations

import asyncio
import gc
import threading

import faust


def use_fast_event_loop() -> bool:
    """Run asyncio on uvloop when it is installed (Faust's per-message tasks and
    callbacks cost less CPU); call before the app is built. True if it is."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


class FrozenHeapWorker(faust.Worker):
    """A Faust worker that moves everything built at start-up out of the cyclic collector's
    reach once the app has started: those objects live as long as the process, and a full
    collection over them pauses the event loop and every event waiting in it. Sets
    `startup_finished` then (the ops port's /readyz)."""

    startup_finished: threading.Event | None = None

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        gc.freeze()
        if self.startup_finished is not None:
            self.startup_finished.set()
