"""Deadlines that scale with the machine: waits in tests end on a condition, and the time
allowed for it grows on a slow or loaded machine (`wait_for` polls a condition
against such a deadline; every test waits with it), so a shared box does not fail the suite
while a real defect (a condition that never holds) still does.

The scale is `MOMENTS_TEST_TIME_SCALE` when set, else measured once per session: a
plain 1M-iteration Python loop against the ~0.06 s it takes on an idle machine,
between 1 and 6.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

IDLE_LOOP_S = 0.06
MAX_SCALE = 6.0


@functools.cache
def time_scale() -> float:
    """How many times slower than an idle machine this one is (at least 1)."""
    configured = os.environ.get("MOMENTS_TEST_TIME_SCALE")
    if configured:
        return max(1.0, float(configured))
    started = time.perf_counter()
    total = 0
    for i in range(1_000_000):
        total += i
    return min(MAX_SCALE, max(1.0, (time.perf_counter() - started) / IDLE_LOOP_S))


def scaled(seconds: float) -> float:
    """A time budget of SECONDS on an idle machine, scaled to this one."""
    return seconds * time_scale()


def wait_for(
    condition: Callable[[], object],
    timeout_s: float,
    what: str,
    poll_s: float = 0.2,
    describe: Callable[[], str] | None = None,
) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` after `timeout_s`
    (an idle machine's budget, `scaled` to this one).

    `describe()` adds the state of things to the error (counts, log tails).
    """
    timeout_s = scaled(timeout_s)
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            detail = f"\n{describe()}" if describe is not None else ""
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{detail}")
        time.sleep(poll_s)
