"""The embedded stack as pytest fixtures: one real Tansu broker and one real PostgreSQL per
session, and per test settings with a unique topic prefix and group ids (so tests never see
each other's messages) and (`database`) a PostgreSQL database of its own.

The integration and reliability conftests import these fixtures.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from common.settings import Settings
from common.topics import ensure_topics
from moments.stack import EmbeddedBroker, EmbeddedPostgres, free_port


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    embedded = EmbeddedBroker()
    embedded.start()
    yield embedded
    embedded.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    embedded = EmbeddedPostgres()
    embedded.start()
    yield embedded
    embedded.stop()


@pytest.fixture
def database(postgres: EmbeddedPostgres) -> Iterator[str]:
    """A fresh database of its own on the session's PostgreSQL; its conninfo."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(postgres.url, dbname=name)
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def settings(broker: EmbeddedBroker, postgres: EmbeddedPostgres) -> Settings:
    """Settings for one test: unique topics and groups, short rebalances, free web port."""
    unique = uuid.uuid4().hex[:8]
    settings = Settings(
        bootstrap=broker.bootstrap,
        database_url=postgres.url,
        topic_prefix=f"t{unique}.",
        interactions_partitions=4,
        action_partitions=2,
        worker_app_id=f"moments-worker-{unique}",
        sink_group=f"moments-sink-{unique}",
        worker_web_port=free_port(),
        broker_rebalance_timeout_s=3.0,
        broker_session_timeout_s=6.0,
    )
    ensure_topics(settings)
    return settings
