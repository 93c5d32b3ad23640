"""Sections without a broker: the codec (fastavro, pure-Python avro, moments' codec), e-mail
(parsing and classifying the labelled corpus) and the engine (replay over the simulated
population, state size, `replay_file` end to end)."""

from __future__ import annotations

import gc
import io
import json
import mailbox
import time
from pathlib import Path
from typing import Any, Final

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from common.memory import no_cyclic_gc
from moments.bench.context import Bench, per_second, stopwatch
from moments.bench.replay import replay_vs_parse
from processors.config import engine_config
from processors.engine import DictStore, Engine, load_rule_pack
from processors.replay import replay_file
from producers.adapters.email import EmailAdapter, parse_message
from schemas.codec import AvroCodec, action_from_json
from schemas.records import InteractionEvent

# -- codec ------------------------------------------------------------------------------


def codec(bench: Bench) -> None:
    """fastavro vs the pure-Python `avro` package on the same records and schema, and
    moments' codec (generated readers/writers, compiled when built; fastavro for
    anything unusual) beside plain fastavro."""
    events = bench.events(bench.sizes.codec_records)
    codec = AvroCodec(InteractionEvent)
    with stopwatch() as t_enc:
        encoded = [codec.encode(e) for e in events]
    with stopwatch() as t_dec:
        for data in encoded:
            codec.decode(data)
    # the same physical schema every library here reads with (timestamps as int ms)
    schema_json = codec.read_schema_json
    parsed = parse_schema(schema_json)
    dicts = [codec.to_avro_dict(e) for e in events]
    bodies: list[bytes] = []
    with stopwatch() as f_enc:
        for record in dicts:
            buffer = io.BytesIO()
            schemaless_writer(buffer, parsed, record)
            bodies.append(buffer.getvalue())
    with stopwatch() as f_dec:
        for body in bodies:
            schemaless_reader(io.BytesIO(body), parsed, None)
    result: dict[str, Any] = {
        "records": len(events),
        "fastavro_encode_per_s": per_second(len(events), f_enc[0]),
        "fastavro_decode_per_s": per_second(len(events), f_dec[0]),
        "moments_codec_encode_per_s": per_second(len(events), t_enc[0]),
        "moments_codec_decode_per_s": per_second(len(events), t_dec[0]),
        "moments_codec_decode_vs_fastavro": round(f_dec[0] / t_dec[0], 2) if t_dec[0] else None,
    }
    try:
        import avro.io
        import avro.schema
    except ImportError:
        result["avro"] = "not installed: pip install 'moments[bench]'"
        why = "the pure-Python avro package is not installed (bench extra: make bench)"
        for key in ("avro_encode_per_s", "avro_decode_per_s"):
            bench.unmeasured[f"details.codec.{key}"] = why
        bench.unmeasured["codec_fastavro_vs_avro_ratio"] = why
    else:
        schema = avro.schema.parse(json.dumps(schema_json))
        writer, reader = avro.io.DatumWriter(schema), avro.io.DatumReader(schema)
        avro_bodies: list[bytes] = []
        with stopwatch() as a_enc:
            for record in dicts:
                buffer = io.BytesIO()
                writer.write(record, avro.io.BinaryEncoder(buffer))
                avro_bodies.append(buffer.getvalue())
        with stopwatch() as a_dec:
            for body in avro_bodies:
                reader.read(avro.io.BinaryDecoder(io.BytesIO(body)))
        result["avro_encode_per_s"] = per_second(len(events), a_enc[0])
        result["avro_decode_per_s"] = per_second(len(events), a_dec[0])
        result["encode_ratio"] = round(a_enc[0] / f_enc[0], 1) if f_enc[0] else None
        result["decode_ratio"] = round(a_dec[0] / f_dec[0], 1) if f_dec[0] else None
        bench.figures["codec_fastavro_vs_avro_ratio"] = result["decode_ratio"]
    bench.details["codec"] = result


# -- e-mail -----------------------------------------------------------------------------

