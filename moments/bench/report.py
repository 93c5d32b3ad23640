"""The reports: the figures every report has, the targets judged, the markdown table, the
PNG chart and the summary lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from rich.console import Console

from moments.calibration import calibration_line
from moments.endpoints import plain_line

#: The figures every report has at its top level (the issue's list).
REQUIRED_KEYS: Final = (
    "worker_events_per_s",
    "empty_faust_events_per_s",
    "raw_consume_msgs_per_s",
    "backfill_events_per_s",
    "replay_events_per_s",
    "state_bytes_per_customer",
    "latency_p50_ms",
    "latency_p99_ms",
    "publisher_vs_raw_ratio",
    "sink_rows_per_s",
    "raw_copy_rows_per_s",
    "codec_fastavro_vs_avro_ratio",
    "two_workers_vs_one_ratio",
)


TARGETS: Final = (
    ("replay_events_per_s", ">=", 100_000, "engine replay, full pack, 100k customers"),
    ("state_bytes_per_customer", "<=", 2048, "engine state per active customer"),
    ("email_classify_ms", "<=", 2, "e-mail classification, ms per message (labelled corpus)"),
    (
        "replay_vs_orjson_ratio",
        ">=",
        0.4,
        "file replay (as moments replay runs) / orjson.loads of the same lines into a list",
    ),
    ("backfill_events_per_s", ">=", 100_000, "backfill per process"),
    ("desk_queue_p95_ms", "<", 200, "a desk queue page, 100k open actions in the table"),
    ("backfill_vs_raw_ratio", ">=", 0.5, "backfill / raw consume, per process, same topic"),
    ("publisher_vs_raw_ratio", ">=", 0.70, "publisher SDK / raw produce"),
    ("worker_vs_empty_faust_ratio", ">=", 0.70, "worker / empty Faust agent"),
    ("two_workers_vs_one_ratio", ">=", 1.5, "2 workers / 1 worker, 12 partitions"),
    ("latency_p99_ms", "<", 100, "event -> action p99 at 2k events/s"),
    ("sink_rows_per_s", ">=", 50_000, "PostgreSQL sink actions/s"),
)


def print_summary(report: dict[str, Any], console: Console) -> None:
    """What the run wrote, what it did not and why, and the calibration (plain lines)."""
    entry = report.get("calibration") or {}
    plain_line(console, calibration_line(entry))
    if entry.get("warning"):
        plain_line(console, f"warning: {entry['warning']}", style="yellow")
    for figure, why in (report.get("unmeasured") or {}).items():
        plain_line(console, f"not measured: {figure}: {why}")
    plain_line(console, "reports: " + ", ".join(report.get("written") or ["none"]))
    for path, why in (report.get("not_written") or {}).items():
        plain_line(console, f"not written: {path}: {why}", style="yellow")


def judge_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each figure of `TARGETS` beside its target, and whether it holds (None: not measured)."""
    judged = []
    too_busy = bool((report.get("calibration") or {}).get("too_busy"))
    for key, op, threshold, what in TARGETS:
        value = report.get(key)
        holds = None
        if isinstance(value, int | float):
            holds = {">=": value >= threshold, "<=": value <= threshold, "<": value < threshold}[op]
        judged.append(
            {
                "figure": key,
                "target": f"{op} {threshold}",
                "value": value,
                "holds": holds,
                # A miss on a machine too busy for a verdict says nothing about the code.
                "verdict": verdict_of(holds, too_busy),
                "what": what,
            }
        )
    return judged


def verdict_of(holds: bool | None, too_busy: bool) -> str:
    """What the report says of a target: yes, no, not measured, or too busy to judge."""
    if holds is None:
        return "not measured"
    if holds:
        return "yes"
    return "machine too busy to judge" if too_busy else "no"


