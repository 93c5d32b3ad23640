"""The worker follows the rules topic without a broker: what it accepts, refuses and records."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from typing import Any

import orjson

from common.metrics import RULES_ACTIVE, RULES_PACK, RULES_REFUSED, RULES_SWITCHES
from common.rules_topic import Published
from common.settings import Settings
from processors.engine.switching import pack_id
from processors.faust_host.changelog import StagedTable
from processors.worker import TriggerWorker
from schemas.codec import codec_for
from schemas.records import ActionEvent, InteractionEvent
from tests.support.engine import T0, D, H
from tests.support.packs import DEFAULT_TEXT, case_pack
from tests.support.worker import FakeEvent, FakeMessage, FakeOutput, FakeTable


def record(offset: int, text: str, pack: str = "default") -> Published:
    return Published(offset, pack, text, "2026-12-02T00:00:00.000Z", "unit")


class KeptOutput(FakeOutput):
    """Also keeps the actions sent, decoded."""

    def __init__(self) -> None:
        super().__init__()
        self.actions: list[ActionEvent] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> None:
        super().send(topic, key, value, headers)
        if ".actions." in topic and value is not None:
            self.actions.append(codec_for(ActionEvent).decode(value))


def new_worker(tmp_path: Any, table: FakeTable) -> TriggerWorker:
    settings = Settings(bootstrap="127.0.0.1:9", data_dir=tmp_path, topic_prefix="unit.")
    worker = TriggerWorker(settings)
    worker.output = KeptOutput()  # type: ignore[assignment]
    worker.staged_state = StagedTable(table)
    return worker


def deliver(worker: TriggerWorker, *records: tuple[int, InteractionEvent]) -> None:
    codec = codec_for(InteractionEvent)

    async def handle() -> None:
        for offset, event in records:
            message = FakeMessage(offset, codec.encode(event))
            await worker.handle(FakeEvent(message))  # type: ignore[arg-type]

    asyncio.run(handle())


def event(event_id: str, type_: str, at: int, **fields: Any) -> InteractionEvent:
    return InteractionEvent(event_id, "ann", "call", type_, at, "unit", **fields)


def state(table: FakeTable, key: str) -> Any:
    raw = table.data.get(f"0/e/{key}")
    return None if raw is None else orjson.loads(raw)


def test_the_follower_takes_raised_versions_and_rollbacks_and_refuses_the_rest(
    tmp_path: Any,
) -> None:
    worker = new_worker(tmp_path, FakeTable())
    follower = worker.rules
    assert follower.current.pid == pack_id(DEFAULT_TEXT)
    refused = RULES_REFUSED._value.get()
    assert not follower.offer(record(0, case_pack("24h", 1)))  # changed, same version
    assert not follower.offer(record(1, "rules: [\n"))  # not YAML
    assert not follower.offer(record(2, case_pack("24h", 2), pack="other"))  # another pack
    assert RULES_REFUSED._value.get() - refused == 2
    assert follower.current.pid == pack_id(DEFAULT_TEXT)
    assert follower.offer(record(3, case_pack("24h", 2)))
    assert RULES_ACTIVE.labels("case_unresolved", "2")._value.get() == 1
    assert ("case_unresolved", "1") not in {
        (s.labels["rule"], s.labels["version"])
        for metric in RULES_ACTIVE.collect()
        for s in metric.samples
    }
    assert [s.labels["pack"] for m in RULES_PACK.collect() for s in m.samples] == [
        pack_id(case_pack("24h", 2))
    ]
    assert follower.offer(record(4, DEFAULT_TEXT))  # rollback: version 1 again, run before
    assert follower.current.offset == 4


def test_a_partition_switches_at_its_next_event_records_it_and_resumes_on_it(
    tmp_path: Any,
) -> None:
    table = FakeTable()
    worker = new_worker(tmp_path, table)
    switches = RULES_SWITCHES._value.get()
    deliver(worker, (0, event("e1", "dispute_opened", T0, reference="R1")))
    line = state(table, "p:line")
    assert (line["head"], line["pending"], line["epoch"]) == (pack_id(DEFAULT_TEXT), None, 0)
    assert set(line["packs"]) == {pack_id(DEFAULT_TEXT)}
    worker.rules.offer(record(0, case_pack("24h", 2)))
    new = pack_id(case_pack("24h", 2))
    deliver(worker, (1, event("e2", "inquiry", T0 + H)))
    line = state(table, "p:line")
    assert (line["head"], line["epoch"]) == (new, 1)
    # the case opened under version 1 keeps that version (and its pack) referenced
    assert line["retired"] == [["case_unresolved", 1, pack_id(DEFAULT_TEXT)]]
    switch = state(table, "p:pack")
    assert switch["offset"] == 1 and switch["pack"] == new and switch["at"] == T0 + 1
    assert switch["versions"]["case_unresolved"] == 2
    assert RULES_SWITCHES._value.get() - switches == 1
    assert set(line["packs"]) == {pack_id(DEFAULT_TEXT), new}
    assert state(table, "p:packs") is None  # one value: written all or nothing
    # a new process (its follower still on the default pack: no record read yet) resumes
    # the partition on its own lineage, and the case opened under version 1 escalates at 48 h
    again = new_worker(tmp_path, copy.deepcopy(table))
    again.rules.offer(record(0, case_pack("24h", 2)))
    deliver(again, (2, event("e3", "inquiry", T0 + 3 * D)))
    fired = [a for a in again.output.actions if a.rule == "case_unresolved"]  # type: ignore[attr-defined]
    assert [(a.rule_version, a.triggered_at) for a in fired] == [(1, T0 + 2 * D)]
    assert RULES_SWITCHES._value.get() - switches == 1  # no second switch


def test_the_follower_starts_again_after_a_broker_error(tmp_path: Any) -> None:
    from confluent_kafka import KafkaError, KafkaException

    follower = new_worker(tmp_path, FakeTable()).rules
    attempts: list[int] = []

    def follow_once() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        follower._stop.set()  # the second attempt runs until stopped

    follower._follow_once = follow_once  # type: ignore[method-assign]
    follower._follow()
    assert len(attempts) == 2


def signed_worker(tmp_path: Any) -> TriggerWorker:
    settings = Settings(
        bootstrap="127.0.0.1:9",
        data_dir=tmp_path,
        topic_prefix="unit.",
        rules_signing_keys="ops=first-secret,ci=second-secret",
    )
    return TriggerWorker(settings)


def signed(offset: int, text: str, name: str, secret: str) -> Published:
    from pydantic import SecretStr

    from common.rules_topic import sign

    mac = sign(SecretStr(secret), "default", text)
    return Published(offset, "default", text, "2026-12-02T00:00:00.000Z", "typed", name, mac)


def test_with_publisher_keys_only_packs_signed_by_one_are_run(tmp_path: Any, caplog: Any) -> None:
    follower = signed_worker(tmp_path).rules
    start = follower.current.pid
    refused = RULES_REFUSED._value.get()
    new = case_pack("24h", 2)
    assert not follower.offer(record(1, new))  # unsigned
    assert not follower.offer(signed(2, new, "eve", "first-secret"))  # unknown key
    assert not follower.offer(signed(3, new, "ops", "second-secret"))  # wrong secret
    altered = dataclasses.replace(signed(4, new, "ops", "first-secret"), yaml=new + "# more\n")
    assert not follower.offer(altered)
    assert follower.current.pid == start and RULES_REFUSED._value.get() - refused == 4
    assert "unsigned" in caplog.text and "unknown key 'eve'" in caplog.text
    assert "secret" not in caplog.text.replace("MOMENTS_RULES_SIGNING_KEYS", "")
    assert follower.offer(signed(5, new, "ci", "second-secret"))
    assert (follower.current.pid, follower.current.author) == (pack_id(new), "ci")


def test_a_predicate_off_the_allow_list_is_refused_by_the_worker(tmp_path: Any) -> None:
    follower = new_worker(tmp_path, FakeTable()).rules
    text = DEFAULT_TEXT.replace(
        "when: {kind: match, type: cancellation_requested}",
        "when: {kind: match, type: cancellation_requested, predicate: 'builtins:print'}",
    )
    assert text != DEFAULT_TEXT
    refused = RULES_REFUSED._value.get()
    assert not follower.offer(record(1, text))
    assert RULES_REFUSED._value.get() - refused == 1
    assert follower.current.pid == pack_id(DEFAULT_TEXT)


def test_an_action_that_cannot_be_encoded_goes_to_the_dlq_and_the_worker_goes_on(
    tmp_path: Any,
) -> None:
    from common.metrics import DLQ_RECORDS
    from processors.engine import EngineOutput

    worker = new_worker(tmp_path, FakeTable())
    worker.output = output = FakeOutput()  # type: ignore[assignment]
    dead = DLQ_RECORDS.labels("encode")._value.get()

    def action(action_id: str, due_by: int | None) -> ActionEvent:
        return ActionEvent(
            action_id, "ann", "r", "r", 1, "care", 50, "why", ["e1"], None, T0, due_by
        )

    huge = T0 + 999_999_999_999 * D  # what `due_by: 999999999999d` gave: past any long
    worker._emit(EngineOutput([action("a1", huge), action("a2", T0 + D)], []), T0)
    assert [topic for topic, _ in output.sent] == ["unit.actions.dlq", "unit.actions.care"]
    assert DLQ_RECORDS.labels("encode")._value.get() - dead == 1
