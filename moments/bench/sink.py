"""The PostgreSQL sink section: `PostgresSink` add/flush beside a raw binary COPY."""

from __future__ import annotations

import dataclasses
import uuid

from moments.bench.context import Bench, per_second, stopwatch


def sink(bench: Bench) -> None:
    import psycopg

    from sinks.postgres import ACTIONS, PostgresSink, action_row

    if not bench.actions:
        raise RuntimeError("no actions to write (the engine section did not run)")
    run = uuid.uuid4().hex[:8]
    actions = [
        dataclasses.replace(a, action_id=f"bench-{run}-{i}-{a.action_id}")
        for i, a in enumerate(bench.actions)
    ]
    conninfo = bench.settings.database.database_url
    assert conninfo is not None
    batch = bench.settings.sinks.sink_batch_size
    with PostgresSink(conninfo) as sink:
        sink.connect()
        with stopwatch() as elapsed:
            for start in range(0, len(actions), batch):
                for action in actions[start : start + batch]:
                    sink.add(action, topic="bench", partition=0, offset=start)
                sink.flush()
    rows = [action_row(a, "bench", 0, i) for i, a in enumerate(actions)]
    columns = ", ".join(f"{c.name} {c.stage_type}" for c in ACTIONS.columns)
    # The figure the target compares with: an unlogged table without indexes. Beside it, for
    # where the sink's time goes: a logged one (durable, as the sink's), and a logged copy of
    # `actions` with its indexes and defaults (what the schema costs any writer).
    tables = {
        "unlogged": f"CREATE UNLOGGED TABLE {{table}} ({columns})",
        "logged": f"CREATE TABLE {{table}} ({columns})",
        "indexed": "CREATE TABLE {table} (LIKE actions INCLUDING ALL)",
    }
    copy_s: dict[str, float] = {}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for kind, ddl in tables.items():
            table = f"bench_copy_{kind}_{run}"
            copy_sql = (
                f"COPY {table} ({', '.join(ACTIONS.column_names)}) FROM STDIN (FORMAT BINARY)"
            )
            conn.execute(ddl.format(table=table))
            try:
                with stopwatch() as copy_elapsed, conn.transaction(), conn.cursor() as cur:
                    for start in range(0, len(rows), batch):
                        with cur.copy(copy_sql) as copy:
                            copy.set_types(ACTIONS.copy_types)
                            for row in rows[start : start + batch]:
                                copy.write_row(row)
                copy_s[kind] = copy_elapsed[0]
            finally:
                conn.execute(f"DROP TABLE {table}")
        conn.execute("DELETE FROM actions WHERE action_id LIKE %s", (f"bench-{run}-%",))
    sink_rate = per_second(len(actions), elapsed[0])
    copy_rate = per_second(len(rows), copy_s["unlogged"])
    bench.details["sink"] = {
        "rows": len(actions),
        "batch": batch,
        "sink_rows_per_s": sink_rate,
        "raw_copy_rows_per_s": copy_rate,
        "raw_copy_logged_rows_per_s": per_second(len(rows), copy_s["logged"]),
        "raw_copy_indexed_rows_per_s": per_second(len(rows), copy_s["indexed"]),
        "sink_vs_raw_copy_ratio": round(sink_rate / copy_rate, 3) if copy_rate else None,
        "what": "PostgresSink add+flush (binary COPY into the tables, staging + insert on "
        "conflict only for redelivered keys, the current status of actions whose statuses "
        "came first, commit) vs one binary COPY of the same rows into an unlogged table "
        "without indexes (raw_copy); also into a logged one (raw_copy_logged) and into a "
        "logged copy of actions with its indexes (raw_copy_indexed)",
    }
    bench.figures["sink_rows_per_s"] = sink_rate
    bench.figures["raw_copy_rows_per_s"] = copy_rate
