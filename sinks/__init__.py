"""Delivering actions downstream: the PostgreSQL sink, the webhook sink and the read API.

Imports `schemas` and small shared helpers only; never producers or processors.
"""
