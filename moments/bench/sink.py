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
    table = f"bench_copy_{run}"
    columns = ", ".join(f"{c.name} {c.stage_type}" for c in ACTIONS.columns)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE UNLOGGED TABLE {table} ({columns})")
        try:
            with stopwatch() as copy_elapsed, conn.transaction(), conn.cursor() as cur:
                for start in range(0, len(rows), batch):
                    with cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(ACTIONS.copy_types)
                        for row in rows[start : start + batch]:
                            copy.write_row(row)
        finally:
            conn.execute(f"DROP TABLE {table}")
        conn.execute("DELETE FROM actions WHERE action_id LIKE %s", (f"bench-{run}-%",))
    sink_rate = per_second(len(actions), elapsed[0])
    copy_rate = per_second(len(rows), copy_elapsed[0])
    bench.details["sink"] = {
        "rows": len(actions),
        "batch": batch,
        "sink_rows_per_s": sink_rate,
        "raw_copy_rows_per_s": copy_rate,
        "what": "PostgresSink add+flush (binary COPY into the tables, staging + insert on "
        "conflict only for redelivered keys, commit) "
        "vs one binary COPY of the same rows into an unlogged table",
    }
    bench.figures["sink_rows_per_s"] = sink_rate
    bench.figures["raw_copy_rows_per_s"] = copy_rate
