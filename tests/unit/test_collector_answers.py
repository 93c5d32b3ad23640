"""What the collector answers (no broker): the README's curl as printed, a warning for a type
no rule names, 422 when every event is rejected, and its OpenAPI document."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

import producers.publisher as publisher_module
from common.settings import Settings
from moments.cli.events import pack_types
from moments.endpoints import export_lines
from producers.collector import collector_publisher, create_app
from tests.support.faults import RefusingProducer

KEY = "unit-key"
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The collector on an acknowledging stand-in broker, with the default pack's types."""
    monkeypatch.setattr(
        publisher_module,
        "Producer",
        lambda config: RefusingProducer(config, lambda key: False, real=False),
    )
    settings = Settings(bootstrap="127.0.0.1:9", api_keys=[SecretStr(KEY)])
    publisher = collector_publisher(settings)
    app = create_app(
        settings, publisher, readiness=lambda: (True, "unit"), named_types=pack_types(settings)
    )
    try:
        with TestClient(app) as test_client:
            yield test_client
    finally:
        publisher.close()


def readme_curl() -> list[str]:
    """The README's curl to the collector, as shell words (line continuations joined)."""
    text = README.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line for line in text.splitlines() if line.startswith("curl -s -X POST")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])


def test_the_readme_curl_works_as_printed(client: TestClient) -> None:
    words = readme_curl()
    assert words[words.index("-X") + 1] == "POST"
    url = words[4]
    assert url == "$MOMENTS_COLLECTOR_URL/v1/events"
    headers = dict(words[i + 1].split(": ", 1) for i, w in enumerate(words) if w == "-H")
    # Every variable it uses is one `moments up` writes to .moments/env.
    used = set(re.findall(r"\$(\w+)", " ".join(words)))
    written = {
        line.split("=", 1)[0].removeprefix("export ")
        for line in export_lines(
            Settings(bootstrap="b:1"),
            {"MOMENTS_COLLECTOR_URL": "http://c", "MOMENTS_COLLECTOR_KEY": KEY},
        )
    }
    assert used <= written, used - written
    headers["X-API-Key"] = KEY
    body = json.loads(words[words.index("-d") + 1])
    answer = client.post("/v1/events", content=json.dumps(body), headers=headers)
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == 1
    assert "warning" not in answer.json()["results"][0]


def test_a_type_no_rule_names_is_accepted_with_a_warning(client: TestClient) -> None:
    event: dict[str, Any] = {
        "customer_id": "C-1",
        "channel": "web",
        "occurred_at": "2026-01-05T10:00:00Z",
    }
    answer = client.post(
        "/v1/events",
        json=[event | {"type": "meter_reading"}, event | {"type": "meter_reading_submitted"}],
        headers={"X-API-Key": KEY},
    )
    assert answer.status_code == 202
    unknown, known = answer.json()["results"]
    assert unknown["status"] == "accepted"
    assert "no rule of the running pack names type 'meter_reading'" in unknown["warning"]
    assert "nor is it one of the event types" in unknown["warning"]
    assert "warning" not in known


def test_every_event_rejected_is_422_with_the_results_and_partial_stays_202(
    client: TestClient,
) -> None:
    good = {"customer_id": "C-1", "channel": "web", "type": "inquiry"}
    undated = dict(good)
    late_future = good | {"occurred_at": "2027-06-01T00:00:00Z"}
    rejected = client.post("/v1/events", json=[undated, late_future], headers={"X-API-Key": KEY})
    assert rejected.status_code == 422
    body = rejected.json()
    assert (body["accepted"], body["rejected"]) == (0, 2)
    assert [r["field"] for r in body["results"]] == ["occurred_at", "occurred_at"]
    partial = client.post(
        "/v1/events",
        json=[undated, good | {"occurred_at": "2026-01-05T10:00:00Z"}],
        headers={"X-API-Key": KEY},
    )
    assert partial.status_code == 202 and partial.json()["accepted"] == 1


def test_the_openapi_documents_are_served_and_describe_every_route(client: TestClient) -> None:
    import jsonschema
    from starlette.routing import Route

    from schemas.openapi import event_json_schema, read_api_openapi
    from sinks.api import create_app as create_read_api

    served = client.get("/openapi.json")
    assert served.status_code == 200
    document = served.json()
    assert document["openapi"].startswith("3.1")
    routes = {r.path for r in client.app.routes if isinstance(r, Route)}  # type: ignore[attr-defined]
    assert routes == set(document["paths"])
    read_api = create_read_api("postgresql://u@127.0.0.1:9/x", Settings())
    read_routes = {r.path for r in read_api.routes if isinstance(r, Route)}
    assert read_routes == set(read_api_openapi()["paths"])
    # The event schema is the Avro contract's: the README's event is valid, a field the
    # collector refuses is not, and the required fields are the five the collector needs.
    schema = event_json_schema()
    assert schema["required"] == ["customer_id", "channel", "type", "occurred_at"]
    words = readme_curl()
    jsonschema.validate(json.loads(words[words.index("-d") + 1]), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"customer_id": "c", "channel": "fax", "type": "x"}, schema)
    # Every $ref resolves inside the document.
    refs = re.findall(r'"\$ref": "#/components/schemas/(\w+)"', json.dumps(document))
    assert refs and set(refs) <= set(document["components"]["schemas"])
