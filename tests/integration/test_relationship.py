"""Relationship strength in PostgreSQL: the views, the read API and `moments timeline`."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from moments.cli import app
from schemas.records import ActionEvent
from sinks.api import create_app
from tests.support.timeline_stories import HOUR, T0, story, write

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "moments.json"
)


def action(customer: str, n: int, positives: int, negatives: int) -> ActionEvent:
    return ActionEvent(
        action_id=f"{customer}-ledger-{n}",
        customer_id=customer,
        rule="case_follow_up",
        action="case_follow_up",
        rule_version=1,
        destination="care",
        priority=70,
        reason="Follow up.",
        evidence=[f"{customer}-e{n}"],
        channel_hint="call",
        triggered_at=T0 + n * HOUR,
        details={
            "relationship_positives": str(positives),
            "relationship_negatives": str(negatives),
            "relationship_balance": str(positives - negatives),
        },
    )


def test_the_views_give_current_strength_and_its_history(database: str) -> None:
    write(database, [action("dana", 3, 1, 3), action("dana", 1, 2, 1), action("erik", 1, 4, 0)])
    write(database, story("old"))  # an action from before the counts: balance only
    with psycopg.connect(database) as conn:
        now = conn.execute(
            "SELECT customer_id, positives, negatives, balance, in_deficit"
            " FROM customer_relationship ORDER BY customer_id"
        ).fetchall()
        history = conn.execute(
            "SELECT balance FROM customer_relationship_history"
            " WHERE customer_id = 'dana' ORDER BY at"
        ).fetchall()
    assert now == [
        ("dana", 1, 3, -2, True),
        ("erik", 4, 0, 4, False),
        ("old", None, None, -2, True),
    ]
    assert history == [(1,), (-2,)]


def test_the_read_api_and_the_timeline_show_the_relationship(database: str) -> None:
    write(database, [*story("fay"), action("fay", 3, 1, 3), action("fay", 1, 2, 1)])
    with TestClient(create_app(database)) as client:
        answer = client.get("/v1/customers/fay/relationship")
        assert answer.status_code == 200
        body = answer.json()
        assert (body["positives"], body["negatives"], body["balance"]) == (1, 3, -2)
        assert body["in_deficit"] is True
        assert body["at"] == "2026-01-02T06:04:05.000+00:00"
        assert [point["balance"] for point in body["history"]] == [1, -2, -2]
        assert client.get("/v1/customers/nobody/relationship").status_code == 404
        assert client.get("/v1/customers/fay/relationship?limit=0").status_code == 400
    result = CliRunner().invoke(
        app, ["timeline", "fay"], env={"MOMENTS_DATABASE_URL": database, "COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "1 positive, 3 negative; balance -2 (in deficit)" in result.output


def test_the_dashboards_relationship_queries_run_on_the_views(database: str) -> None:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = {
        panel["title"]: target["rawSql"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
        if target["datasource"]["type"] == "postgres"
    }
    write(database, [action("gus", 1, 1, 3), action("hal", 1, 2, 0), action("ida", 1, 0, 1)])
    with psycopg.connect(database) as conn:
        distribution = conn.execute(queries["Relationship balance per customer (now)"]).fetchall()
        [(share,)] = conn.execute(queries["Customers in deficit"]).fetchall()
    assert distribution == [("-2", 1), ("-1", 1), ("2", 1)]
    assert float(share) == pytest.approx(2 / 3)
