"""Security checks as tests: secrets, metric labels, SQL, bind addresses, the image's user.

- Secrets (SASL password, webhook secret, API keys, the password in the
  database URL) never appear in logs, error messages or metrics output: the
  publisher and the collector fail against a broker that speaks no SASL, the
  sink runs against a database that is not there, the CLI gets a bad value,
  and every line they write, every error and every scrape is searched.
- Metric labels carry no customer ids or free text: the registry of this
  process, after real traffic with customer ids and free-text event types,
  holds only label values of bounded sets (`security.metric_label_problems`).
- SQL is always parameterized: no f-string, `%`-format, `.format` on a string
  or concatenation of a non-literal reaches an execute call in sinks/.
- The collector, metrics and the worker's web port bind to 127.0.0.1 by
  default; the Docker image runs as a non-root user.
- Webhook signatures are verifiable with the documented helper, compared in
  constant time.
- Customer data stays out of logs: after every fault test (the conftest's
  `no_customer_data_in_logs`) the logs of the children it started are searched
  for the customer ids, texts and addresses it published; here, that this
  search finds what it looks for, and that a child given customer data (the
  PostgreSQL sink over events, then `moments forget`) logs none of it.
"""

from __future__ import annotations

import ast
import contextlib
import hmac
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from pydantic import SecretStr

import producers.collector as collector_module
from common.settings import Settings
from moments.stack import free_port
from producers.collector import collector_publisher, create_app, run_collector
from producers.publisher import Publisher, PublishError
from schemas.records import InteractionEvent
from sinks.signing import SignatureError, sign, signature_headers, verify_signature
from tests.reliability.harness import (
    CUSTOMER_DATA,
    LOG_DIRS,
    Figures,
    Fleet,
    PacedProducer,
    db_count,
    process_settings,
)
from tests.reliability.security import customer_data_leaks, metric_label_problems, secrets_in
from tests.support.timing import wait_for

ROOT = Path(__file__).resolve().parents[2]
SASL_PASSWORD = "sasl-Pw-7d1f0c9e3b"
WEBHOOK_SECRET = "whsec-41b8a2c6e0"
API_KEY = "apikey-5c0f7e2a91"
DB_PASSWORD = "dbPw-9e8d7c6b5a"


def secret_settings(bootstrap: str) -> Settings:
    return Settings(
        bootstrap=bootstrap,
        kafka_extra={
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "PLAIN",
            "sasl.username": "moments",
        },
        kafka_secret=SecretStr(SASL_PASSWORD),
        webhook_secret=SecretStr(WEBHOOK_SECRET),
        api_keys=[SecretStr(API_KEY)],
        database_url=f"postgresql://moments:{DB_PASSWORD}@127.0.0.1:{free_port()}/moments",
        metrics_port=0,
    )


SECRETS = (SASL_PASSWORD, WEBHOOK_SECRET, API_KEY, DB_PASSWORD)


def event(n: int) -> InteractionEvent:
    return InteractionEvent(
        event_id=f"sec-{n}",
        customer_id=f"CUST-SEC-{n}",
        channel="web",
        type="inquiry",
        occurred_at=1_767_323_045_000,
        source="security-test",
    )


