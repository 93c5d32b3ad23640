"""What the fault-injection tests share: moments processes to kill, topics to read, figures.

`Fleet` runs `python -m moments <command>` children (the worker, the
PostgreSQL sink) with the test's settings as `MOMENTS_*` variables, through
`moments.runtime.Supervisor`; it kills them with SIGKILL by pid, restarts them,
and tells a kill (ours) from a crash (a child that died on its own).
`Figures` collects the numbers each test reports; the conftest prints them
as one table at the end of the session. `CUSTOMER_DATA` and `LOG_DIRS`
collect the customer data a test gave its children and where they logged,
so the conftest can search the one for the other after every test
(`security.customer_data_leaks`).
"""

from __future__ import annotations

import functools
import io
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from common.settings import Settings
from moments.runtime import Supervisor
from moments.stack import free_port
from producers.publisher import Publisher
from schemas.records import InteractionEvent

#: Marks of the long versions: only `make soak` runs them, with time to finish.
SOAK_MARKS = (pytest.mark.soak, pytest.mark.timeout(3600))

# --------------------------------------------------------------------------- customer data

#: Customer ids, free texts and addresses of the events a test publishes (this test only).
CUSTOMER_DATA: set[str] = set()
#: Log directories of the Fleets a test starts (this test only).
LOG_DIRS: list[Path] = []


def remember_customer_data(events: Iterable[InteractionEvent]) -> None:
    """Note what a log must never show of these events: ids, texts, addresses."""
    for event in events:
        CUSTOMER_DATA.add(event.customer_id)
        if event.text and len(event.text) >= 12:
            CUSTOMER_DATA.add(event.text[:40])
        for name, value in event.attributes.items():
            if "address" in name and len(value) >= 6:
                CUSTOMER_DATA.add(value)


def _events_of(records: Iterable[tuple[str, bytes, bytes, str]]) -> Iterator[InteractionEvent]:
    from schemas.codec import codec_for

    decode = codec_for(InteractionEvent).decode
    for _topic, _key, value, _ident in records:
        try:
            yield decode(value, validate=False)
        except Exception:  # poison on purpose: its key is still noted
            continue


# --------------------------------------------------------------------------- figures


@dataclass
class Figures:
    """The figures one test reports (name -> value), in the order they were set."""

    test: str
    values: dict[str, Any] = field(default_factory=dict)

    def __setitem__(self, name: str, value: Any) -> None:
        self.values[name] = value

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def update(self, **values: Any) -> None:
        self.values.update(values)