#: The labelled corpus the classifier is measured on (present in a clone of the repository).
EMAIL_CORPUS: Final = Path(__file__).resolve().parents[2] / "tests" / "data" / "email_corpus"


def email(bench: Bench, *, passes: int = 5) -> None:
    """Milliseconds per message to parse (RFC 5322, MIME, the sender's own words) and to
    classify, over every message of the labelled corpus, best of `passes` passes."""
    paths = sorted(EMAIL_CORPUS.glob("*.mbox"))
    if not paths:
        bench.unmeasured["email_classify_ms"] = f"no labelled corpus at {EMAIL_CORPUS}"
        return
    raws = [bytes(m) for path in paths for m in mailbox.mbox(str(path), create=False)]
    adapter = EmailAdapter(customers={})
    parse_s = classify_s = float("inf")
    for _ in range(passes):
        with stopwatch() as parsed:
            messages = [parse_message(raw) for raw in raws]
        with stopwatch() as classified:
            for message in messages:
                adapter.classify(message.subject, message.body, in_thread=message.in_thread)
        parse_s, classify_s = min(parse_s, parsed[0]), min(classify_s, classified[0])
    bench.details["email"] = {
        "messages": len(raws),
        "parse_ms_per_message": round(parse_s * 1000 / len(raws), 3),
        "classify_ms_per_message": round(classify_s * 1000 / len(raws), 3),
    }
    bench.figures["email_classify_ms"] = bench.details["email"]["classify_ms_per_message"]


# -- engine -----------------------------------------------------------------------------


def engine(bench: Bench) -> None:
    path = bench.events_path()
    events = bench.events()
    customers = len({e.customer_id for e in events})
    pack = load_rule_pack(bench.settings.engine.rules_path)
    config = engine_config(bench.settings)
    result: dict[str, Any] = {"events": len(events), "customers": customers}
    for label, decisions in (("actions_only", False), ("with_decisions", True)):
        engine = Engine(pack, config, decisions=decisions)
        store = DictStore()
        process = engine.process
        actions = 0
        gc.collect()
        cpu = time.process_time()
        with no_cyclic_gc(), stopwatch() as elapsed:
            for event in events:
                actions += len(process(store, event).actions)
        cpu = time.process_time() - cpu
        result[f"{label}_events_per_s"] = per_second(len(events), elapsed[0])
        # CPU time: what the figure would be on an otherwise idle core
        result[f"{label}_events_per_cpu_s"] = per_second(len(events), cpu)
        result["actions"] = actions
        result["decisions"] = engine.decided
    state_bytes = sum(
        len(json.dumps(value, separators=(",", ":"))) for value in store.data.values()
    )
    active = sum(1 for key in store.data if key.startswith("c:"))
    result["state_bytes_total"] = state_bytes
    result["active_customers"] = active
    del events, store
    gc.collect()
    actions_out = bench.work / "replay-actions.jsonl"
    summary = replay_file(
        path, actions_out=actions_out, rules_path=bench.settings.engine.rules_path
    )
    result["replay_file_events_per_s"] = round(summary.events_per_second, 1)
    bench.actions = []
    with open(actions_out, encoding="utf-8") as lines:
        for line in lines:
            bench.actions.append(action_from_json(json.loads(line)))
            if len(bench.actions) >= bench.sizes.sink_rows:
                break
    bench.details["engine"] = result
    bench.figures["replay_events_per_s"] = result["actions_only_events_per_s"]
    bench.figures["replay_events_per_cpu_s"] = result["actions_only_events_per_cpu_s"]
    bench.figures["replay_file_events_per_s"] = result["replay_file_events_per_s"]
    bench.figures["state_bytes_per_customer"] = round(state_bytes / max(active, 1), 1)
    parse = replay_vs_parse(path, bench.work, rules_path=bench.settings.engine.rules_path)
    bench.details["replay_vs_parse"] = parse
    bench.figures["replay_vs_orjson_ratio"] = parse["replay_vs_orjson_ratio"]
    bench.figures["replay_vs_orjson_per_cpu_ratio"] = parse["replay_vs_orjson_per_cpu_ratio"]
