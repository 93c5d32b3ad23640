"""Every long-running process logs a start line (what it serves, where) and a stop line, at
`MOMENTS_LOG_LEVEL`, as text or JSON (`MOMENTS_LOG_FORMAT`), with ISO-8601 UTC times; and
`moments up` refuses a taken port before it starts anything."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import common.topics
import processors.worker
import producers.collector
import sinks.api
import sinks.postgres
import sinks.webhook
from moments.cli import app
from moments.cli.common import load_settings
from moments.endpoints import PID_VARIABLE, write_env_file

ENV = {
    "MOMENTS_BOOTSTRAP": "127.0.0.1:9",
    "MOMENTS_DATABASE_URL": "postgresql://moments:secret@127.0.0.1:9/moments",
    "MOMENTS_DATA_DIR": "/nonexistent-moments-dir",
}

#: command line -> the start line's beginning (the process's name).
PROCESSES = [
    (["worker"], "worker started: consuming interactions from 127.0.0.1:9"),
    (["sink", "postgres"], "sink postgres started: from 127.0.0.1:9 into postgresql://"),
    (["sink", "webhook"], "sink webhook started: from 127.0.0.1:9 to destinations"),
    (["collect"], "collector started: http://127.0.0.1:8080/v1/events into interactions"),
    (["api"], "read API started: http://127.0.0.1:8081/v1/customers/"),
]


@pytest.fixture
def quiet_runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every process's run function a no-op; the root logger restored afterwards."""
    for module, name in (
        (processors.worker, "run_worker"),
        (sinks.postgres, "run_postgres_sink"),
        (sinks.webhook, "run_webhook_sink"),
        (producers.collector, "run_collector"),
        (sinks.api, "run_api"),
    ):
        monkeypatch.setattr(module, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(common.topics, "ensure_topics", lambda settings: [])
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(("command", "start"), PROCESSES)
def test_each_process_logs_its_start_and_stop(
    quiet_runs: None, command: list[str], start: str
) -> None:
    result = CliRunner().invoke(app, command, env=ENV)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    started = [line for line in lines if start in line]
    assert len(started) == 1, lines
    time_text, level = started[0].split(" ")[:2]
    assert level == "INFO" and datetime.fromisoformat(time_text).utcoffset() is not None
    assert any(line.endswith(" stopped") for line in lines)
    assert "secret" not in result.output  # the database password is redacted


def test_json_logs_and_the_level(quiet_runs: None) -> None:
    result = CliRunner().invoke(
        app, ["collect"], env=ENV | {"MOMENTS_LOG_FORMAT": "json", "MOMENTS_LOG_LEVEL": "info"}
    )
    assert result.exit_code == 0, result.output
    entries: list[dict[str, Any]] = [json.loads(line) for line in result.output.splitlines()]
    assert [e["message"].split(":")[0] for e in entries] == [
        "collector started",
        "collector stopped",
    ]
    assert all(e["level"] == "INFO" and "T" in e["time"] for e in entries)
    quiet = CliRunner().invoke(app, ["collect"], env=ENV | {"MOMENTS_LOG_LEVEL": "WARNING"})
    assert quiet.exit_code == 0 and quiet.output == ""
    wrong = CliRunner().invoke(app, ["collect"], env=ENV | {"MOMENTS_LOG_FORMAT": "xml"})
    assert wrong.exit_code == 2 and "MOMENTS_LOG_FORMAT" in wrong.output


def test_up_refuses_a_taken_port_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            app,
            ["up", "--collector-port", str(port)],
            env={"MOMENTS_DATA_DIR": str(tmp_path), "MOMENTS_BOOTSTRAP": ""},
        )
    assert result.exit_code == 2
    assert f"collector port {port} on 127.0.0.1 (--collector-port) is taken" in result.output
    assert "nothing started" in result.output
    assert not (tmp_path / "env").exists() and not (tmp_path / "logs").exists()


def test_commands_find_a_running_up_of_the_same_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "environ", {"MOMENTS_DATA_DIR": str(tmp_path)})
    exports = ["export MOMENTS_BOOTSTRAP=127.0.0.1:40001", "export MOMENTS_API_KEYS='[\"k\"]'"]
    write_env_file(tmp_path, [*exports, f"export {PID_VARIABLE}={os.getpid()}"])
    settings = load_settings()
    assert settings.kafka.bootstrap == "127.0.0.1:40001"
    assert [k.get_secret_value() for k in settings.api.api_keys] == ["k"]
    # A variable set here wins; `up` itself never adopts another stack.
    monkeypatch.setattr(
        os, "environ", {"MOMENTS_DATA_DIR": str(tmp_path), "MOMENTS_BOOTSTRAP": "b:1"}
    )
    assert load_settings().kafka.bootstrap == "b:1"
    monkeypatch.setattr(os, "environ", {"MOMENTS_DATA_DIR": str(tmp_path)})
    assert load_settings(adopt_stack=False).kafka.bootstrap is None
    # A stack whose `moments up` is gone (kill -9 left its file) is not adopted.
    write_env_file(tmp_path, [*exports, f"export {PID_VARIABLE}=999999999"])
    assert load_settings().kafka.bootstrap is None