_ROWS: Final = (
    (
        "e-mail classify (ms per message)",
        "details.email.classify_ms_per_message",
        "details.email.parse_ms_per_message",
        "parsing the same messages (ms per message)",
    ),
    (
        "fastavro decode (records/s)",
        "details.codec.fastavro_decode_per_s",
        "details.codec.avro_decode_per_s",
        "fastavro vs pure-Python avro",
    ),
    (
        "fastavro encode (records/s)",
        "details.codec.fastavro_encode_per_s",
        "details.codec.avro_encode_per_s",
        "fastavro vs pure-Python avro",
    ),
    (
        "moments codec decode (records/s)",
        "details.codec.moments_codec_decode_per_s",
        "details.codec.fastavro_decode_per_s",
        "plain fastavro schemaless_reader",
    ),
    (
        "publisher SDK (events/s)",
        "publisher_events_per_s",
        "raw_produce_msgs_per_s",
        "raw confluent produce, same bytes",
    ),
    ("engine replay (events/s)", "replay_events_per_s", None, "full pack, simulated population"),
    ("engine replay (events per CPU s)", "replay_events_per_cpu_s", None, "same, CPU time"),
    (
        "replay_file end to end (events/s)",
        "replay_file_events_per_s",
        "replay_events_per_s",
        "engine alone",
    ),
    (
        "file replay (lines/s; one process per CPU, as moments replay runs)",
        "details.replay_vs_parse.replay_lines_per_s",
        "details.replay_vs_parse.orjson_lines_per_s",
        "orjson.loads of the same lines into a list, same run (the target's baseline)",
    ),
    (
        "file replay (lines per CPU second, all its processes)",
        "details.replay_vs_parse.replay_lines_per_cpu_s",
        "details.replay_vs_parse.orjson_lines_per_cpu_s",
        "parse into a list, one process, per CPU second (the per-CPU ratio)",
    ),
    (
        "file replay (processes)",
        "details.replay_vs_parse.replay_workers",
        "details.replay_vs_parse.parse_processes",
        "parse into a list",
    ),
    (
        "file replay (CPUs kept busy: CPU s / wall s)",
        "details.replay_vs_parse.replay_cpus_busy",
        "details.replay_vs_parse.parse_cpus_busy",
        "parse into a list (one process)",
    ),
    (
        "file replay (lines/s), beside the floor",
        "details.replay_vs_parse.replay_lines_per_s",
        "details.replay_vs_parse.parse_discard_lines_per_s",
        "orjson.loads of the same lines, results discarded, same run",
    ),
    (
        "state per active customer (bytes)",
        "state_bytes_per_customer",
        None,
        "JSON size of the store / customers",
    ),
    (
        "backfill (events/s)",
        "backfill_events_per_s",
        "raw_consume_msgs_per_s",
        "raw confluent consume, same topic",
    ),
    (
        "worker, 1 process (events/s)",
        "worker_events_per_s",
        "empty_faust_events_per_s",
        "empty Faust agent, same topic",
    ),
    (
        "worker, 1 process (events per CPU s)",
        "details.worker.workers_1_events_per_cpu_s",
        "details.worker.empty_faust_events_per_cpu_s",
        "empty Faust agent, same topic, per CPU second of each process",
    ),
    (
        "worker, 1 process (events/s)  ",
        "worker_events_per_s",
        "bytewax_events_per_s",
        "Bytewax 1 worker, same topic: fastavro decode + omnichannel rule per customer",
    ),
    (
        "worker, 1 process (events/s)   ",
        "worker_events_per_s",
        "bytewax_engine_events_per_s",
        "Bytewax 1 worker, same topic: moments' codec + engine (worker's pack), not produced",
    ),
    (
        "Bytewax with moments' engine (events/s)",
        "bytewax_engine_events_per_s",
        "bytewax_events_per_s",
        "Bytewax with its omnichannel rule: what the engine costs on that host",
    ),
    (
        "worker, 1 process (events/s) ",
        "worker_events_per_s",
        "worker_raw_consume_msgs_per_s",
        "raw consume, same topic",
    ),
    ("2 workers / 1 worker", "two_workers_vs_one_ratio", None, "12 partitions"),
    ("latency p50 (ms)", "latency_p50_ms", None, "event -> action at 2k events/s"),
    ("latency p99 (ms)", "latency_p99_ms", None, "event -> action at 2k events/s"),
    (
        "PostgreSQL sink (actions/s)",
        "sink_rows_per_s",
        "raw_copy_rows_per_s",
        "raw binary COPY, same rows",
    ),
)


