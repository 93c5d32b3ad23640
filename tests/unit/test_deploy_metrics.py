"""The Grafana dashboard and the Prometheus alert rules name only metrics the code exports.

Every PromQL expression in deploy/ is parsed for metric and label names; each
must be a series that a metric of common/metrics.py produces (counters with
`_total`, histograms with `_bucket`/`_sum`/`_count`), and each label one that
metric carries. Every metric of common/metrics.py has a dashboard panel.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from common import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "moments.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

#: Series Prometheus itself adds to every scrape target.
SYNTHETIC = {"up": frozenset({"job", "instance"})}
TARGET_LABELS = frozenset({"job", "instance"})
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "Inf", "NaN"}
)


@dataclass(frozen=True)
class Series:
    """A series name a declared metric produces, with the labels it carries."""

    metric: str
    labels: frozenset[str]


def declared_metrics() -> dict[str, MetricWrapperBase]:
    return {
        value._name: value
        for value in vars(metrics).values()
        if isinstance(value, MetricWrapperBase)
    }


def exported_series() -> dict[str, Series]:
    """Every series name the metrics of common/metrics.py expose."""
    series: dict[str, Series] = {}
    for name, metric in declared_metrics().items():
        labels = frozenset(metric._labelnames) | TARGET_LABELS
        kind = metric._type
        if kind == "counter":
            suffixes = {"_total": labels, "_created": labels}
        elif kind == "histogram":
            suffixes = {
                "_bucket": labels | {"le"},
                "_sum": labels,
                "_count": labels,
                "_created": labels,
            }
        else:
            suffixes = {"": labels}
        for suffix, names in suffixes.items():
            series[name + suffix] = Series(name, names)
    for name, names in SYNTHETIC.items():
        series[name] = Series(name, names)
    return series


@dataclass(frozen=True)
class Parsed:
    metrics: frozenset[str]
    labels: frozenset[str]


def parse_promql(expr: str) -> Parsed:
    """Metric and label names used by a PromQL expression (Grafana variables allowed)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)
    text = re.sub(r"\$\{?\w+\}?", "", text)  # $__rate_interval, ${var}
    labels: set[str] = set()
    for body in re.findall(r"\{([^}]*)\}", text):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", body))
    text = re.sub(r"\{[^}]*\}", " ", text)
    for match in re.finditer(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text
    ):
        labels |= {name.strip() for name in match.group(1).split(",") if name.strip()}
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors and subqueries
    text = re.sub(r"\boffset\s+\S+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word in KEYWORDS:
            continue
        names.add(word)
    labels.discard("__name__")
    return Parsed(frozenset(names), frozenset(labels))


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_exprs() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
        if target["datasource"]["type"] == "prometheus"
    ]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def all_exprs() -> list[tuple[str, str]]:
    return [(f"dashboard panel {t!r}", e) for t, e in dashboard_exprs()] + [
        (f"alert {r['alert']}", r["expr"]) for r in alert_rules()
    ]


# --------------------------------------------------------------------------- the parser itself


def test_parser_finds_metrics_and_labels() -> None:
    parsed = parse_promql(
        'histogram_quantile(0.99, sum by (le, destination) (rate(foo_bucket{a="x{y}",b=~"1|2"}'
        "[$__rate_interval]))) / ignoring(c) bar_total offset 5m > 1e3 unless up == 0"
    )
    assert parsed.metrics == {"foo_bucket", "bar_total", "up"}
    assert parsed.labels == {"le", "destination", "a", "b", "c"}


# --------------------------------------------------------------------------- the real files


@pytest.mark.parametrize(("where", "expr"), all_exprs())
def test_every_expression_uses_exported_metrics_and_their_labels(where: str, expr: str) -> None:
    series = exported_series()
    parsed = parse_promql(expr)
    assert parsed.metrics, f"{where}: no metric found in {expr!r}"
    unknown = parsed.metrics - set(series)
    assert not unknown, f"{where}: not exported by common/metrics.py: {sorted(unknown)}"
    carried = frozenset().union(*(series[m].labels for m in parsed.metrics))
    missing = parsed.labels - carried
    assert not missing, f"{where}: labels {sorted(missing)} are on none of {sorted(parsed.metrics)}"


