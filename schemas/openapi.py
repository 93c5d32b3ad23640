"""The OpenAPI 3.1 documents of the HTTP collector and the read API, served at `/openapi.json`.

Written once, here, as data: the event's JSON Schema is derived from the Avro contract
(`interaction_event.avsc`), so a field added there is documented without a second edit;
the answers are those `producers/collector.py` and `sinks/api.py` give. Neither app
changes framework for it (plain Starlette routes serve these dicts).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Final

#: Fields the collector fills in when they are absent (docs/design.md 3.2).
_OPTIONAL_IN_JSON: Final = frozenset({"event_id"})

_ERROR: Final = {
    "type": "object",
    "properties": {"error": {"type": "string", "description": "What is wrong, in words."}},
    "required": ["error"],
}


def _avro_to_json_schema(avro_type: Any) -> dict[str, Any]:
    """One Avro field type in the JSON form (docs/design.md 3.5) as JSON Schema."""
    if isinstance(avro_type, list):  # a union: ["null", X]
        options = [_avro_to_json_schema(option) for option in avro_type]
        return {"anyOf": options}
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical in ("timestamp-millis", "timestamp-micros"):
            return {"type": "string", "format": "date-time"}
        if logical == "date":
            return {"type": "string", "format": "date"}
        if avro_type.get("type") == "enum":
            return {"type": "string", "enum": list(avro_type["symbols"])}
        if avro_type.get("type") == "map":
            return {
                "type": "object",
                "additionalProperties": _avro_to_json_schema(avro_type["values"]),
            }
        if avro_type.get("type") == "array":
            return {"type": "array", "items": _avro_to_json_schema(avro_type["items"])}
        return _avro_to_json_schema(avro_type["type"])
    return {
        "null": {"type": "null"},
        "string": {"type": "string"},
        "long": {"type": "integer"},
        "int": {"type": "integer"},
        "double": {"type": "number"},
        "float": {"type": "number"},
        "boolean": {"type": "boolean"},
    }[avro_type]


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of one interaction event as the collector takes it."""
    avro = json.loads(
        resources.files("schemas").joinpath("interaction_event.avsc").read_text("utf-8")
    )
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in avro["fields"]:
        schema = _avro_to_json_schema(field["type"])
        if "doc" in field:
            schema = {**schema, "description": field["doc"]}
        properties[field["name"]] = schema
        if "default" not in field and field["name"] not in _OPTIONAL_IN_JSON:
            required.append(field["name"])
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _security() -> dict[str, Any]:
    return {
        "securitySchemes": {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "bearer": {"type": "http", "scheme": "bearer"},
        }
    }


def _probes() -> dict[str, Any]:
    plain = {"content": {"application/json": {"schema": {"type": "object"}}}}
    return {
        "/healthz": {"get": {"summary": "The process runs.", "responses": {"200": plain}}},
        "/readyz": {
            "get": {
                "summary": "It can work (its broker or database answers).",
                "responses": {"200": plain, "503": plain},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics.",
                "responses": {"200": {"content": {"text/plain": {"schema": {"type": "string"}}}}},
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document.", "responses": {"200": plain}},
        },
    }


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def collector_openapi() -> dict[str, Any]:
    """The collector's document: `POST /v1/events` and the probes."""
    result = {
        "type": "object",
        "properties": {
            "index": {"type": "integer"},
            "status": {"type": "string", "enum": ["accepted", "rejected", "unconfirmed"]},
            "event_id": {"type": "string"},
            "field": {"type": "string", "description": "The field at fault (rejected)."},
            "error": {"type": "string"},
            "warning": {
                "type": "string",
                "description": "Accepted, but no rule of the running pack names its type.",
            },
        },
        "required": ["index", "status"],
    }
    answer = {
        "type": "object",
        "properties": {
            "accepted": {"type": "integer"},
            "rejected": {"type": "integer"},
            "results": {"type": "array", "items": {"$ref": "#/components/schemas/EventResult"}},
            "error": {"type": "string"},
        },
        "required": ["accepted", "rejected", "results"],
    }
    event = {"$ref": "#/components/schemas/InteractionEvent"}
    answered = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Answer"}}}
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "moments HTTP collector", "version": "1"},
        "security": [{"apiKey": []}, {"bearer": []}],
        "paths": {
            "/v1/events": {
                "post": {
                    "summary": 'Send one event, an array of them, or {"events": [...]}.',
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        event,
                                        {"type": "array", "items": event},
                                        {
                                            "type": "object",
                                            "properties": {
                                                "events": {"type": "array", "items": event}
                                            },
                                            "required": ["events"],
                                            "additionalProperties": False,
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": {"description": "At least one event accepted.", **answered},
                        "422": {"description": "Every event rejected.", **answered},
                        "400": _error("Not JSON of the right shape."),
                        "401": _error("No valid API key."),
                        "403": _error("An event beyond the key's scope: nothing taken."),
                        "408": _error("The body did not arrive in time."),
                        "413": _error("Body or batch too large."),
                        "415": _error("An encoded body."),
                        "429": _error("Over the key's rate (Retry-After)."),
                        "503": _error("The broker did not take every event (Retry-After)."),
                    },
                }
            },
            "/v1/actions/{action_id}/status": _action_status_route(answered),
            **_probes(),
        },
        "components": {
            "schemas": {
                "InteractionEvent": event_json_schema(),
                "EventResult": result,
                "Answer": answer,
                "Error": _ERROR,
            },
            **_security(),
        },
    }


