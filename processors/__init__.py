"""Recognising moments: the pure trigger engine and the faust-streaming worker that hosts it.

Imports `schemas` and small shared helpers only; never producers or sinks.
"""
