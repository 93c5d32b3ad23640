"""Running moments processes side by side: child processes for the worker, sinks and collector.

`moments demo` and `moments up` start each long-running part as its own
process (`python -m moments <command>`), with the settings passed as
`MOMENTS_*` variables, logs in a directory, and the guarantee that every child
is stopped (SIGTERM, then SIGKILL) on exit and dies with its parent.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from common.settings import Settings
from moments.stack import die_with_parent


class ProcessDied(RuntimeError):
    """A child process stopped while it should be running."""


def with_session_keys(settings: Settings) -> Settings:
    """SETTINGS with a fresh secret for each role that has none: the collector's keys
    (`MOMENTS_API_KEYS`), the read API's (`MOMENTS_READ_API_KEYS`), the desk's
    (`MOMENTS_DESK_KEYS`) and the key of the customer id hash (`MOMENTS_ID_HASH_KEY`).
    Each role gets its own key, so a key that sends events never reads customers."""
    api = settings.api
    fresh: dict[str, object] = {}
    for field, keys in (
        ("api_keys", api.api_keys),
        ("read_api_keys", api.read_api_keys),
        ("desk_keys", api.desk_keys),
    ):
        if not keys:
            fresh[field] = [secrets.token_urlsafe(18)]
    if api.id_hash_key is None:
        fresh["id_hash_key"] = secrets.token_urlsafe(32)
    return settings.replace(**fresh) if fresh else settings


class Supervisor:
    """Starts `moments` commands as child processes and stops them all on exit."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, *command: str, **env_overrides: str) -> subprocess.Popen[bytes]:
        """Start `python -m moments COMMAND...` with these settings; output to LOG_DIR/NAME.log."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.settings.as_env(), **env_overrides}
        log = open(self.log_path(name), "wb")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(
            [sys.executable, "-m", "moments", *command],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        log.close()
        self.children[name] = process
        return process

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def check_alive(self) -> None:
        """Raise `ProcessDied` with the tail of its log if any child has exited."""
        for name, process in self.children.items():
            code = process.poll()
            if code is not None:
                tail = self.log_path(name).read_text(errors="replace").strip().splitlines()[-15:]
                raise ProcessDied(f"{name} exited with code {code}:\n" + "\n".join(tail))

    def wait_until_serving(self, urls: list[str], timeout_s: float) -> None:
        """Wait until every URL answers 200 (a child's /healthz); `ProcessDied` when a child
        stops meanwhile, `ProcessDied` naming the URLs still silent after TIMEOUT_S."""
        import httpx

        waiting = list(urls)
        deadline = time.monotonic() + timeout_s
        while waiting:
            self.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(waiting[0], timeout=1.0).status_code == 200:
                    waiting.pop(0)
                    continue
            if time.monotonic() > deadline:
                raise ProcessDied(f"not answering after {timeout_s:g} s: {', '.join(waiting)}")
            time.sleep(0.2)

    def stop_all(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every child, wait, then SIGKILL what is left."""
        for process in self.children.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self.children.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self.children.clear()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
