"""How fast this machine was while a benchmark ran: a reader's yardstick for its figures.

Absolute figures swing with the machine's load (a shared or virtual machine
whose hypervisor hands its CPUs to others: CPU "steal"). Every bench report
carries a calibration: the time of a plain 10M-iteration Python loop and the
share of CPU time stolen over the run (from /proc/stat), so a reader can tell
a slow machine from a slow change. Knows nothing of Kafka or the engine.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Final

LOOP_ITERATIONS: Final = 10_000_000
#: Above this share of stolen CPU time the report warns that absolute figures are low.
STEAL_WARNING_SHARE: Final = 0.10
PROC_STAT: Final = Path("/proc/stat")


@dataclasses.dataclass(frozen=True, slots=True)
class CpuTimes:
    """The machine-wide `cpu` line of /proc/stat, in clock ticks."""

    busy: int  # user + nice + system + irq + softirq (guest time is inside user and nice)
    idle: int  # idle + iowait
    steal: int

    @property
    def total(self) -> int:
        return self.busy + self.idle + self.steal


class ProcStatError(ValueError):
    """/proc/stat has no `cpu` line this module can read."""


def parse_proc_stat(text: str) -> CpuTimes:
    """The aggregate `cpu` line of a /proc/stat text; `ProcStatError` when there is none.

    Fields: user nice system idle iowait irq softirq steal guest guest_nice;
    older kernels stop earlier (no steal: 0).
    """
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0] != "cpu":
            continue
        try:
            ticks = [int(value) for value in fields[1:]]
        except ValueError:
            raise ProcStatError(f"/proc/stat: a cpu field is no number: {line!r}") from None
        if len(ticks) < 4:
            raise ProcStatError(f"/proc/stat: the cpu line has {len(ticks)} fields, 4 at least")
        ticks += [0] * (8 - len(ticks))
        user, nice, system, idle, iowait, irq, softirq, steal = ticks[:8]
        return CpuTimes(busy=user + nice + system + irq + softirq, idle=idle + iowait, steal=steal)
    raise ProcStatError("/proc/stat has no aggregate cpu line")


def read_cpu_times(path: Path = PROC_STAT) -> CpuTimes | None:
    """The machine's CPU times now, or None where there is no /proc/stat (not Linux)."""
    try:
        return parse_proc_stat(path.read_text(encoding="ascii"))
    except (OSError, ProcStatError):
        return None


def steal_share(before: CpuTimes, after: CpuTimes) -> float | None:
    """The share of CPU time stolen between two readings (None when no time passed)."""
    total = after.total - before.total
    if total <= 0:
        return None
    return max(0.0, (after.steal - before.steal) / total)


def python_loop_seconds(iterations: int = LOOP_ITERATIONS) -> float:
    """Wall time of a plain Python loop of ITERATIONS additions."""
    started = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += i
    return time.perf_counter() - started


def calibration(loop_s: float, before: CpuTimes | None, after: CpuTimes | None) -> dict[str, Any]:
    """The report's `calibration` entry: loop time, steal share over the run, a warning."""
    steal = steal_share(before, after) if before is not None and after is not None else None
    warning = None
    if steal is not None and steal >= STEAL_WARNING_SHARE:
        warning = (
            f"CPU steal was {steal:.0%} of the run: the hypervisor gave this machine's CPUs "
            "to others, so absolute figures are low; compare ratios, or run again when it is quiet"
        )
    return {
        "python_loop_10m_s": round(loop_s, 3),
        "cpu_steal_share": None if steal is None else round(steal, 4),
        "warning": warning,
    }


def calibration_line(entry: dict[str, Any]) -> str:
    """One sentence for the reports (markdown and terminal)."""
    loop = entry.get("python_loop_10m_s")
    steal = entry.get("cpu_steal_share")
    stolen = "not measured (no /proc/stat)" if steal is None else f"{steal:.1%} of the run"
    looped = "not measured" if loop is None else f"{loop:.2f} s"
    return (
        f"Calibration: a plain 10M-iteration Python loop took {looped}; "
        f"CPU steal {stolen} (/proc/stat)."
    )
