"""Delivering actions downstream: the PostgreSQL sink, the webhook sink and the read API.

Imports `schemas` and the base, `common`; never producers, processors or the CLI's
`moments` (docs/design.md, section 1.2).
"""