FIGURES: list[Figures] = []


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def figures_table(rows: list[Figures]) -> str:
    """The figures of every test as a rich table (plain text, for the terminal)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="moments reliability figures")
    table.add_column("test / figure", no_wrap=True)
    table.add_column("value", justify="right")
    for row in rows:
        table.add_row(f"[bold]{row.test}[/]", "", end_section=False)
        for name, value in row.values.items():
            table.add_row(f"  {name}", _cell(value))
        table.add_section()
    buffer = io.StringIO()
    Console(file=buffer, width=100, force_terminal=False).print(table)
    return buffer.getvalue()


def figures_markdown(rows: list[Figures]) -> str:
    lines = ["| test | figure | value |", "|---|---|---|"]
    for row in rows:
        for name, value in row.values.items():
            lines.append(f"| {row.test} | {name} | {_cell(value)} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- waiting


# --------------------------------------------------------------------------- processes


class Fleet:
    """moments child processes of one test: start, SIGKILL, restart; crashes told from kills.

    Each start of a role gets a log of its own (`<role>-<n>.log`). A child
    that exits while we did not stop or kill it is a crash: `crashes()` lists
    them with the tail of their logs.
    """

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        LOG_DIRS.append(log_dir)
        self.supervisor = Supervisor(settings, log_dir)
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: dict[str, int] = {}
        self.metrics_port: dict[str, int] = {}
        self.kills = 0
        self._ended: list[tuple[str, int | None]] = []  # (log name, exit code) of stopped children
        self._killed: set[str] = set()

    def start(self, role: str, *command: str, **env: str) -> subprocess.Popen[bytes]:
        """Start `python -m moments COMMAND...` as ROLE (ROLE must not be running).

        Each child gets ports of its own (metrics, Faust web; `metrics_port[role]`) and
        the data directory `settings.stack.data_dir / ROLE`.
        """
        assert role not in self.running, f"{role} is already running"
        self.starts[role] = self.starts.get(role, 0) + 1
        name = f"{role}-{self.starts[role]}"
        self.metrics_port[role] = free_port()
        ports = {
            "MOMENTS_METRICS_PORT": str(self.metrics_port[role]),
            "MOMENTS_WORKER_WEB_PORT": str(free_port()),
            "MOMENTS_DATA_DIR": str(self.settings.stack.data_dir / role),  # local state per role
        }
        process = self.supervisor.spawn(name, *command, **{**ports, **env})
        self.running[role] = process
        return process

    def _log_name(self, role: str) -> str:
        return f"{role}-{self.starts[role]}"

    def kill9(self, role: str) -> None:
        """SIGKILL the child running ROLE (by its pid) and reap it."""
        process = self.running.pop(role)
        name = self._log_name(role)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            self._killed.add(name)
            self.kills += 1
        process.wait(timeout=10)
        self.supervisor.children.pop(name, None)
        self._ended.append((name, process.returncode))

    def stop(self, role: str, timeout_s: float = 30.0) -> int | None:
        """SIGTERM the child running ROLE and wait (SIGKILL after `timeout_s`); its exit code."""
        process = self.running.pop(role)
        name = self._log_name(role)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
                self._killed.add(name)
        self.supervisor.children.pop(name, None)
        self._ended.append((name, process.returncode))
        return process.returncode

    def stop_all(self) -> None:
        for role in list(self.running):
            self.stop(role)
        self.supervisor.stop_all()

    def alive(self, role: str) -> bool:
        process = self.running.get(role)
        return process is not None and process.poll() is None

    def check_alive(self) -> None:
        """Raise AssertionError (with the log tail) if a running child exited on its own."""
        for role, process in self.running.items():
            if process.poll() is not None:
                raise AssertionError(
                    f"{role} exited with code {process.returncode}\n"
                    + self.log_tail(self._log_name(role))
                )

    def crashes(self) -> list[str]:
        """Children that died on their own: exited while running, or non-zero after SIGTERM."""
        found = [
            f"{role} exited with code {p.returncode}"
            for role, p in self.running.items()
            if p.poll() is not None
        ]
        for name, code in self._ended:
            if name not in self._killed and code not in (0, None, -signal.SIGTERM):
                found.append(f"{name} exited with code {code}")
        return found

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.supervisor.log_path(name)
        text = path.read_text(errors="replace") if path.exists() else ""
        return f"--- {path} ---\n" + "\n".join(text.splitlines()[-lines:])

    def logs(self) -> str:
        """Every log this fleet wrote, concatenated."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def process_settings(settings: Settings, tmp_path: Path, **changes: Any) -> Settings:
    """Settings for child processes: their own data dir, a free metrics port, `changes`."""
    update: dict[str, Any] = {"data_dir": tmp_path / "data", "metrics_port": free_port()}
    update.update(changes)
    return settings.replace(**update)


def scrape(port: int, timeout_s: float = 5.0) -> str:
    """The Prometheus text a child serves on 127.0.0.1:PORT/metrics."""
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s).text


# --------------------------------------------------------------------------- topics


