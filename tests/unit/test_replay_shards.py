"""Sharded file replay (processors/replay_shards.py): several processes, the same bytes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from processors.engine import EngineConfig
from processors.replay import replay_file
from processors.replay_shards import MIN_SHARDED_BYTES, shard_count
from producers.simulator import write_simulation
from schemas.codec import SchemaValidationError
from tests.support.engine import T0, D, H
from tests.support.event_lines import line


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def replay_with(
    events: Path, out: Path, workers: int, **options: object
) -> tuple[str, str, tuple[int, int, int], int]:
    """(actions sha256, decisions sha256, (events, actions, decisions), workers) of a replay."""
    actions, decisions = out / f"actions-{workers}.jsonl", out / f"decisions-{workers}.jsonl"
    summary = replay_file(
        events, actions_out=actions, decisions_out=decisions, workers=workers, **options
    )  # type: ignore[arg-type]
    return (
        digest(actions),
        digest(decisions),
        (summary.events, summary.actions, summary.decisions),
        summary.workers,
    )


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated population with every kind of rule, timers, deferrals and late events."""
    path = tmp_path_factory.mktemp("shards") / "events.jsonl"
    write_simulation(path, 1000, 45, 11, story_rate=0.5, workers=1)
    return path


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"until_ms": T0 + 400 * D},
        {"partitions": 4, "until_ms": T0 + 400 * D},
        {"config": EngineConfig(holdout_percent=15.0, emit_from_ms=T0 + 20 * D)},
        {"config": EngineConfig(contact_cap=2, allowed_lateness_ms=0)},
    ],
    ids=["plain", "until", "partitions", "holdout-warm-up", "cap-no-lateness"],
)
def test_shards_write_the_bytes_one_process_writes(
    population: Path, tmp_path: Path, options: dict[str, object]
) -> None:
    one = replay_with(population, tmp_path, 1, **options)
    assert one[2][1] > 100  # actions: the comparison below has something to compare
    assert one[3] == 1
    for workers in (2, 3):
        sharded = replay_with(population, tmp_path, workers, **options)
        assert sharded[:3] == one[:3], f"{workers} shards"
        assert sharded[3] == workers


def test_timers_of_many_customers_due_at_one_line_fire_in_the_one_process_order(
    tmp_path: Path,
) -> None:
    """Forty customers' cases fall due at the same moment, some at the same deadline: the
    one event that moves the clock fires them all, across every shard, in deadline order,
    ties by customer."""
    lines = [
        line(f"d{i}", f"cust-{i:03d}", "email", "dispute_opened", T0 + (i % 3) * H,
             reference=f"D-{i}")
        for i in range(40)
    ]  # fmt: skip
    lines.append(line("late", "cust-999", "web", "inquiry", T0 + 10 * D))
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    one = replay_with(events, tmp_path, 1)
    # a follow-up, its escalation at its due_by (design.md 12.4) and an unresolved case each
    assert one[2][1] == 120
    for workers in (2, 3, 5):
        assert replay_with(events, tmp_path, workers)[:3] == one[:3]


def test_a_bad_line_gives_the_one_process_error_and_writes_nothing(
    population: Path, tmp_path: Path
) -> None:
    lines = population.read_bytes().splitlines(keepends=True)[:3000]
    lines[1200] = b"\n"  # blank lines are skipped
    lines[1700] = lines[1700].replace(b'"occurred_at":"', b'"occurred_at":"not a time ')
    lines[2500] = b"{not json\n"  # a later bad line: not the one reported
    events = tmp_path / "bad.jsonl"
    events.write_bytes(b"".join(lines))
    errors = []
    for workers in (1, 2, 3):
        out = tmp_path / f"actions-{workers}.jsonl"
        with pytest.raises(SchemaValidationError) as caught:
            replay_file(events, actions_out=out, workers=workers)
        errors.append(str(caught.value))
        assert not out.exists()
        assert not list(tmp_path.glob(".*partial")) and not list(tmp_path.glob(".moments-*"))
    assert errors[0] == f"{events}:1701: occurred_at: " + errors[0].split(": occurred_at: ")[1]
    assert errors == [errors[0]] * 3


def test_an_early_bad_line_stops_every_shard_with_its_error(
    population: Path, tmp_path: Path
) -> None:
    """A bad line near the start of a long file: the shards that do not own it stop once past
    it (they look every 4,096 lines) and the error is the one process's."""
    lines = population.read_bytes().splitlines(keepends=True)
    assert len(lines) > 4096
    lines[9] = b'{"event_id":"x","customer_id":"c-bad","channel":"fax"}\n'
    events = tmp_path / "early.jsonl"
    events.write_bytes(b"".join(lines))
    errors = set()
    for workers in (1, 2, 3):
        with pytest.raises(SchemaValidationError) as caught:
            replay_file(events, actions_out=tmp_path / "a.jsonl", workers=workers)
        errors.add(str(caught.value))
    assert len(errors) == 1 and f"{events}:10:" in errors.pop()


