"""The rules topic keyed by pack name and version (docs/design.md 8.2), without a broker.

`moments rules publish / rollback / history` run against an in-memory topic that keeps
records by key as compaction does; the worker's follower then reads what they left.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

import common.rules_topic as rules_topic
from common.metrics import RULES_PACK
from common.rules_topic import (
    Published,
    decode_published,
    next_version,
    record_key,
    with_versions,
)
from common.settings import Settings
from moments.cli import app
from processors.engine import DEFAULT_PACK_PATH
from processors.engine.switching import pack_id
from processors.rules_follower import RulesFollower, startup_pack
from tests.support.packs import DEFAULT_TEXT, TENURE_10, tenure_version, variant


class MemoryTopic:
    """A one-partition topic in memory: records by offset, compacted by key on request."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, Published]] = []
        self.offset = 0

    def append(self, key: bytes, record: Published) -> Published:
        self.records.append((key, record))
        self.offset += 1
        return record

    def publish(
        self,
        settings: Settings,
        pack: str,
        text: str,
        author: str,
        timeout_s: float = 20.0,
        *,
        key: Any = None,
        version: int | None = None,
    ) -> Published:
        if version is None:
            version = next_version(self.history(settings, pack))
        record = Published(self.offset, pack, text, "2026-12-07T00:00:00.000Z", author)
        record = dataclasses.replace(record, version=version)
        return self.append(record_key(pack, version), record)

    def publish_legacy(self, pack: str, text: str) -> None:
        """What today's main wrote: key = pack name, no version in the value."""
        value = json.dumps({"pack": pack, "yaml": text, "published_at": "x", "author": "old"})
        record = decode_published(self.offset, value.encode())
        assert record is not None and record.version is None
        self.append(pack.encode(), record)

    def compact(self) -> None:
        last = {key: record.offset for key, record in self.records}
        self.records = [(k, r) for k, r in self.records if last[k] == r.offset]

    def history(
        self, settings: Settings, pack: str | None = None, timeout_s: float = 15.0
    ) -> list[Published]:
        return with_versions(r for _, r in self.records if pack is None or r.pack == pack)


@pytest.fixture
def topic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MemoryTopic:
    memory = MemoryTopic()
    monkeypatch.setattr(rules_topic, "pack_history", memory.history)
    monkeypatch.setattr(rules_topic, "publish_pack", memory.publish)
    monkeypatch.setenv("MOMENTS_BOOTSTRAP", "127.0.0.1:9")  # never reached
    monkeypatch.delenv("MOMENTS_RULES_PATH", raising=False)
    monkeypatch.delenv("MOMENTS_RULES_SIGNING_KEYS", raising=False)
    return memory


@pytest.fixture
def raised(tmp_path: Path) -> Path:
    """The default pack with recognize_tenure changed and at version 2."""
    return variant(tmp_path, "raised.yaml", TENURE_10, tenure_version(2))


@pytest.fixture
def default(tmp_path: Path) -> Path:
    path = tmp_path / "default.yaml"
    path.write_text(DEFAULT_TEXT, encoding="utf-8")
    return path


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, ["rules", *args])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def texts(topic: MemoryTopic) -> list[tuple[int | None, str]]:
    """(version, hash) of every record of the default pack, in topic order."""
    return [(r.version, pack_id(r.yaml)) for r in topic.history(Settings(), "default")]


def follow(topic: MemoryTopic) -> RulesFollower:
    """A worker started now: its follower reads the whole topic."""
    settings = Settings(bootstrap="127.0.0.1:9", topic_prefix="unit.")
    follower = RulesFollower(settings, startup_pack(settings))
    for record in topic.history(settings):
        follower.offer(record)
    return follower


D = pack_id(DEFAULT_TEXT)


