"""The base every moments process stands on: typed settings, Prometheus metrics, privacy
helpers (hashed ids, redaction, API keys), topic administration and the rules topic's
record format.

It sits under producers/, processors/ and sinks/ (and the CLI in moments/): it imports
only `schemas` and third-party packages, never what uses it (docs/design.md, section 1).
"""
