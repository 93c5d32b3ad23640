"""The bench's sampling arithmetic (moments.bench.context): steady rates per second and per
CPU second."""

from __future__ import annotations

import pytest

from moments.bench.context import Samples, steady_cpu_rate, steady_rate


def test_steady_rate_leaves_out_start_up_and_tail() -> None:
    samples = [(0.0, 0), (5.0, 0), (6.0, 100), (7.0, 600), (8.0, 960), (9.0, 1000)]
    # 5% (50) reached at 5.5 s, 95% (950) at 7 + 350/360 s (interpolated between samples)
    assert steady_rate(samples, 1000) == pytest.approx(900 / (2 + 350 / 360 - 0.5), abs=0.1)


def test_steady_cpu_rate_counts_the_cpu_used_over_the_same_span() -> None:
    counts = [(0.0, 0), (5.0, 0), (6.0, 100), (7.0, 600), (8.0, 960), (9.0, 1000)]
    cpu: list[float | None] = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5]  # half a CPU from the start
    # the span of steady_rate: 5.5 s to 7 + 350/360 s, so 0.5 CPU s per s of it
    span = 2 + 350 / 360 - 0.5
    rate = steady_cpu_rate(Samples(counts, cpu), 1000)
    assert rate == pytest.approx(900 / (span * 0.5), abs=0.1)
    assert rate == pytest.approx(2 * steady_rate(counts, 1000), abs=0.2)
    assert steady_cpu_rate(Samples(counts, []), 1000) is None  # not measured
    assert steady_cpu_rate(Samples(counts, [*cpu[:-1], None]), 1000) is None  # process gone