def test_a_pack_published_before_the_default_rolls_back_to_the_default(
    topic: MemoryTopic, raised: Path
) -> None:
    r = pack_id(raised.read_text(encoding="utf-8"))
    assert "published default v1" in cli("publish", str(raised))
    assert f"to the pack run with none published ({DEFAULT_PACK_PATH})" in cli("rollback")
    assert texts(topic) == [(1, r), (2, D)]
    assert follow(topic).current.pid == D
    assert "to version 1" in cli("rollback")  # and forth again
    assert texts(topic)[-1] == (3, r)
    assert follow(topic).current.pid == r


def test_the_default_is_published_after_a_raised_pack_without_a_bump(
    topic: MemoryTopic, raised: Path, default: Path
) -> None:
    r = pack_id(raised.read_text(encoding="utf-8"))
    cli("publish", str(raised))
    out = cli("publish", str(default))
    assert "published default v2" in out and "the pack run with none published" in out
    assert follow(topic).current.pid == D
    assert "to version 1" in cli("rollback")
    cli("publish", str(default))  # a version published before: no bump either
    topic.compact()  # every version has its own key: nothing goes
    assert texts(topic) == [(1, r), (2, D), (3, r), (4, D)]
    assert follow(topic).current.pid == D


def test_another_pack_first_then_the_default_then_rollbacks(
    topic: MemoryTopic, tmp_path: Path, raised: Path, default: Path
) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(DEFAULT_TEXT.replace("name: default", "name: other"), encoding="utf-8")
    r = pack_id(raised.read_text(encoding="utf-8"))
    assert "published other v1" in cli("publish", str(other))
    cli("publish", str(default))
    result = CliRunner().invoke(app, ["rules", "rollback"])
    assert result.exit_code == 2 and "no earlier version of pack 'default'" in result.output
    cli("publish", str(raised))
    cli("rollback")
    assert texts(topic) == [(1, D), (2, r), (3, D)]
    assert follow(topic).current.pid == D
    assert [r.version for r in topic.history(Settings(), "other")] == [1]


def test_a_changed_rule_without_a_bump_is_refused_before_anything_is_published(
    topic: MemoryTopic, tmp_path: Path
) -> None:
    unraised = variant(tmp_path, "unraised.yaml", TENURE_10)
    result = CliRunner().invoke(app, ["rules", "publish", str(unraised)])
    assert result.exit_code == 2 and "recognize_tenure" in result.output
    assert topic.records == []


def test_history_shows_each_versions_hash_as_the_metric_does(
    topic: MemoryTopic, raised: Path, default: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("publish", str(raised))
    cli("publish", str(default))
    result = CliRunner().invoke(app, ["rules", "history", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(row["version"], row["hash"]) for row in rows] == texts(topic)
    follow(topic)
    shown = {s.labels["pack"] for m in RULES_PACK.collect() for s in m.samples if s.value == 1}
    assert shown == {rows[-1]["hash"]}
    monkeypatch.setattr("moments.cli.common.console", Console(width=80))  # a narrow terminal
    monkeypatch.setattr("moments.cli.rules.console", Console(width=80))
    table = CliRunner().invoke(app, ["rules", "history"]).output
    assert all(row["hash"] in table for row in rows), table


def test_a_topic_written_before_versions_is_read_and_continued(
    topic: MemoryTopic, raised: Path, default: Path
) -> None:
    r = pack_id(raised.read_text(encoding="utf-8"))
    topic.publish_legacy("default", DEFAULT_TEXT)
    topic.publish_legacy("default", raised.read_text(encoding="utf-8"))
    topic.compact()  # keyed by name: only the last of the pack is left
    assert texts(topic) == [(1, r)]
    cli("publish", str(default))
    assert "to version 1" in cli("rollback")
    assert texts(topic) == [(1, r), (2, D), (3, r)]
    assert [key for key, _ in topic.records] == [b"default", b"default@2", b"default@3"]
    topic.publish_legacy("default", DEFAULT_TEXT)  # a publisher still on the old code
    assert texts(topic)[-1] == (4, D)
    assert follow(topic).current.pid == D