def _lookup(report: dict[str, Any], path: str | None) -> Any:
    if path is None:
        return None
    node: Any = report
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value < 10:
        return f"{value:.2f}"
    if isinstance(value, int | float):
        return f"{value:,.0f}"
    return str(value)


def _engine_kind(report: dict[str, Any]) -> str:
    compiled = (report.get("machine") or {}).get("engine_compiled")
    if compiled is None:
        return "not recorded"
    return "compiled with mypyc" if compiled else "pure Python (no compiled module, or a stale one)"


def markdown_table(report: dict[str, Any]) -> str:
    """The report as markdown: each figure beside its reference, then the targets."""
    calibration_entry = report.get("calibration") or {}
    lines = [
        f"# moments bench ({'quick' if report.get('quick') else 'full'}, "
        f"{report.get('seconds')} s)",
        "",
        f"Engine core: {_engine_kind(report)}.",
        "",
        calibration_line(calibration_entry),
    ]
    if calibration_entry.get("warning"):
        lines += ["", f"**Warning:** {calibration_entry['warning']}."]
    lines += [
        "",
        "| figure | value | reference | value / reference | reference is |",
        "|---|---:|---:|---:|---|",
    ]
    unmeasured: dict[str, str] = report.get("unmeasured") or {}
    notes: list[str] = []  # why a cell shows "-", numbered in the order they appear

    def cell(key: str | None, value: Any) -> str:
        if value is not None or key is None:
            return _fmt(value)
        key_short = key.removeprefix("details.")
        why = unmeasured.get(key) or (
            "its section failed (below)" if report.get("errors") else "not measured"
        )
        note = f"{key_short}: {why}"
        if note not in notes:
            notes.append(note)
        return f"- [{notes.index(note) + 1}]"

    for label, key, ref_key, what in _ROWS:
        value, ref = _lookup(report, key), _lookup(report, ref_key)
        ratio = (
            f"{value / ref:.2f}"
            if isinstance(value, int | float) and isinstance(ref, int | float) and ref
            else "-"
        )
        lines.append(
            f"| {label.strip()} | {cell(key, value)} | {cell(ref_key, ref)} | {ratio} | {what} |"
        )
    if notes:
        lines += ["", "Cells marked - were not measured:", ""]
        lines += [f"{n}. {note}" for n, note in enumerate(notes, 1)]
    lines += ["", "| target | value | holds |", "|---|---:|---|"]
    for target in report.get("targets", []):
        verdict = target.get("verdict") or verdict_of(target["holds"], False)
        holds = "**no**" if verdict == "no" else verdict
        lines.append(f"| {target['what']} {target['target']} | {_fmt(target['value'])} | {holds} |")
    if report.get("errors"):
        lines += ["", "Sections that failed:", ""]
        lines += [f"- {name}: {error}" for name, error in report["errors"].items()]
    if report.get("not_written"):
        lines += ["", "Not written:", ""]
        lines += [f"- {path}: {why}" for path, why in report["not_written"].items()]
    return "\n".join(lines) + "\n"


def write_chart(report: dict[str, Any], path: Path) -> None:
    """A PNG: each throughput figure beside its reference (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for label, key, ref_key, _ in _ROWS:
        value, ref = _lookup(report, key), _lookup(report, ref_key)
        if "/s" in label and isinstance(value, int | float) and value > 0:
            rows.append(
                (label.strip(), float(value), float(ref) if isinstance(ref, int | float) else 0.0)
            )
    fig, ax = plt.subplots(figsize=(10, 0.6 * max(len(rows), 1) + 1.5))
    positions = range(len(rows))
    ax.barh([p + 0.2 for p in positions], [r[1] for r in rows], height=0.4, label="measured")
    ax.barh(
        [p - 0.2 for p in positions], [r[2] for r in rows], height=0.4, label="reference", alpha=0.6
    )
    ax.set_yticks(list(positions), [r[0] for r in rows])
    ax.set_xscale("log")
    ax.set_xlabel("per second (log scale)")
    ax.set_title("moments bench: each figure beside its reference")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