def _action_status_route(answered: dict[str, Any]) -> dict[str, Any]:
    """`POST /v1/actions/{action_id}/status`: a status event without its format (section 12)."""
    text = {"type": "string"}
    request = {
        "type": "object",
        "properties": {
            "customer_id": text,
            "status": {"type": "string", "enum": ["acknowledged", "reassigned", "done"]},
            "owner": {"type": "string", "maxLength": 256, "description": "Who holds it now."},
            "resolution": {
                "type": "string",
                "enum": ["completed", "customer_declined", "unreachable", "not_appropriate"],
                "description": "Required with status done, refused with any other.",
            },
            "note": {"type": "string", "maxLength": 2000},
            "occurred_at": {"type": "string", "format": "date-time", "description": "Now."},
        },
        "required": ["customer_id", "status"],
        "additionalProperties": False,
    }
    action_id = {"name": "action_id", "in": "path", "required": True, "schema": text}
    return {
        "post": {
            "summary": "Say an action was acknowledged, reassigned or done (a status event).",
            "parameters": [action_id],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request}},
            },
            "responses": {
                "202": {"description": "The status event was accepted.", **answered},
                "422": {"description": "A field it cannot take, named.", **answered},
                "401": _error("No valid API key."),
                "403": _error("Beyond the key's scope."),
                "408": _error("The body did not arrive in time."),
                "413": _error("Body too large."),
                "429": _error("Over the key's rate (Retry-After)."),
                "503": _error("The broker did not take it (Retry-After)."),
            },
        }
    }


def read_api_openapi() -> dict[str, Any]:
    """The read API's document: a customer's timeline, decisions and relationship."""
    customer = {"name": "customer_id", "in": "path", "required": True, "schema": {"type": "string"}}
    limit = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}
    before = {
        "name": "before",
        "in": "query",
        "description": "The `next_before` of the previous page, or an ISO-8601 time.",
        "schema": {"type": "string"},
    }

    def page(items: str) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "customer_id": {"type": "string"},
                "count": {"type": "integer"},
                items: {"type": "array", "items": {"type": "object"}},
                "next_before": {"type": ["string", "null"]},
            },
            "required": ["customer_id", "count", items, "next_before"],
        }

    refusals = {
        "400": _error("A bad parameter, named."),
        "401": _error("No valid read API key."),
        "429": _error("Over the key's rate, or too many failed keys from this address."),
        "503": _error("The database is unreachable."),
    }

    def route(summary: str, schema: dict[str, Any], *params: Any, **more: Any) -> dict[str, Any]:
        ok = {"description": "OK", "content": {"application/json": {"schema": schema}}}
        return {
            "get": {
                "summary": summary,
                "parameters": [customer, *params],
                "responses": {"200": ok, **refusals, **more},
            }
        }

    return {
        "openapi": "3.1.0",
        "info": {"title": "moments read API", "version": "1"},
        "security": [{"apiKey": []}, {"bearer": []}],
        "paths": {
            "/v1/customers/{customer_id}/timeline": route(
                "Events, actions and decisions, oldest first.", page("entries"), limit, before
            ),
            "/v1/customers/{customer_id}/decisions": route(
                "The decision trace, with blocked_by.", page("decisions"), limit, before
            ),
            "/v1/customers/{customer_id}/actions": route(
                "The actions fired, with status, owner and overdue, oldest first.",
                page("actions"),
                limit,
                before,
                {
                    "name": "status",
                    "in": "query",
                    "description": "Only actions with this status (overdue: past due, not done).",
                    "schema": {
                        "type": "string",
                        "enum": ["open", "acknowledged", "reassigned", "overdue", "done", "lapsed"],
                    },
                },
            ),
            "/v1/customers/{customer_id}/relationship": route(
                "Positives, negatives, balance and their history.",
                {"type": "object"},
                limit,
                **{"404": _error("No action for this customer yet.")},
            ),
            **_probes(),
        },
        "components": {"schemas": {"Error": _ERROR}, **_security()},
    }