def test_every_declared_metric_has_a_dashboard_panel() -> None:
    series = exported_series()
    shown = {
        series[name].metric for _, expr in dashboard_exprs() for name in parse_promql(expr).metrics
    }
    missing = set(declared_metrics()) - shown
    assert not missing, f"metrics without a dashboard panel: {sorted(missing)}"


def test_the_issue_panels_exist() -> None:
    titles = " | ".join(panel["title"].lower() for panel in dashboard_panels())
    for words in [
        "events consumed by channel",
        "events consumed by type",
        "actions by rule",
        "actions by destination",
        "suppressed decisions by reason",
        "held-out",
        "dlq records by stage",
        "event → action latency",
        "sink rows",
        "sink batch duration",
        "webhook deliveries by outcome",
        "consumer lag",
        "relationship balance",
        "watermark lag",
    ]:
        assert words in titles, f"no dashboard panel about {words!r}"
    latency = next(p for p in dashboard_panels() if p["title"] == "Event → action latency")
    quantiles = {t["legendFormat"] for t in latency["targets"]}
    assert {"p50", "p99"} <= quantiles


def test_dashboard_is_well_formed_for_provisioning() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    provisioned = [
        source
        for path in sorted(DATASOURCES.parent.glob("*.yml"))
        for source in yaml.safe_load(path.read_text())["datasources"]
    ]
    # Panels name their datasource by a variable (any Grafana's own uids), never a fixed uid;
    # each variable lists datasources of a type that is provisioned.
    variables = {v["name"]: v for v in board["templating"]["list"] if v["type"] == "datasource"}
    types = {source["type"] for source in provisioned}
    aliases = {"grafana-postgresql-datasource": "postgres"}
    assert {aliases.get(v["query"], v["query"]) for v in variables.values()} <= types
    uids = {f"${{{name}}}" for name in variables}
    panels = dashboard_panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in uids


def test_relationship_panels_query_the_postgresql_views() -> None:
    sql_targets = [
        (panel["title"], target["rawSql"])
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
        if target["datasource"]["type"] == "postgres"
    ]
    titles = {title for title, _ in sql_targets}
    assert {"Relationship balance per customer (now)", "Customers in deficit"} <= titles
    migration = (DEPLOY.parent / "sinks" / "migrations" / "005_relationship.sql").read_text()
    for title, query in sql_targets:
        assert "FROM customer_relationship" in query, title
        assert "CREATE VIEW customer_relationship AS" in migration


def test_required_alerts_exist() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    required = {
        "MomentsDeadLetterQueueGrowing": "moments_dlq_records_total",
        "MomentsEventsButNoActions": "moments_actions_emitted_total",
        "MomentsEventToActionLatencyHigh": "moments_event_to_action_latency_seconds_bucket",
        "MomentsSinkErrors": "moments_sink_errors_total",
        "MomentsWorkerDown": "up",
    }
    for alert, metric in required.items():
        assert alert in rules, f"missing alert {alert}"
        assert metric in parse_promql(rules[alert]["expr"]).metrics
        assert rules[alert]["labels"]["severity"] in {"warning", "critical"}
        assert rules[alert]["annotations"]["summary"]
    # Processes are found by moments_process_info, never by a scrape job's name.
    assert 'moments_process_info{process="worker"}' in rules["MomentsWorkerDown"]["expr"]
    assert not any("job=" in rule["expr"] for rule in alert_rules())
    assert not any("job=" in expr for _, expr in dashboard_exprs())
    assert "15m" in rules["MomentsEventsButNoActions"]["expr"]
    assert "0.99" in rules["MomentsEventToActionLatencyHigh"]["expr"]


def test_every_alert_fires_in_alerts_test() -> None:
    spec = yaml.safe_load(ALERTS_TEST.read_text())
    assert spec["rule_files"] == ["alerts.yml"]
    fired = {
        case["alertname"]
        for test in spec["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for test in spec["tests"]
        for case in test.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    names = {rule["alert"] for rule in alert_rules()}
    assert names <= fired, f"alerts never shown firing: {sorted(names - fired)}"
    assert names <= quiet, f"alerts never shown quiet: {sorted(names - quiet)}"


def test_alerts_test_series_use_exported_metrics() -> None:
    series = exported_series()
    spec = yaml.safe_load(ALERTS_TEST.read_text())
    for test in spec["tests"]:
        for item in test["input_series"]:
            name = item["series"].split("{", 1)[0]
            assert name in series, f"alerts_test.yml feeds an unknown series {name}"
