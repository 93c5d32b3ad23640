"""The read side's connection pool: what the read API and the agent desk read PostgreSQL with.

A small psycopg pool opened without waiting (a process starts while the database is down
and says so on /readyz and in 503 pages), and one way to run a query on it that turns
"the database did not answer" into `DatabaseUnavailable` naming only the error's class
(a server message may quote a parameter, such as a customer id).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

T = TypeVar("T")


class DatabaseUnavailable(RuntimeError):
    """The database did not answer in time."""


class ReadPool:
    """A psycopg pool for reads (autocommit), opened without waiting for the database."""

    def __init__(self, conninfo: str, *, max_size: int = 4, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self.pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=timeout_s,
            kwargs={"connect_timeout": max(1, int(timeout_s)), "autocommit": True},
        )

    def open(self) -> None:
        self.pool.open(wait=False)  # start even while the database is down

    def close(self) -> None:
        self.pool.close()

    def read(self, query: Callable[[psycopg.Connection[Any]], T]) -> T:
        """QUERY's result on a pooled connection; `DatabaseUnavailable` when there is none."""
        try:
            with self.pool.connection() as conn:
                return query(conn)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise DatabaseUnavailable(type(exc).__name__) from None
