"""Fixtures of the integration tests: the embedded stack (`tests.support.stack`)."""

from __future__ import annotations

from tests.support.stack import broker, database, postgres, settings

__all__ = ["broker", "database", "postgres", "settings"]
