"""The CLI as its own process on pipes, as scripts and CI run it: one error per line,
never folded at 80 columns. (A subprocess of the whole CLI: not a unit test.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.packs import BAD_PACK


def run_piped(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m moments ARGS` with stdout and stderr pipes and no COLUMNS (as in CI)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run(
        [sys.executable, "-m", "moments", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_errors_are_one_a_line_and_never_wrapped_when_not_a_terminal(tmp_path: Path) -> None:
    pack = tmp_path / "bad.yaml"
    pack.write_text(BAD_PACK)
    done = run_piped("rules", "check", str(pack))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) >= 2 and all(line.startswith("error: ") for line in lines), lines
    assert any("a_rule_whose_name" in line and "destination" in line for line in lines)
    assert any("another_rule" in line and "class" in line for line in lines)
    assert max(len(line) for line in lines) > 80  # whole, not folded at 80 columns
