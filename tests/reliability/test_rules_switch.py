"""A rule pack published while the worker runs under load (docs/design.md 8.3).

A simulated population is published at a steady rate to a running worker (and
the PostgreSQL sink). A quarter of the way in, a new pack B is published to the
`rules` topic (case_unresolved 48 h -> 24 h and recognize_tenure 5 -> 10 years,
both version 2; omnichannel_escalation removed; a new rule thank_payment): the
worker switches its partitions without a restart; the time from the publish to
the first partition switched is the switch latency. Once the switch is
committed the worker is killed with SIGKILL and restarted; at half way a second
worker joins (a rebalance moves partitions, with their state, to it); at three
quarters B is rolled back (the default pack published again).

The oracle is `moments replay --rules-change` at the switch points each
partition recorded in its state (its lineage's recent switches): per partition,
its events in log order replayed from the first pack of its lineage with a
change to each later pack at the time of that switch (the command's output is
checked against the same replay in code, whose stores give the expected engine
state). What PostgreSQL holds must equal it exactly (0 lost, 0 duplicated,
nothing unexpected), and so must every customer's engine state.
Idle ticks are off (`idle_tick_s` one hour): they would move a partition's
clock by the wall clock, which a replay of the events alone cannot know.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from common.rules_topic import publish_pack
from common.settings import Settings
from moments.cli import app
from processors.config import engine_config
from processors.engine import DictStore, Engine, EngineOutput
from processors.engine.state import LINE_KEY
from processors.engine.switching import pack_from_text, pack_id
from processors.offline import partition_for
from processors.replay import Replayer
from producers.simulator import simulate
from schemas.codec import to_json_lines
from schemas.records import ActionEvent, Decision, InteractionEvent
from tests.reliability.harness import Figures, PacedProducer, process_settings, scrape
from tests.reliability.pipeline import Pipeline, state_differences
from tests.reliability.verifier import verify, wire_records
from tests.support.event_lines import iso
from tests.support.packs import DEFAULT_TEXT as A_TEXT
from tests.support.timing import wait_for
from tests.support.worker_state import read_worker_state


def pack_b() -> str:
    doc = yaml.safe_load(A_TEXT)
    rules = []
    for raw in doc["rules"]:
        if raw["id"] == "omnichannel_escalation":
            continue
        if raw["id"] == "case_unresolved":
            raw["when"]["within"], raw["version"] = "24h", 2
        if raw["id"] == "recognize_tenure":
            raw["when"]["min_tenure_years"], raw["version"] = 10, 2
        rules.append(raw)
    rules.append(
        {
            "id": "thank_payment",
            "version": 1,
            "when": {"kind": "match", "type": "payment_received"},
            "action": "thank_payment",
            "destination": "recognition",
            "priority": 10,
            "class": "service",
            "reason": "The customer paid {via} on {date}; thank them.",
        }
    )
    doc["rules"] = rules
    return yaml.safe_dump(doc, sort_keys=False)


def switches(port: int) -> int:
    """moments_rules_switches_total of the worker serving metrics on PORT (0 if unreachable)."""
    try:
        text = scrape(port, timeout_s=2.0)
    except Exception:
        return 0
    found = re.search(r"^moments_rules_switches_total (\S+)$", text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def replay_cli(
    workdir: Path, events: list[InteractionEvent], texts: list[str], times: list[int]
) -> tuple[bytes, bytes]:
    """`moments replay EVENTS --rules A --rules-change TS=B ...`: its actions and decisions."""
    workdir.mkdir(parents=True)
    files = [workdir / f"pack{i}.yaml" for i in range(len(texts))]
    for file, text in zip(files, texts, strict=True):
        file.write_text(text, encoding="utf-8")
    (workdir / "events.jsonl").write_bytes(to_json_lines(events))
    args = ["replay", str(workdir / "events.jsonl"), "--rules", str(files[0])]
    args += ["--actions-out", str(workdir / "a.jsonl"), "--decisions-out", str(workdir / "d.jsonl")]
    for at, file in zip(times, files[1:], strict=True):
        args += ["--rules-change", f"{iso(at)}={file}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return (workdir / "a.jsonl").read_bytes(), (workdir / "d.jsonl").read_bytes()


def oracle(
    settings: Settings,
    events: list[InteractionEvent],
    lineages: dict[int, dict[str, Any]],
    workdir: Path,
) -> tuple[list[ActionEvent], list[Decision], dict[int, dict[str, Any]], int]:
    """Per partition: replay its events from the first pack of its lineage, switching at the
    times it recorded (and check that `moments replay --rules-change` writes exactly that);
    (actions, decisions, engine state per partition, switches)."""
    config = engine_config(settings)
    out = EngineOutput()
    states: dict[int, dict[str, Any]] = {}
    count = 0
    texts = {pack_id(text): text for text in (A_TEXT, pack_b())}
    for partition, state in sorted(lineages.items()):
        line = state[LINE_KEY]
        recent = line["recent"]
        assert len(recent) == line["epoch"], "a switch the lineage no longer remembers"
        chain = [recent[0][0], *(r[1] for r in recent)] if recent else [line["head"]]
        times = [r[2] for r in recent]
        packs = [pack_from_text(texts[pid], pid) for pid in chain]
        changes = list(zip(times, packs[1:], strict=True))
        count += len(changes)
        replayer = Replayer(Engine(packs[0], config), 1, changes)
        mine = [
            e
            for e in events
            if partition_for(e.customer_id, settings.kafka.interactions_partitions) == partition
        ]
        mine_out = EngineOutput()
        for event in mine:
            mine_out.extend(replayer.feed(event))
        cli = replay_cli(workdir / str(partition), mine, [texts[pid] for pid in chain], times)
        assert cli == (to_json_lines(mine_out.actions), to_json_lines(mine_out.decisions))
        out.extend(mine_out)
        store: DictStore = replayer.stores[0]
        states[partition] = json.loads(json.dumps(store.data, sort_keys=True))
    return out.actions, out.decisions, states, count


def test_a_pack_published_under_load_switches_live_survives_kill_rebalance_and_rollback(
    settings: Settings, database: str, tmp_path: Path, figures: Figures
) -> None:
    settings = process_settings(settings, tmp_path, database_url=database, idle_tick_s=3600.0)
    events = list(simulate(1500, 60, seed=18))
    records = wire_records(settings, events)
    rate = len(records) / 60.0
    figures.update(events=len(events), **{"publish rate /s": round(rate)})
    pipeline = Pipeline(settings, tmp_path / "logs")
    try:
        pipeline.start_sink()
        pipeline.start_worker()
        producer = PacedProducer(settings, records, rate).start()

        def produced(fraction: float) -> bool:
            pipeline.fleet.check_alive()
            return producer.produced >= fraction * len(records)

        wait_for(lambda: produced(0.25), 120, "a quarter of the events", poll_s=0.2)
        port = pipeline.fleet.metrics_port["worker"]
        published = time.monotonic()
        publish_pack(settings, "default", pack_b(), "test")
        wait_for(lambda: switches(port) > 0, 60, "the first partition to switch", poll_s=0.05)
        latency = time.monotonic() - published
        # the switch is durable once two more commits went by; then kill -9 and restart
        committed = sum(pipeline.worker_committed().values())
        for _ in range(2):
            wait_for(
                lambda before=committed: sum(pipeline.worker_committed().values()) > before,
                60,
                "a commit",
                poll_s=0.5,
            )
            committed = sum(pipeline.worker_committed().values())
        pipeline.fleet.kill9("worker")
        pipeline.start_worker()
        wait_for(lambda: produced(0.5), 180, "half of the events", poll_s=0.5)
        pipeline.start_worker("worker-2")  # a rebalance: partitions move with their state
        wait_for(lambda: produced(0.75), 180, "three quarters of the events", poll_s=0.5)
        publish_pack(settings, "default", A_TEXT, "test")  # what `moments rules rollback` does
        producer.join()
        ends = {p: o for (_, p), o in producer.ends.items()}
        pipeline.wait_worker_past(ends, timeout_s=300)
        pipeline.fleet.stop("worker-2")
        pipeline.fleet.stop("worker")
        final = read_worker_state(settings)
        actions, decisions, states, switched = oracle(
            settings, events, final.engine, tmp_path / "replay"
        )
        distinct = len({d.decision_id for d in decisions})
        pipeline.wait_rows(database, len({a.action_id for a in actions}), distinct, 240)
        pipeline.fleet.stop("sink")
        crashes = pipeline.fleet.crashes()
        logs = pipeline.fleet.logs()
        joined = pipeline.fleet.supervisor.log_path("worker-2-1").read_text(errors="replace")
    finally:
        pipeline.close()

    verdict = verify(actions, decisions, database)
    state_problems = state_differences(states, final.engine)
    chains = [s[LINE_KEY]["epoch"] + 1 for s in final.engine.values()]
    figures.update(
        **verdict.figures(),
        **{"switch latency s": round(latency, 2), "partition switches": switched},
        **{"state keys differing": len(state_problems), "worker crashes": len(crashes)},
    )
    assert not crashes, crashes
    assert verdict.ok, verdict.summary()
    assert not state_problems, state_problems[:10]
    # every partition went to B and back to A (its lineage: A, B, A), with no restart of its
    # own: the kill and the rebalance resumed each on the pack it had
    assert chains == [3] * settings.kafka.interactions_partitions, chains
    assert "refused" not in logs
    assert "switched to rule pack" in joined  # the worker that joined rolled its partitions back
    rules = {a.rule for a in actions}
    assert "thank_payment" in rules  # B ran
    assert any(a.rule == "omnichannel_escalation" for a in actions)  # A ran (before, after)
