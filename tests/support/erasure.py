"""What the erasure tests share: a customer's rows in every table, a second database, a
webhook receiver that records what it was sent (signatures checked)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from sinks.erasure import customer_tables
from sinks.signing import SignatureError, verify_signature
from tests.support.http import serving_posts


def customer_rows(conninfo: str, customer: str) -> dict[str, int]:
    """CUSTOMER's rows in every table with a customer_id column (-1: not migrated yet)."""
    try:
        with psycopg.connect(conninfo) as conn:
            return {
                table: int(
                    conn.execute(
                        sql.SQL("SELECT count(*) FROM {} WHERE customer_id = %s").format(
                            sql.Identifier(table)
                        ),
                        (customer,),
                    ).fetchone()[0]  # type: ignore[index]
                )
                for table in customer_tables(conn)
            }
    except psycopg.OperationalError:
        return {}


def erasures_recorded(conninfo: str) -> int:
    """Rows of the PostgreSQL sink's `erasures` table (-1: not there yet)."""
    try:
        with psycopg.connect(conninfo) as conn:
            return int(conn.execute("SELECT count(*) FROM erasures").fetchone()[0])  # type: ignore[index]
    except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
        return -1


@contextmanager
def another_database(server_url: str) -> Iterator[str]:
    """A fresh database on the same PostgreSQL (dropped afterwards); its conninfo."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server_url, dbname=name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass
class Receiver:
    """A local webhook receiver: every CloudEvent POSTed to it whose signature holds (under
    `secret`), as (destination, event); requests with a bad signature are answered 401."""

    secret: str
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    bad_signatures: int = 0
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, destination: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{destination}"

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        destination = path.split("?")[0].rsplit("/", 1)[-1]
        try:
            verify_signature(self.secret, body, headers, url=self.url(destination))
        except SignatureError:
            with self.lock:
                self.bad_signatures += 1
            return 401
        with self.lock:
            self.events.append((destination, json.loads(body)))
        return 200

    def seen(self) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return list(self.events)

    def clear(self) -> None:
        with self.lock:
            self.events.clear()


@contextmanager
def webhook_receiver(secret: str) -> Iterator[Receiver]:
    """A `Receiver` serving on a free local port while the block runs."""
    state = Receiver(secret)
    with serving_posts(state.answer) as port:
        state.port = port
        yield state