def committed_offsets(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of TOPIC (negative: none yet)."""
    consumer = Consumer(settings.kafka_config(**{"group.id": group}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in tps}


# --------------------------------------------------------------------------- events


class PacedPublisher:
    """Publishes events through the publisher SDK on a thread, `rate` events per second.

    `published` counts events acknowledged so far; `done` is set at the end;
    an error on the thread is re-raised by `join()`.
    """

    def __init__(self, settings: Settings, events: list[InteractionEvent], rate: float) -> None:
        self.settings = settings
        self.events = events
        self.rate = rate
        remember_customer_data(events)
        self.published = 0
        self.done = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="paced-publisher", daemon=True)

    def start(self) -> PacedPublisher:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            chunk = max(1, int(self.rate / 10))
            started = time.monotonic()
            with Publisher(self.settings) as publisher:
                for index in range(0, len(self.events), chunk):
                    if self._stop.is_set():
                        return
                    for event in self.events[index : index + chunk]:
                        publisher.publish(event)
                    publisher.flush(60)
                    self.published = min(len(self.events), index + chunk)
                    ahead = started + self.published / self.rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
        except BaseException as exc:
            self._error = exc
        finally:
            self.done.set()

    def join(self, timeout_s: float = 300.0) -> None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the publisher did not finish in time"
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


class PacedProducer:
    """Produces (topic, key, value) records on a thread, `rate` per second (keyed like the SDK).

    `produced` counts records acknowledged so far; `ends` holds the end offset
    (last + 1) per (topic, partition) once `done` is set; `join()` re-raises
    an error of the thread.
    """

    def __init__(
        self,
        settings: Settings,
        records: list[tuple[str, bytes, bytes, str]],
        rate: float,
        *,
        compression: str = "none",
    ) -> None:
        """RECORDS: (topic, key, value, ident); `placed` maps where each landed to its ident."""
        self.compression = compression
        self.settings = settings
        self.records = records
        CUSTOMER_DATA.update(key.decode(errors="replace") for _, key, _, _ in records if key)
        remember_customer_data(_events_of(records))
        self.rate = rate
        self.produced = 0
        self.ends: dict[tuple[str, int], int] = {}
        self.placed: dict[tuple[str, int, int], str] = {}
        self.done = threading.Event()
        self._error: BaseException | None = None
        self._failures: list[str] = []
        self._thread = threading.Thread(target=self._run, name="paced-producer", daemon=True)

    def start(self) -> PacedProducer:
        self._thread.start()
        return self

    def _delivered(self, ident: str, err: Any, msg: Message) -> None:
        if err is not None:
            self._failures.append(str(err))
            return
        topic, partition, offset = (
            str(msg.topic()),
            int(msg.partition() or 0),
            int(msg.offset() or 0),
        )
        self.ends[(topic, partition)] = max(self.ends.get((topic, partition), 0), offset + 1)
        self.placed[(topic, partition, offset)] = ident

    def _run(self) -> None:
        try:
            producer = Producer(
                self.settings.kafka_config(
                    **{
                        "enable.idempotence": True,
                        "partitioner": "murmur2_random",
                        "linger.ms": 5,
                        "compression.type": self.compression,
                    }
                )
            )
            chunk = max(1, int(self.rate / 10))
            started = time.monotonic()
            for index in range(0, len(self.records), chunk):
                for topic, key, value, ident in self.records[index : index + chunk]:
                    while True:
                        try:
                            producer.produce(
                                topic,
                                key=key,
                                value=value,
                                on_delivery=functools.partial(self._delivered, ident),
                            )
                            break
                        except BufferError:
                            producer.poll(0.1)
                assert producer.flush(60) == 0, "records not delivered within 60 s"
                assert not self._failures, self._failures[:3]
                self.produced = min(len(self.records), index + chunk)
                ahead = started + self.produced / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        except BaseException as exc:
            self._error = exc
        finally:
            self.done.set()

    def join(self, timeout_s: float = 300.0) -> None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the producer did not finish in time"
        if self._error is not None:
            raise self._error


# --------------------------------------------------------------------------- database


def db_count(conninfo: str, query: str, *params: Any) -> int:
    """A count from PostgreSQL, -1 while the database is down or not migrated yet."""
    try:
        with psycopg.connect(conninfo, connect_timeout=2) as conn:
            row = conn.execute(query, params).fetchone()
    except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
        return -1
    assert row is not None
    return int(row[0])


@contextmanager
def timed(figures: Figures, name: str) -> Iterator[None]:
    """Record the seconds the block took as figure NAME."""
    started = time.monotonic()
    try:
        yield
    finally:
        figures[name] = round(time.monotonic() - started, 1)
