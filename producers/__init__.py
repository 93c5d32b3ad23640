"""Publishing interaction events: the publisher SDK, channel adapters, HTTP collector, simulator.

Imports `schemas` and small shared helpers only; never processors or sinks.
"""
