"""Offline replay: the ten default rules from one file, byte-identical output, partitions."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import pytest

from common.memory import no_cyclic_gc
from processors.engine import DictStore, Engine, EngineConfig, load_rule_pack
from processors.offline import murmur2, partition_for
from processors.replay import replay_events, replay_file
from schemas.codec import SchemaValidationError, read_events_jsonl, to_json_line
from tests.support.engine import T0, D, H
from tests.support.event_lines import iso, line

M = 60_000


#: One story per rule of the default pack (docs/design.md 5.2), in time order.
STORIES = [
    line("s1", "cust-cancel", "call", "cancellation_requested", T0, product="credit_card"),
    line("s2", "cust-bill", "web", "account_opened", T0 + 1 * H, product="gas"),
    line("s3", "cust-bill", "billing", "invoice_issued", T0 + 2 * H, product="gas",
         reference="INV-100", amount=84.5, currency="EUR"),
    line("s4", "cust-case", "email", "dispute_opened", T0 + 3 * H, reference="D-42"),
    line("s5", "cust-meter", "web", "meter_reading_submitted", T0 + 4 * H, product="gas"),
    line("s6", "cust-loyal", "call", "inquiry", T0 + 5 * H, customer_since="2015-03-01"),
    line("s7", "cust-feedback", "web", "feedback_given", T0 + 6 * H,
         text="Please add paperless billing"),
    line("s8", "cust-move", "web", "account_opened", T0 + 7 * H, product="gas"),
    line("s9", "cust-move", "web", "account_opened", T0 + 8 * H, product="credit_card"),
    line("s10", "cust-move", "web", "address_changed", T0 + 9 * H,
         attributes={"new_address": "12 Quay Street, Galway"}),
    line("s11", "cust-bounce", "call", "inquiry", T0 + 10 * H),
    line("s12", "cust-bounce", "web", "inquiry", T0 + 20 * H),
    line("s13", "cust-bounce", "email", "inquiry", T0 + 30 * H),
    line("s14", "cust-meter", "billing", "payment_demand_issued", T0 + 3 * D, reference="PD-7",
         amount=312.0, currency="EUR"),
]  # fmt: skip

EXPECTED = [
    # (customer, rule, destination, triggered_at)
    ("cust-cancel", "life_event_check_in", "care", T0 + H),  # gathered 1 h: by the watermark
    ("cust-bill", "explain_first_bill", "billing", T0 + 2 * H),
    ("cust-case", "case_follow_up", "care", T0 + 3 * H),
    ("cust-meter", "thank_meter_reading", "recognition", T0 + 4 * H),
    ("cust-loyal", "recognize_tenure", "recognition", T0 + 5 * H),
    ("cust-feedback", "route_feedback", "feedback", T0 + 6 * H),
    ("cust-move", "propagate_address", "crm", T0 + 9 * H),
    # nobody said the follow-up was done within 24 h: a team lead takes it (design.md 12.4)
    ("cust-case", "case_follow_up.when_overdue", "care", T0 + 27 * H),
    ("cust-bounce", "omnichannel_escalation", "care", T0 + 30 * H),
    ("cust-case", "case_unresolved", "care", T0 + 51 * H),  # fired by the watermark
    ("cust-meter", "review_payment_demand", "billing", T0 + 3 * D),
]


@pytest.fixture
def stories(tmp_path: Path) -> Path:
    path = tmp_path / "stories.jsonl"
    path.write_text("\n".join(STORIES) + "\n", encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(text) for text in path.read_text(encoding="utf-8").splitlines()]


def test_a_file_with_events_for_all_ten_rules_gives_exactly_the_table(
    stories: Path, tmp_path: Path
) -> None:
    actions_out = tmp_path / "actions.jsonl"
    decisions_out = tmp_path / "decisions.jsonl"
    summary = replay_file(stories, actions_out=actions_out, decisions_out=decisions_out)
    actions = read_jsonl(actions_out)
    got = [(a["customer_id"], a["rule"], a["destination"], a["triggered_at"]) for a in actions]
    assert got == [(c, r, d, iso(t)) for c, r, d, t in EXPECTED]
    assert (summary.events, summary.actions, summary.decisions) == (14, 11, 11)
    assert [d["outcome"] for d in read_jsonl(decisions_out)] == ["fired"] * 11
    by_rule = {a["rule"]: a for a in actions}
    assert by_rule["explain_first_bill"]["due_by"] == iso(T0 + 2 * H + D)
    assert by_rule["explain_first_bill"]["details"]["invoice_id"] == "INV-100"
    assert by_rule["propagate_address"]["details"]["products"] == "credit_card,gas"
    assert by_rule["propagate_address"]["details"]["new_address"] == "12 Quay Street, Galway"
    assert by_rule["case_unresolved"]["evidence"] == ["s4"]
    assert by_rule["review_payment_demand"]["evidence"] == ["s5", "s14"]
    assert all(a["reason"].endswith(".") for a in actions)
    assert all("relationship_balance" in a["details"] for a in actions)
    assert list(actions[0]) == [
        "action_id",
        "customer_id",
        "rule",
        "action",
        "rule_version",
        "destination",
        "priority",
        "reason",
        "evidence",
        "channel_hint",
        "triggered_at",
        "due_by",
        "details",
    ]


def test_pending_timers_fire_only_with_until(stories: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.jsonl"
    short.write_text("\n".join(STORIES[:4]) + "\n", encoding="utf-8")
    out = tmp_path / "a.jsonl"
    replay_file(short, actions_out=out)
    assert "case_unresolved" not in out.read_text()
    replay_file(short, actions_out=out, until_ms=T0 + 51 * H - 1)
    assert "case_unresolved" not in out.read_text()
    replay_file(short, actions_out=out, until_ms=T0 + 51 * H)
    assert [a["rule"] for a in read_jsonl(out)][-1] == "case_unresolved"


def test_replay_is_byte_identical_across_runs(stories: Path, tmp_path: Path) -> None:
    outputs = []
    for run in range(2):
        actions, decisions = tmp_path / f"a{run}.jsonl", tmp_path / f"d{run}.jsonl"
        replay_file(stories, actions_out=actions, decisions_out=decisions, until_ms=T0 + 30 * D)
        outputs.append((actions.read_bytes(), decisions.read_bytes()))
    assert outputs[0] == outputs[1]
    assert outputs[0][0].endswith(b"\n")


def test_partitions_keep_one_watermark_each(stories: Path, tmp_path: Path) -> None:
    # with 12 partitions the quiet dispute's partition never sees a late event: no escalation
    # without --until, and the same actions as one partition once --until passes the deadline
    one, twelve = tmp_path / "one.jsonl", tmp_path / "twelve.jsonl"
    replay_file(stories, actions_out=one, until_ms=T0 + 10 * D)
    replay_file(stories, actions_out=twelve, until_ms=T0 + 10 * D, partitions=12)
    assert sorted(read_jsonl(one), key=str) == sorted(read_jsonl(twelve), key=str)
    # without --until the dispute escalates only if the one later event (cust-meter's demand,
    # past deadline + lateness) lands on the dispute's partition and advances its watermark
    no_until = tmp_path / "no_until.jsonl"
    replay_file(stories, actions_out=no_until, partitions=12)
    fired = [a["rule"] for a in read_jsonl(no_until)]
    same = partition_for("cust-case", 12) == partition_for("cust-meter", 12)
    assert ("case_unresolved" in fired) == same
    assert len(fired) == 10 if same else 9


def test_a_bad_line_names_file_and_line_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(STORIES[0] + "\n" + '{"event_id": "x"}\n', encoding="utf-8")
    actions = tmp_path / "actions.jsonl"
    with pytest.raises(SchemaValidationError) as caught:
        replay_file(path, actions_out=actions, decisions_out=tmp_path / "d.jsonl")
    assert str(caught.value).startswith(f"{path}:2: ")
    assert list(tmp_path.iterdir()) == [path]


def test_replay_equals_process_calls_on_one_store(stories: Path, tmp_path: Path) -> None:
    engine = Engine(load_rule_pack(), EngineConfig())
    store = DictStore()
    lines: list[str] = []
    for event in read_events_jsonl(stories):
        lines.extend(to_json_line(a) for a in engine.process(store, event).actions)
    out = tmp_path / "a.jsonl"
    replay_file(stories, actions_out=out)
    assert out.read_text(encoding="utf-8") == "".join(f"{text}\n" for text in lines)
    again, _ = replay_events(read_events_jsonl(stories), engine=engine)
    assert [to_json_line(a) for a in again] == lines
    by_pack, decisions = replay_events(read_events_jsonl(stories), pack=load_rule_pack())
    assert [to_json_line(a) for a in by_pack] == lines
    assert len(decisions) == len(lines)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        ("abc", 479470107),
    ],
)
def test_murmur2_matches_kafkas_own_vectors(key: str, expected: int) -> None:
    assert murmur2(key.encode()) == expected


def test_partition_for_is_positive_murmur2_modulo() -> None:
    assert partition_for("foobar", 12) == (-790332482 & 0x7FFFFFFF) % 12
    assert {partition_for(f"c{i}", 12) for i in range(500)} == set(range(12))


def test_no_cyclic_gc_pauses_the_collector_and_leaves_no_young_objects_behind() -> None:
    assert gc.isenabled()
    with no_cyclic_gc():
        assert not gc.isenabled()
        state = [[n] for n in range(50_000)]  # tracked containers, like engine state
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0  # nothing stays frozen
    assert gc.get_count()[0] < 1000  # the next collection does not walk them again
    assert len(state) == 50_000


def test_replay_emit_from_warms_up_history_without_emitting(
    stories: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from moments.cli import app

    monkeypatch.delenv("MOMENTS_EMIT_FROM", raising=False)
    actions, decisions = tmp_path / "a.jsonl", tmp_path / "d.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "replay",
            str(stories),
            "--actions-out",
            str(actions),
            "--decisions-out",
            str(decisions),
            "--emit-from",
            iso(T0 + 400 * D),
        ],
    )
    assert result.exit_code == 0, result.output
    assert actions.read_text() == ""
    reasons = [json.loads(x)["reason"] for x in decisions.read_text().splitlines()]
    assert "warm_up" in reasons and "fired" not in reasons


def test_every_host_gets_emit_from_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker, replay and `replay --from-topic` all build their engine with
    `engine_config(settings)`, so MOMENTS_EMIT_FROM reaches each of them."""
    from common.settings import Settings
    from processors.config import engine_config

    monkeypatch.setenv("MOMENTS_EMIT_FROM", "2026-01-01T00:00:00+00:00")
    monkeypatch.setenv("MOMENTS_HOLDOUT_PERCENT", "20%")
    config = engine_config(Settings())
    assert (config.emit_from_ms, config.holdout_percent) == (T0, 20.0)
    monkeypatch.delenv("MOMENTS_EMIT_FROM")
    assert engine_config(Settings()).emit_from_ms is None


