"""The agent desk section: a queue page rendered with 100,000 open actions in the table.

The rows go straight into `actions` (one INSERT ... SELECT), spread over the
destinations with owners, priorities, due times and some overdue; then the desk's
own app (`sinks.desk`, in process, over PostgreSQL) serves queue pages, all and
"mine", first and later pages, signed in as a bench agent. Figures: p50 and p95
of a page, in milliseconds (docs/design.md 13 sets the p95 target).
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Final

from moments.bench.context import Bench

OPEN_ACTIONS: Final = 100_000
REQUESTS: Final = 200

_FILL = """
INSERT INTO actions (action_id, customer_id, rule, action, rule_version, destination, priority,
                     reason, evidence, channel_hint, triggered_at, due_by, status, owner,
                     overdue_at)
SELECT %(prefix)s || n, 'bench-customer-' || (n %% 40000), 'case_follow_up', 'case_follow_up', 1,
       (ARRAY['care', 'care', 'care', 'billing', 'crm', 'feedback'])[1 + n %% 6],
       (ARRAY[40, 60, 70, 80])[1 + n %% 4],
       'The customer opened a complaint; a person should follow up (' || n || ')',
       ARRAY['bench-event-' || n], 'call',
       now() - make_interval(mins => n %% 5000),
       CASE WHEN n %% 10 = 0 THEN NULL ELSE now() + make_interval(mins => (n %% 4000) - 1000) END,
       (ARRAY['open', 'open', 'acknowledged', 'reassigned', 'overdue'])[1 + n %% 5],
       CASE WHEN n %% 5 IN (2, 3) THEN 'agent-' || (n %% 20) END,
       CASE WHEN n %% 5 = 4 THEN now() - interval '1 hour' END
FROM generate_series(1, %(count)s) AS n
"""


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def desk(bench: Bench) -> None:
    import psycopg
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from sinks.desk import Desk, DeskAuth, PostgresDesk
    from sinks.desk.auth import SESSION_COOKIE
    from sinks.migrate import apply_migrations

    conninfo = bench.settings.database.database_url
    assert conninfo is not None
    apply_migrations(conninfo)
    prefix = f"bench-desk-{uuid.uuid4().hex[:8]}-"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(_FILL, {"prefix": prefix, "count": OPEN_ACTIONS})
        conn.execute("VACUUM ANALYZE actions")  # as autovacuum leaves a settled table
    try:
        auth = DeskAuth({"agent-3": b"bench-desk-key"})
        desk_app = Desk(PostgresDesk(conninfo), None, auth)
        app = Starlette(routes=[desk_app.mount()])
        desk_app.open()
        try:
            with TestClient(app) as client:
                client.cookies.set(SESSION_COOKIE, auth.issue("agent-3", time.time()), path="/desk")
                pages = ["/desk/queue/care", "/desk/queue/care?page=5", "/desk/queue/care?mine=1"]
                client.get(pages[0]).raise_for_status()  # warm the pool and the templates
                timings: dict[str, list[float]] = {page: [] for page in pages}
                for n in range(REQUESTS):
                    page = pages[n % len(pages)]
                    began = time.perf_counter()
                    answer = client.get(page)
                    timings[page].append((time.perf_counter() - began) * 1000)
                    if answer.status_code != 200 or 'class="card' not in answer.text:
                        raise RuntimeError(f"{page}: HTTP {answer.status_code} without rows")
        finally:
            desk_app.close()
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("DELETE FROM actions WHERE action_id LIKE %s", (prefix + "%",))
    every = [ms for samples in timings.values() for ms in samples]
    bench.figures["desk_queue_p50_ms"] = round(statistics.median(every), 2)
    bench.figures["desk_queue_p95_ms"] = _percentile(every, 0.95)
    bench.details["desk"] = {
        "open_actions": OPEN_ACTIONS,
        "requests": REQUESTS,
        "p95_ms_per_page": {page: _percentile(samples, 0.95) for page, samples in timings.items()},
        "what": "GET of a desk queue page (first page, page 5, mine) through the desk's app in"
        " process: session check, the indexed queue query and counts, the template",
    }
