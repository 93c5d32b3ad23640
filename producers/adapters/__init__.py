"""Channel adapters: the records of calls, email and billing systems as interaction events.

Each adapter maps one channel's own records to `InteractionEvent` (or a
`Rejection` naming file, line and reason) and registers itself in `registry`;
`ingest` runs one over a file and publishes through the publisher SDK. Adapters
never import processors or sinks.

The modules: `base` (the `Adapter` protocol, the table adapters' base and the
parsing helpers), `registry`, one module per channel, and `ingest`.
"""
