"""Publishing interaction events: the publisher SDK, channel adapters, HTTP collector, simulator.

Imports `schemas` and the base, `common`; never processors, sinks or the CLI's `moments`
(docs/design.md, section 1.2).
"""