def test_status_out_writes_every_status_change_as_the_worker_sends_it(
    stories: Path, tmp_path: Path
) -> None:
    """`replay --status-out` (docs/design.md 12.3): the changes in the engine's order, each
    line the JSON form of the record the worker encodes for action-status (decoded again:
    the same bytes)."""
    from schemas.codec import codec_for, to_json_bytes
    from schemas.records import ActionStatus

    actions_out, status_out = tmp_path / "actions.jsonl", tmp_path / "status.jsonl"
    until = T0 + 40 * D
    replay_file(stories, actions_out=actions_out, status_out=status_out, until_ms=until)
    actions = read_jsonl(actions_out)
    lines = status_out.read_bytes().splitlines()
    records = [json.loads(text) for text in lines]
    assert sorted(r["action_id"] for r in records if r["status"] == "open") == sorted(
        a["action_id"] for a in actions
    )
    assert {r["status"] for r in records} == {"open", "overdue", "lapsed"}
    engine = Engine(load_rule_pack(), EngineConfig())
    store = DictStore()
    statuses: list[ActionStatus] = []
    for event in read_events_jsonl(stories):
        statuses += engine.process(store, event).statuses
    statuses += engine.advance_watermark(store, until).statuses
    codec = codec_for(ActionStatus)
    assert [to_json_bytes(codec.decode(codec.encode(s))) for s in statuses] == lines
