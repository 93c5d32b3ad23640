"""The bench's calibration: /proc/stat parsing, steal share, the warning, a process's CPU time."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from moments.calibration import (
    CpuTimes,
    ProcStatError,
    calibration,
    calibration_line,
    parse_proc_stat,
    process_cpu_seconds,
    read_cpu_times,
    steal_share,
)

STAT = """\
cpu  66885 10 9755 73299 275 3 227 158 40 0
cpu0 30765 0 3989 40292 78 0 47 71 0 0
cpu1 36119 0 5765 33007 197 0 179 87 0 0
intr 1234 0 0
ctxt 99
"""


def test_the_aggregate_cpu_line_is_read_not_a_per_cpu_one() -> None:
    times = parse_proc_stat(STAT)
    # guest (40) is already inside user: not counted twice
    assert times == CpuTimes(busy=66885 + 10 + 9755 + 3 + 227, idle=73299 + 275, steal=158)


def test_an_old_kernel_without_steal_reads_as_no_steal() -> None:
    assert parse_proc_stat("cpu  100 0 50 1000 5\n") == CpuTimes(busy=150, idle=1005, steal=0)


@pytest.mark.parametrize("text", ["", "cpu0 1 2 3 4\n", "cpu  1 2\n", "cpu  1 x 3 4\n"])
def test_no_readable_cpu_line_is_an_error(text: str) -> None:
    with pytest.raises(ProcStatError):
        parse_proc_stat(text)


def test_steal_share_is_the_stolen_part_of_all_ticks_between_readings() -> None:
    before = CpuTimes(busy=1000, idle=1000, steal=0)
    after = CpuTimes(busy=1400, idle=1300, steal=300)  # 1000 ticks, 300 stolen
    assert steal_share(before, after) == pytest.approx(0.3)
    assert steal_share(before, before) is None


def test_high_steal_warns_and_the_line_says_both_figures() -> None:
    quiet = calibration(0.61, CpuTimes(0, 0, 0), CpuTimes(990, 0, 10))
    assert quiet["warning"] is None and quiet["cpu_steal_share"] == 0.01
    stolen = calibration(4.0, CpuTimes(0, 0, 0), CpuTimes(600, 100, 300))
    assert "30%" in stolen["warning"]
    line = calibration_line(stolen)
    assert "took 4.00 s" in line and "CPU steal 30.0% of the run" in line
    assert "not measured" in calibration_line(calibration(0.6, None, None))


def test_a_machine_without_proc_stat_gives_none(tmp_path: Path) -> None:
    assert read_cpu_times(tmp_path / "missing") is None


def test_a_busy_machine_gives_no_verdict_instead_of_no() -> None:
    from moments.bench.report import TARGETS, judge_targets, markdown_table

    busy = calibration(
        0.7, CpuTimes(0, 0, 0), CpuTimes(1000, 0, 0), run_cpu_s=3.0, load=4.5, cpus=2
    )
    assert busy["too_busy"] and busy["load_average_1m"] == 4.5
    assert busy["run_cpu_share"] == pytest.approx(0.3)  # 300 of 1000 busy ticks (100 Hz)
    assert any("load average was 4.5 on 2 CPUs" in r for r in busy["busy_reasons"])
    assert any("only 30%" in r for r in busy["busy_reasons"])
    line = calibration_line(busy)
    assert "load average 4.5 on 2 CPUs" in line and "the run used 30%" in line
    assert "Too busy for a verdict" in line
    quiet = calibration(
        0.6, CpuTimes(0, 0, 0), CpuTimes(1000, 0, 0), run_cpu_s=9.0, load=1.1, cpus=2
    )
    assert not quiet["too_busy"] and quiet["warning"] is None
    missed = {key: 0 for key, *_ in TARGETS}  # every figure far below (or at) its target
    busy_report = {**missed, "calibration": busy}
    verdicts = {t["verdict"] for t in judge_targets(busy_report)}
    assert "no" not in verdicts and "machine too busy to judge" in verdicts
    quiet_verdicts = {t["verdict"] for t in judge_targets({**missed, "calibration": quiet})}
    assert "no" in quiet_verdicts
    table = markdown_table({**busy_report, "targets": judge_targets(busy_report)})
    assert "**no**" not in table and "machine too busy to judge" in table


def test_the_runs_own_processes_in_the_load_average_are_not_a_busy_machine() -> None:
    # A run of two busy processes on 2 CPUs: load 2.1, and it had 98% of the busy CPU time.
    own = calibration(0.4, CpuTimes(0, 0, 0), CpuTimes(1000, 0, 0), run_cpu_s=9.8, load=2.1, cpus=2)
    assert not own["too_busy"] and own["busy_reasons"] == []
    # Load 5.0 with the run at 40%: the others' 3.0 (1.5 per CPU) is a busy machine.
    shared = calibration(
        0.4, CpuTimes(0, 0, 0), CpuTimes(1000, 0, 0), run_cpu_s=4.0, load=5.0, cpus=2
    )
    assert shared["too_busy"]
    assert any("load average was 5.0" in r for r in shared["busy_reasons"])


def test_process_cpu_seconds_reads_a_running_process() -> None:
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # use some CPU
        pass
    used = process_cpu_seconds(os.getpid())
    times = os.times()
    assert used == pytest.approx(times.user + times.system, abs=0.05)  # utime + stime
    assert process_cpu_seconds(2**22 + 1) is None  # above Linux's pid limit: no such process