def test_lines_other_shards_cannot_place_quickly_are_read_in_full(
    population: Path, tmp_path: Path
) -> None:
    """A first line with a byte-order mark, timestamps with other offsets, fields in another
    order: every shard reads them the slow way and still agrees with one process."""
    lines = population.read_text(encoding="utf-8").splitlines()[:2000]
    lines[0] = "\ufeff" + lines[0]
    for i in range(5, 2000, 97):
        lines[i] = lines[i].replace("+00:00", "+02:00")
    for i in range(7, 2000, 89):  # customer_id last
        record = json.loads(lines[i])
        customer = record.pop("customer_id")
        lines[i] = json.dumps({**record, "customer_id": customer}, separators=(",", ":"))
    events = tmp_path / "odd.jsonl"
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    one = replay_with(events, tmp_path, 1)
    assert replay_with(events, tmp_path, 2)[:3] == one[:3]


def test_a_customer_id_with_a_lone_surrogate_is_placed_like_any_other(tmp_path: Path) -> None:
    """orjson refuses the escaped lone surrogate, the general path takes it: so must the
    shards' placing of the line."""
    lines = [
        line("e1", "c1", "web", "meter_reading_submitted", T0),
        line("e2", "x\ud800", "web", "inquiry", T0 + H),
        line("e3", "c2", "web", "meter_reading_submitted", T0 + 2 * H),
    ]
    events = tmp_path / "surrogate.jsonl"
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    one = replay_with(events, tmp_path, 1)
    assert one[2][0] == 3
    assert replay_with(events, tmp_path, 2)[:3] == one[:3]


def test_how_many_shards(tmp_path: Path) -> None:
    small = tmp_path / "small.jsonl"
    small.write_bytes(b"{}\n")
    assert shard_count(None, small) == 1  # too small to be worth a process
    assert shard_count(3, small) == 3  # asked for
    assert shard_count(1, small) == 1
    big = tmp_path / "big.jsonl"
    big.write_bytes(b"\n" * MIN_SHARDED_BYTES)
    assert 1 <= shard_count(None, big) <= 8
    assert shard_count(None, tmp_path / "missing.jsonl") == 1
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    assert shard_count(3, pipe) == 1  # a pipe is read once: the shards could not each read it


def test_a_rules_change_replays_in_one_process(population: Path, tmp_path: Path) -> None:
    from processors.engine import load_rule_pack

    summary = replay_file(
        population,
        actions_out=tmp_path / "a.jsonl",
        workers=2,
        changes=[(T0 + 20 * D, load_rule_pack(None))],
    )
    assert summary.workers == 1


def test_the_cli_takes_workers_from_the_option_or_the_settings(
    population: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from moments.cli import app

    def run(*options: str) -> tuple[str, bytes]:
        out = tmp_path / "cli-actions.jsonl"
        result = CliRunner().invoke(
            app, ["replay", str(population), "--actions-out", str(out), *options]
        )
        assert result.exit_code == 0, result.output
        return result.output, out.read_bytes()

    monkeypatch.setenv("MOMENTS_REPLAY_WORKERS", "2")
    shared, by_two = run()
    assert "2 processes" in shared
    alone, by_one = run("--workers", "1")
    assert "processes" not in alone
    assert by_one == by_two


def test_occurred_ms_reads_every_form_as_fromisoformat_does() -> None:
    """The digit-by-digit read of written times, and every other form through fromisoformat:
    the same milliseconds, the same refusals (a second read finds the cached day)."""
    import random
    from datetime import datetime, timedelta

    from schemas.codec import occurred_ms
    from schemas.validation import EPOCH, ONE_MS, TS_MAX, TS_MIN

    def expected(value: str) -> int | None:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        if moment.tzinfo is None:
            return None
        ms = (moment - EPOCH) // ONE_MS
        return ms if TS_MIN <= ms <= TS_MAX else None

    rng = random.Random(3)
    values = ["0001-01-01T00:00:00.000+00:00", "9999-12-31T23:59:59.999+00:00",
              "9999-12-31T23:59:59.999-01:00", "0001-01-01T00:00:00.000+01:00",
              "2026-W01-1T00:10:05.000+00:00"]  # fmt: skip
    for _ in range(2000):
        written = (EPOCH + timedelta(milliseconds=rng.randint(-(10**12), 3 * 10**12))).isoformat(
            timespec="milliseconds"
        )
        values += [
            written,
            written.replace("+00:00", "+02:00"),
            written[:17] + "60" + written[19:],  # no 60th second
            written[:17] + "5" + written[18:],
            written.replace("T", " "),
            written[:-6],  # no offset
            written[:-6] + "Z",
        ]
    for _ in range(2):
        assert [occurred_ms(v) for v in values] == [expected(v) for v in values]


def test_merged_output_survives_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The merge writes its pieces straight to the file (os.writev); a write the system cuts
    short is finished, and a file without a descriptor gets the pieces joined."""
    import io

    from processors import replay_shards

    pieces = [memoryview(f"line {n}\n".encode()) for n in range(5000)]
    expected = b"".join(pieces)
    real_writev = os.writev

    def short_writev(fd: int, buffers: list[memoryview]) -> int:
        return real_writev(fd, buffers[: max(1, len(buffers) // 3)])  # a third at most

    monkeypatch.setattr(replay_shards.os, "writev", short_writev)
    target = tmp_path / "out.jsonl"
    with open(target, "wb") as file:
        file.write(b"head\n")  # buffered: written before the pieces
        replay_shards._write_pieces(file, pieces)
    assert target.read_bytes() == b"head\n" + expected
    memory = io.BytesIO()
    replay_shards._write_pieces(memory, pieces)
    assert memory.getvalue() == expected