def test_secrets_stay_out_of_logs_errors_settings_and_metrics(
    broker: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path, figures: Figures
) -> None:
    settings = secret_settings(broker.bootstrap)
    texts: list[str] = [repr(settings.kafka.kafka_secret), str(settings.api.api_keys)]
    caplog.set_level(logging.DEBUG)

    # The publisher against a broker that speaks no SASL: its errors and log lines.
    with pytest.raises(PublishError) as failure:
        publisher = Publisher(settings, config={"message.timeout.ms": 3000})
        publisher.publish(event(1))
        publisher.flush(10)
    texts += [str(failure.value), repr(failure.value)]

    # The collector answering while the broker does not acknowledge.
    quiet = collector_publisher(settings, **{"message.timeout.ms": 2000})
    app = create_app(settings, quiet)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
            await client.post("/v1/events", json={"x": 1}, headers={"X-API-Key": API_KEY[:-1]})
            return await client.post(
                "/v1/events",
                json={
                    "customer_id": "CUST-SEC-2",
                    "channel": "web",
                    "type": "inquiry",
                    "occurred_at": "2026-01-02T03:04:05Z",
                },
                headers={"X-API-Key": API_KEY},
            )

    import asyncio

    answer = asyncio.run(post())
    texts.append(answer.text)
    with contextlib.suppress(PublishError):
        quiet.close(5)

    # The sink (a child process, as `moments sink postgres`) with its database away.
    env = {**os.environ, **settings.as_env(), "MOMENTS_TOPIC_PREFIX": "sec."}
    sink = subprocess.Popen(
        [sys.executable, "-m", "moments", "sink", "postgres"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    # Until it says it waits for the database (start-up takes a while on a loaded machine).
    chunks: list[bytes] = []
    stdout = sink.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: chunks.extend(iter(stdout.readline, b"")))
    reader.start()
    wait_for(
        lambda: (
            any(word in b"".join(chunks) for word in (b"retrying", b"cannot"))
            or sink.poll() is not None
        ),
        60,
        "the sink to report its database away",
    )
    sink.send_signal(signal.SIGTERM)
    sink.wait(timeout=30)
    reader.join(30)
    sink_output = b"".join(chunks).decode(errors="replace")
    texts.append(sink_output)

    # The CLI given a bad value next to the secrets.
    bad = subprocess.run(
        [sys.executable, "-m", "moments", "sink", "postgres"],
        env={**env, "MOMENTS_API_KEYS": f'["{API_KEY}", oops'},
        capture_output=True,
        timeout=60,
    )
    texts += [bad.stdout.decode(errors="replace"), bad.stderr.decode(errors="replace")]

    texts.append(caplog.text)
    texts.append(generate_latest().decode())
    leaks = {i: secrets_in(text, SECRETS) for i, text in enumerate(texts)}
    leaks = {i: found for i, found in leaks.items() if found}
    figures.update(
        **{"texts searched": len(texts), "lines searched": sum(t.count("\n") + 1 for t in texts)},
        **{"secrets found": sum(map(len, leaks.values()))},
    )
    assert answer.status_code == 503
    assert "retrying" in sink_output or "cannot" in sink_output, sink_output[-2000:]
    assert bad.returncode != 0
    assert not leaks, {i: (found, texts[i][:300]) for i, found in leaks.items()}


def test_worker_takes_sasl_settings_and_keeps_the_password_out_of_its_config(
    tmp_path: Path,
) -> None:
    from processors.worker import build_app

    settings = secret_settings("127.0.0.1:9").replace(
        data_dir=tmp_path, worker_web_port=free_port()
    )
    app = build_app(settings)
    credentials = app.conf.broker_credentials
    assert credentials is not None, "the worker ignores the SASL settings"
    assert type(credentials).__name__ == "SASLCredentials"
    assert SASL_PASSWORD not in repr(credentials) and SASL_PASSWORD not in str(credentials)
    assert app.conf.web_bind == "127.0.0.1"


def test_metric_labels_carry_no_customer_ids_or_free_text(settings: Settings) -> None:
    """The registry of this process after real traffic through publisher and collector."""
    weird = [event(n) for n in range(3)] + [
        InteractionEvent(
            event_id="sec-free",
            customer_id="CUST-SEC-FREE",
            channel="email",
            type="Customer CUST-SEC-FREE wrote: my bill is wrong!",
            occurred_at=1_767_323_045_000,
            source="security-test",
        )
    ]
    with Publisher(settings) as publisher:
        for e in weird:
            publisher.publish(e)
    problems = metric_label_problems(
        generate_latest().decode(), settings, customers=[e.customer_id for e in weird]
    )
    assert not problems, problems[:10]


# --------------------------------------------------------------------------- SQL


def _literal_only(node: ast.AST, literal_names: set[str]) -> bool:
    """Whether an expression is built from string literals (and names bound only to them)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str | bytes)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal_only(node.left, literal_names) and _literal_only(node.right, literal_names)
    if isinstance(node, ast.Name):
        return node.id in literal_names
    return False


def unsafe_sql(source: str, filename: str) -> list[str]:
    """Execute/copy calls whose SQL is formatted from values (f-string, %, .format, +)."""
    tree = ast.parse(source, filename)
    problems: list[str] = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef | ast.Module):
            continue
        # Names assigned only string literals (or literal concatenations) in this scope.
        assigned: dict[str, list[ast.AST]] = {}
        for node in ast.walk(function):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        assigned.setdefault(target.id, []).append(node.value)
            elif (
                isinstance(node, ast.AugAssign | ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and node.value is not None
            ):
                assigned.setdefault(node.target.id, []).append(node.value)
        literal_names = {
            name
            for name, values in assigned.items()
            if all(_literal_only(v, set()) for v in values)
        }
        for node in ast.walk(function):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("execute", "executemany", "copy")
                and node.args
            ):
                continue
            query = node.args[0]
            where = f"{filename}:{node.lineno}"
            if isinstance(query, ast.JoinedStr):
                problems.append(f"{where}: f-string SQL")
            elif isinstance(query, ast.BinOp) and isinstance(query.op, ast.Mod):
                problems.append(f"{where}: %-formatted SQL")
            elif isinstance(query, ast.BinOp) and not _literal_only(query, literal_names):
                problems.append(f"{where}: SQL concatenated from values")
            elif (
                isinstance(query, ast.Call)
                and isinstance(query.func, ast.Attribute)
                and query.func.attr == "format"
                and isinstance(query.func.value, ast.Constant)
            ):
                problems.append(f"{where}: str.format SQL (use psycopg.sql)")
            elif (
                isinstance(query, ast.Name)
                and query.id in assigned
                and query.id not in literal_names
            ):
                values = assigned[query.id]
                if any(isinstance(v, ast.JoinedStr) for v in values):
                    problems.append(f"{where}: SQL in {query.id} built with an f-string")
    return sorted(set(problems))  # a call inside a function is seen from the module too


def test_sql_in_sinks_is_always_parameterized() -> None:
    files = sorted((ROOT / "sinks").glob("*.py"))
    problems = [p for f in files for p in unsafe_sql(f.read_text(), str(f.relative_to(ROOT)))]
    assert files and not problems, problems


def test_the_sql_check_catches_what_it_looks_for() -> None:
    bad = (
        "def f(conn, name, table):\n"
        "    conn.execute(f'SELECT * FROM t WHERE n = {name}')\n"
        "    conn.execute('SELECT * FROM t WHERE n = %s' % name)\n"
        "    conn.execute('SELECT * FROM {}'.format(table))\n"
        "    conn.execute('SELECT * FROM ' + table)\n"
        "    query = f'DELETE FROM {table}'\n"
        "    conn.execute(query)\n"
    )
    good = (
        "def g(conn, name):\n"
        "    query = 'SELECT * FROM t'\n"
        "    query += ' WHERE n = %s'\n"
        "    conn.execute(query, (name,))\n"
        "    conn.execute(sql.SQL('SELECT * FROM {}').format(sql.Identifier(name)))\n"
    )
    assert len(unsafe_sql(bad, "bad.py")) == 5
    assert unsafe_sql(good, "good.py") == []


# --------------------------------------------------------------------------- binding and users


def test_collector_and_metrics_bind_loopback_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert defaults.collector.collector_host == "127.0.0.1"
    assert defaults.metrics.metrics_host == "127.0.0.1"
    bound: list[tuple[str, int]] = []

    class FakeServer:
        def run(self) -> None:
            return None

    def fake_server(app: Any, host: str, port: int) -> FakeServer:
        bound.append((host, port))
        return FakeServer()

    monkeypatch.setattr(collector_module, "_server", fake_server)
    run_collector(Settings(bootstrap="127.0.0.1:9", api_keys=[SecretStr("k")]))
    assert bound == [("127.0.0.1", 8080)]


def test_the_docker_image_runs_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    stages: list[list[str]] = []
    for line in dockerfile:
        words = line.strip().split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "FROM":
            stages.append([])
        elif words[0].upper() == "USER" and stages:
            stages[-1].append(words[1])
    assert stages, "no FROM in deploy/Dockerfile"
    users = stages[-1]  # the final stage is the image
    assert users, "the final stage never switches away from root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]}"


# --------------------------------------------------------------------------- webhook signatures


def test_webhook_signatures_verify_with_the_helper_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = b'{"id":"a1","data":{"customer_id":"CUST-1"}}'
    now = 1_800_000_000
    url = "https://care.example/hooks/moments"
    headers = signature_headers(WEBHOOK_SECRET, body, url, "k1", now)
    assert verify_signature(WEBHOOK_SECRET, body, headers, url=url, now=now) == now
    assert sign(WEBHOOK_SECRET, body, now, url) in headers.values()
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    with pytest.raises(SignatureError):
        verify_signature(WEBHOOK_SECRET, body + b" ", headers, url=url, now=now)
    assert calls, "signatures are not compared with hmac.compare_digest"
    with pytest.raises(SignatureError):
        verify_signature("another-secret", body, headers, url=url, now=now)
    with pytest.raises(SignatureError):
        verify_signature(WEBHOOK_SECRET, body, headers, url=url, now=now + 3600)  # an hour later


def test_the_settings_repr_hides_the_database_password() -> None:
    settings = secret_settings("127.0.0.1:9")
    text = repr(settings) + str(settings)
    assert SASL_PASSWORD not in text and API_KEY not in text and WEBHOOK_SECRET not in text
    assert DB_PASSWORD not in text  # pytest and tracebacks with locals would print it


# --------------------------------------------------------------------------- customer data in logs


def test_the_fault_tests_logs_are_searched_for_the_customer_data_they_used(
    settings: Settings, database: str, tmp_path: Path, figures: Figures
) -> None:
    from common.topics import ensure_topics
    from schemas.codec import codec_for

    codec = codec_for(InteractionEvent)
    customers = [f"CUST-LOG-{n}" for n in range(5)]
    events = [
        InteractionEvent(
            event_id=f"log-{n}",
            customer_id=customer,
            channel="email",
            type="address_changed",
            occurred_at=1_767_323_045_000 + n,
            source="security-test",
            text=f"Please send my letters to my new flat, says {customer}",
            attributes={"new_address": f"{n} Privacy Lane, Leith"},
        )
        for n, customer in enumerate(customers)
    ]
    settings = process_settings(
        settings, tmp_path, database_url=database, id_hash_key="security-test-key"
    )
    ensure_topics(settings)
    records = [
        (settings.topics.interactions, e.customer_id.encode(), codec.encode(e), e.event_id)
        for e in events
    ]
    producer = PacedProducer(settings, records, rate=100)  # notes what it was given
    assert set(customers) <= CUSTOMER_DATA and "0 Privacy Lane, Leith" in CUSTOMER_DATA
    with Fleet(settings, tmp_path / "logs") as fleet:
        assert [tmp_path / "logs"] == LOG_DIRS
        fleet.start("sink", "sink", "postgres")
        producer.start().join()
        wait_for(
            lambda: db_count(database, "SELECT count(*) FROM interaction_events") == len(events),
            timeout_s=60,
            what="the sink to write the events",
            describe=lambda: fleet.log_tail("sink-1"),
        )
        forget = subprocess.run(
            [sys.executable, "-m", "moments", "forget", customers[0]],
            env={**os.environ, **settings.as_env()},
            capture_output=True,
            timeout=120,
        )
        assert forget.returncode == 0, forget.stderr.decode()[-1000:]
        # The sink deletes when it meets the erasure record (no worker here: no markers).
        wait_for(
            lambda: (
                db_count(database, "SELECT count(*) FROM interaction_events") == len(events) - 1
            ),
            timeout_s=60,
            what="the sink to erase the customer",
            describe=lambda: fleet.log_tail("sink-1"),
        )
    clean = customer_data_leaks(LOG_DIRS, CUSTOMER_DATA)
    # The search finds customer data where a log shows it.
    (tmp_path / "logs" / "planted.log").write_text(f"oops: {customers[3]} asked for it\n")
    planted = customer_data_leaks(LOG_DIRS, CUSTOMER_DATA)
    (tmp_path / "logs" / "planted.log").unlink()  # the conftest's own search runs after us
    figures.update(
        **{"customer data searched": len(CUSTOMER_DATA), "leaks": sum(map(len, clean.values()))}
    )
    assert clean == {}, clean
    assert planted == {str(tmp_path / "logs" / "planted.log"): [customers[3]]}
    output = forget.stdout.decode() + forget.stderr.decode()
    assert customers[0] not in output
