"""Batches of stream events whose wait for more events is chosen per batch.

Faust's `Stream.take_events(max_, within)` yields up to `max_` events, or what
came within `within` seconds, a window fixed for the stream's life. The
worker wants two: a short one when it keeps up (a batch waits for events that
have not arrived yet, so the window is added to their latency), and a long one
when it is behind (the events are already waiting; a batch that fills up costs
less per event, as each partition's state is decoded and encoded once per batch,
and while the window is short Faust's own per-event delivery, not the backlog,
decides how many events a batch gets). `take_batches` is a copy of
`take_events` that asks `window()` before each batch; everything else (acks
after the batch, the buffering processor, the clean-up) is Faust's own, as
recorded in `processors.faust_host.internals`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

from faust.types import EventT
from mode.utils.aiter import aiter
from mode.utils.futures import notify


def take_batches(
    stream: Any, max_: int, window: Callable[[], float]
) -> AsyncGenerator[list[EventT[Any]], None]:
    """Up to `max_` events at a time from `stream`, each batch waiting at most `window()`
    seconds (asked when it starts) for more; events are acked after their batch.

    Registered on the stream as Faust registers its own buffering generators, so that
    stopping the stream finalizes it.
    """
    batches = _take_batches(stream, max_, window)
    stream._active_agens.add(batches)
    return batches


async def _take_batches(
    self: Any, max_: int, window: Callable[[], float]
) -> AsyncGenerator[list[EventT[Any]], None]:
    # Faust's Stream.take_events (faust-streaming 0.15.3, hash in internals), `within` replaced
    # by `window()`.
    buffer: list[Any] = []
    events: list[EventT[Any]] = []
    buffer_add = buffer.append
    event_add = events.append
    buffer_size = buffer.__len__
    buffer_full = asyncio.Event()
    buffer_consumed = asyncio.Event()
    stream_enable_acks: bool = self.enable_acks

    buffer_consuming: asyncio.Future[Any] | None = None

    channel_it = aiter(self.channel)

    # We add this processor to populate the buffer, and the stream
    # is passively consumed in the background (enable_passive below).
    async def add_to_buffer(value: Any) -> Any:
        try:
            # buffer_consuming is set when consuming buffer after timeout.
            nonlocal buffer_consuming
            if buffer_consuming is not None:
                try:
                    await buffer_consuming
                finally:
                    buffer_consuming = None
            buffer_add(value)
            event = self.current_event
            if event is None:
                raise RuntimeError("Take buffer found current_event is None")
            event_add(event)
            if buffer_size() >= max_:
                # signal that the buffer is full and should be emptied.
                buffer_full.set()
                # strict wait for buffer to be consumed after buffer full.
                # If max is 1000, we are not allowed to return 1001 values.
                buffer_consumed.clear()
                await self.wait(buffer_consumed)
        except asyncio.CancelledError:  # pragma: no cover
            raise
        except Exception as exc:
            self.log.exception("Error adding to take buffer: %r", exc)
            await self.crash(exc)
        return value

    # Disable acks to ensure this method acks manually
    # events only after they are consumed by the user
    self.enable_acks = False

    self.add_processor(add_to_buffer)
    self._enable_passive(cast(Any, channel_it))
    try:
        while not self.should_stop:
            # wait until buffer full, or timeout.
            await self.wait_for_stopped(buffer_full, timeout=window())
            if buffer:
                # make sure background thread does not add new items to
                # buffer while we read.
                buffer_consuming = self.loop.create_future()
                try:
                    yield list(events)
                finally:
                    buffer.clear()
                    for event in events:
                        await self.ack(event)
                    events.clear()
                    # allow writing to buffer again
                    notify(buffer_consuming)
                    buffer_full.clear()
                    buffer_consumed.set()
    finally:
        # Restore last behaviour of "enable_acks"
        self.enable_acks = stream_enable_acks
        self._processors.remove(add_to_buffer)
