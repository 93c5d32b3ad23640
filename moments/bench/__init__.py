"""The benchmark suite (`moments bench`): every stage's speed beside its reference, same run.

`run_bench` starts the embedded stack (or uses the broker and database the
settings point at) and measures, each figure next to what bounds it:

- codec: fastavro encode/decode vs the pure-Python `avro` package, same records, and
  moments' codec (generated, compiled when built) beside plain fastavro;
- publisher: the SDK (validation + Avro) vs raw confluent-kafka produce of the same bytes;
- engine: the full rule pack over a simulated population (events/s in replay, state
  bytes per active customer), and `replay_file` end to end (JSON in and out);
- backfill: `backfill_topic` vs a raw confluent consume loop over the same topic;
- PostgreSQL sink: `PostgresSink` add/flush vs a raw binary COPY of the same rows;
- live worker (`python -m moments worker` processes): end to end vs an empty Faust
  agent (`stream.take`) vs raw consume, 1 vs 2 workers on a 12-partition topic, and
  event -> action latency p50/p99 at a fixed offered load.

It writes a JSON report (top-level figures + details + targets), a markdown
table and a PNG chart. Timings depend on the machine and its load: nothing
here asserts a number; the report says which targets held. Topics get a
unique prefix per run, so production topics are never touched.

The modules: `context` (sizes, the `Bench` the sections share), one per measured
path (`offline`: codec and engine, with `replay`: file replay beside plain parsing;
`kafka`: publisher and backfill; `sink`; `worker`: the live worker and latency), `peers`
(the empty Faust agent and the Bytewax peer beside the worker, `bytewax_peer`), `report`
(targets, markdown, chart) and `suite` (`run_bench`, `SECTIONS`). A new measurement is a
function of the `Bench` in its path's module and a line in `SECTIONS`.
"""

from moments.bench.context import FULL, QUICK, Sizes
from moments.bench.peers import empty_agent
from moments.bench.report import REQUIRED_KEYS, TARGETS, markdown_table, print_summary, write_chart
from moments.bench.suite import SECTIONS, run_bench

__all__ = [
    "FULL",
    "QUICK",
    "REQUIRED_KEYS",
    "SECTIONS",
    "TARGETS",
    "Sizes",
    "empty_agent",
    "markdown_table",
    "print_summary",
    "run_bench",
    "write_chart",
]
