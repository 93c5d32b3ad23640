"""How fast this machine was while a benchmark ran: a reader's yardstick for its figures.

Absolute figures swing with the machine's load (a shared or virtual machine
whose hypervisor hands its CPUs to others: CPU "steal"). Every bench report
carries a calibration: the time of a plain 10M-iteration Python loop and the
share of CPU time stolen over the run (from /proc/stat), the load average and
the run's own share of the CPU time the machine spent, so a reader can tell a
slow machine from a slow change; when the machine was too busy for a verdict
(`too_busy`), a missed target is reported as such instead of "no". Knows
nothing of Kafka or the engine.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import time
from pathlib import Path
from typing import Any, Final

LOOP_ITERATIONS: Final = 10_000_000
#: Above this share of stolen CPU time the report warns that absolute figures are low.
STEAL_WARNING_SHARE: Final = 0.10
#: Above this load average per CPU from other work (the run's own share taken out): busy.
BUSY_LOAD_PER_CPU: Final = 1.0
#: The run had less than this share of the CPU time the machine spent: others had the rest.
BUSY_RUN_SHARE: Final = 0.5
#: The plain loop on an idle machine, and how many times slower means a busy one.
IDLE_LOOP_S: Final = 0.6
BUSY_LOOP_FACTOR: Final = 2.0
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


def run_cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its children that have ended."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all its threads) a running process has used so far, from
    /proc/<pid>/stat; None where it cannot be read (the process ended, or not Linux)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the fields after the command name (which may hold spaces and parentheses): state
    # first, utime and stime 12th and 13th
    fields = text.rpartition(")")[2].split()
    try:
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError):
        return None


def load_average() -> float | None:
    """The 1-minute load average (None where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def run_share(before: CpuTimes, after: CpuTimes, run_cpu_s: float) -> float | None:
    """The share of the machine's busy CPU time between two readings that the run itself
    used (RUN_CPU_S seconds); the rest went to other work on the machine."""
    busy_ticks = after.busy - before.busy
    if busy_ticks <= 0:
        return None
    return min(1.0, run_cpu_s * os.sysconf("SC_CLK_TCK") / busy_ticks)


def busy_reasons(
    loop_s: float,
    steal: float | None,
    load: float | None,
    cpus: int | None,
    share: float | None,
) -> list[str]:
    """Why the machine was too busy for a verdict on absolute figures ([]: it was not)."""
    reasons = []
    if steal is not None and steal >= STEAL_WARNING_SHARE:
        reasons.append(f"CPU steal was {steal:.0%} of the run (the hypervisor gave the CPUs away)")
    # The load average counts the run's own processes too: only the others' share of it
    # (as far as the run's share of the CPU time tells) says that the machine was busy.
    others = load if load is None or share is None else load * (1.0 - share)
    if others is not None and cpus and others / cpus > BUSY_LOAD_PER_CPU:
        reasons.append(f"the load average was {load:.1f} on {cpus} CPUs")
    if share is not None and share < BUSY_RUN_SHARE:
        reasons.append(f"the run had only {share:.0%} of the CPU time the machine spent")
    if loop_s > IDLE_LOOP_S * BUSY_LOOP_FACTOR:
        reasons.append(
            f"the plain loop took {loop_s:.2f} s, over {BUSY_LOOP_FACTOR:g}x an idle machine's"
        )
    return reasons


def calibration(
    loop_s: float,
    before: CpuTimes | None,
    after: CpuTimes | None,
    *,
    run_cpu_s: float | None = None,
    load: float | None = None,
    cpus: int | None = None,
) -> dict[str, Any]:
    """The report's `calibration` entry: loop time, steal share over the run, the load
    average, the run's share of the machine's CPU time, whether the machine was too busy
    for a verdict on absolute figures (`too_busy`, with the reasons) and a warning."""
    steal = steal_share(before, after) if before is not None and after is not None else None
    share = None
    if before is not None and after is not None and run_cpu_s is not None:
        share = run_share(before, after, run_cpu_s)
    reasons = busy_reasons(loop_s, steal, load, cpus, share)
    warning = None
    if reasons:
        warning = (
            "the machine was too busy for a verdict on absolute figures: "
            + "; ".join(reasons)
            + ". Targets missed are reported as such, not as no; compare ratios, or run"
            " again when it is quiet"
        )
    return {
        "python_loop_10m_s": round(loop_s, 3),
        "cpu_steal_share": None if steal is None else round(steal, 4),
        "load_average_1m": None if load is None else round(load, 2),
        "cpus": cpus,
        "run_cpu_share": None if share is None else round(share, 3),
        "too_busy": bool(reasons),
        "busy_reasons": reasons,
        "warning": warning,
    }


def calibration_line(entry: dict[str, Any]) -> str:
    """One sentence for the reports (markdown and terminal)."""
    loop = entry.get("python_loop_10m_s")
    steal = entry.get("cpu_steal_share")
    load, cpus, share = entry.get("load_average_1m"), entry.get("cpus"), entry.get("run_cpu_share")
    stolen = "not measured (no /proc/stat)" if steal is None else f"{steal:.1%} of the run"
    looped = "not measured" if loop is None else f"{loop:.2f} s"
    loaded = (
        "not measured" if load is None else f"{load:.1f}" + (f" on {cpus} CPUs" if cpus else "")
    )
    used = "not measured" if share is None else f"{share:.0%} of the machine's busy CPU time"
    verdict = " Too busy for a verdict." if entry.get("too_busy") else ""
    return (
        f"Calibration: a plain 10M-iteration Python loop took {looped}; "
        f"CPU steal {stolen} (/proc/stat); load average {loaded}; the run used {used}.{verdict}"
    )
