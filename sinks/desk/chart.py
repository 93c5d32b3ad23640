"""The relationship balance over 90 days as an SVG chart drawn on the server.

A step line (the balance holds from one action to the next) over a zero line,
labelled for screen readers (`role="img"`, a title and a description saying
the first, lowest, highest and last values). Pure: points in, markup out; the
only text in it is numbers and dates this module formats, escaped all the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Final

WIDTH: Final = 640
HEIGHT: Final = 200
_LEFT: Final = 44
_RIGHT: Final = 12
_TOP: Final = 14
_BOTTOM: Final = 30


def balance_svg(points: Sequence[tuple[datetime, int]], days: int) -> str:
    """The chart of POINTS (time, balance), oldest first; a short note when there are none."""
    if not points:
        return f'<p class="muted">No balance recorded in the last {int(days)} days.</p>'
    start, end = points[0][0], points[-1][0]
    values = [value for _, value in points]
    low, high = min(0, *values), max(0, *values)
    if low == high:
        high = low + 1
    span_s = max((end - start).total_seconds(), 1.0)
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM

    def x(at: datetime) -> float:
        return _LEFT + plot_w * (at - start).total_seconds() / span_s

    def y(value: float) -> float:
        return _TOP + plot_h * (high - value) / (high - low)

    steps: list[str] = []
    previous: float | None = None
    for at, value in points:
        px = x(at)
        if previous is not None:
            steps.append(f"{px:.1f},{y(previous):.1f}")
        steps.append(f"{px:.1f},{y(value):.1f}")
        previous = value
    if len(points) == 1:
        steps.append(f"{_LEFT + plot_w:.1f},{y(values[0]):.1f}")
    summary = (
        f"Balance from {values[0]:+d} on {start:%Y-%m-%d} to {values[-1]:+d} on {end:%Y-%m-%d};"
        f" lowest {min(values):+d}, highest {max(values):+d}; {len(values)} points."
    )
    zero = y(0)
    ticks = "".join(
        f'<text x="{_LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:+d}</text>'.replace(
            "+0<", "0<"
        )
        for v in sorted({low, 0, high})
    )
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        ' aria-labelledby="balance-title balance-desc" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="balance-title">Relationship balance, last {int(days)} days</title>'
        f'<desc id="balance-desc">{escape(summary)}</desc>'
        f'<line class="axis" x1="{_LEFT}" y1="{zero:.1f}" x2="{WIDTH - _RIGHT}" y2="{zero:.1f}"/>'
        f'<polyline class="balance" fill="none" points="{" ".join(steps)}"/>'
        f"{ticks}"
        f'<text x="{_LEFT}" y="{HEIGHT - 8}">{escape(f"{start:%Y-%m-%d}")}</text>'
        f'<text x="{WIDTH - _RIGHT}" y="{HEIGHT - 8}" text-anchor="end">'
        f"{escape(f'{end:%Y-%m-%d}')}</text>"
        "</svg>"
    )
