"""`moments up` as a user runs it: free ports, an env file with every URL and key that the
other commands of the directory find without exports, and plain words on the data."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from moments.endpoints import read_env_file
from tests.support.timing import wait_for


def test_up_serves_on_free_ports_and_the_other_commands_find_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
    env["COLUMNS"] = "250"
    # a file, not a pipe: `up` and its children write to it for as long as it runs, and a pipe
    # nobody reads fills and blocks them
    log = tmp_path / "up.log"
    with log.open("wb") as sink:
        up = subprocess.Popen(
            [sys.executable, "-m", "moments", "up"],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            # as a shell script's background job starts it: Ctrl-C (SIGINT) ignored; `up`
            # takes SIGINT back, so it still stops by itself
            preexec_fn=_ignore_sigint,
        )
    try:
        wait_for(
            lambda: bool(read_env_file(tmp_path / ".moments")),
            timeout_s=180,
            what="moments up to write .moments/env",
        )
        found = read_env_file(tmp_path / ".moments")
        assert stat.S_IMODE((tmp_path / ".moments" / "env").stat().st_mode) == 0o600
        for name in ("MOMENTS_COLLECTOR_URL", "MOMENTS_COLLECTOR_KEY", "MOMENTS_API_URL"):
            assert found.get(name), name
        assert not found["MOMENTS_COLLECTOR_URL"].endswith(":8080")  # a free port
        answer = httpx.get(f"{found['MOMENTS_COLLECTOR_URL']}/healthz", timeout=5)
        assert answer.status_code == 200  # it serves once the endpoints are printed
        # No export: `consume` finds the broker of the `up` running from this directory.
        consumed = subprocess.run(
            [sys.executable, "-m", "moments", "consume", "interactions", "--from-beginning"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert consumed.returncode == 0, consumed.stderr
        second = subprocess.run(
            [sys.executable, "-m", "moments", "up"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2 and "already runs from" in second.stderr
    finally:
        stopped_by_itself = stop(up)
    output = log.read_text(errors="replace")
    assert "thrown away when the stack stops" in output
    # (its lines naming keys left out of the message: generated for this stack, but keys)
    shown = "\n".join(line for line in output.splitlines() if not _NAMES_A_KEY.search(line))
    assert stopped_by_itself, f"moments up needed SIGKILL after SIGINT: {shown[-2000:]}"
    assert "stopped: the broker's topics and the database are gone" in output
    assert not (tmp_path / ".moments" / "env").exists()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


#: A line of `up`'s output that names a key or a database URL (left out of a failure).
_NAMES_A_KEY = re.compile(r"(?i)key|export |postgresql://")


def stop(up: subprocess.Popen[bytes]) -> bool:
    """SIGINT, as Ctrl-C; whether `up` stopped by itself within 120 s (else it is killed)."""
    up.send_signal(signal.SIGINT)
    try:
        up.wait(timeout=120)
        return True
    except subprocess.TimeoutExpired:
        up.kill()
        up.wait(timeout=30)
        return False
