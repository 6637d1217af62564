"""OpenAPI 3 description of the edge's public API, kept beside the validation rules it documents."""

from __future__ import annotations

from origin_sync.wire.events import MAX_EVENTS_PER_REQUEST, MAX_OFFERS_PER_EVENT
from origin_sync.wire.fields import CURRENCY_PATTERN, ID_PATTERN, MAX_ID_CHARS, MAX_VALUE, NAME_PATTERN

from .validation import (
    DEVICES,
    MAX_AGE_DAYS,
    MAX_CART,
    MAX_EPOCH_S,
    MAX_EXCLUDE,
    MAX_RECENT_ITEMS,
    MIN_EPOCH_S,
    SLOT_RE,
)

_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
_WIRE_ID = {"type": "string", "pattern": ID_PATTERN}  # the ids of offers, requests, experiments (origin_sync.wire)
_ERROR_RESPONSE = {"description": "Client error", "content": {"application/json": {"schema": _ERROR}}}
_SLOT = {
    "type": "string",
    "pattern": SLOT_RE.pattern,
    "description": "Where the offers are shown (home, cart, ...); a label kept in metrics and cache keys",
}
_REGION = {
    "type": "string",
    "pattern": "^[A-Za-z]{2}$",
    "description": "Market code; else the trusted CDN geo header decides, else the edge's only region",
}
_ANSWER = {
    "description": "Ranked offers",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RecommendationResponse"}}},
}
_RATE_LIMITED = {
    "description": "Too many requests from this client; retry after Retry-After seconds",
    "headers": {
        "Retry-After": {
            "description": "Seconds to wait (integer, at least 1)",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
    "content": {"application/json": {"schema": _ERROR}},
}
_ERRORS = {
    "400": _ERROR_RESPONSE,
    "403": _ERROR_RESPONSE,
    "404": _ERROR_RESPONSE,
    "408": _ERROR_RESPONSE,
    "413": _ERROR_RESPONSE,
    "415": _ERROR_RESPONSE,
    "422": _ERROR_RESPONSE,
    "429": _RATE_LIMITED,
    "503": {"description": "No state yet", "content": {"application/json": {"schema": _ERROR}}},
}


def _event_schema(types: list[str], purchase: bool) -> dict:
    """A click or add_to_cart carries no value; a purchase must carry its value."""
    properties = {
        "type": {"type": "string", "enum": types},
        "request_id": _WIRE_ID,
        "offer_ids": {"type": "array", "minItems": 1, "maxItems": MAX_OFFERS_PER_EVENT, "items": _WIRE_ID},
        "currency": {"type": "string", "pattern": CURRENCY_PATTERN},
        "shopper_id": {**_ID, "description": "Pseudonymized at the edge before it is stored"},
        "experiment": _WIRE_ID,
        "variant": {"type": "string", "pattern": NAME_PATTERN},
        "region": _REGION,
        "event_id": {
            **_WIRE_ID,
            "description": "The client's key for this event (idempotency key), unique among the events that "
            "follow one answer: retry a POST /v1/events with the same event_id after any failure and the event is "
            "stored once, on whichever edge of the region the retry reaches. Without it, a retry of a request "
            "that was kept but not answered stores the event twice.",
        },
    }
    required = ["type", "request_id", "offer_ids"]
    if purchase:
        properties["value"] = {"type": "number", "minimum": 0, "maximum": MAX_VALUE}
        required.append("value")
    return {"type": "object", "additionalProperties": False, "required": required, "properties": properties}


def build_openapi(max_k: int, default_k: int, context_length: int | None, events: bool = True) -> dict:
    """The OpenAPI document for this edge's settings and its current model's context length; without `events`
    (EDGEREC_EVENTS=off) it has no /v1/events."""
    max_recent = min(MAX_RECENT_ITEMS, context_length) if context_length is not None else MAX_RECENT_ITEMS
    spec = _template()
    get = spec["paths"]["/v1/recommendations"]["get"]
    request = spec["components"]["schemas"]["RecommendationRequest"]["properties"]
    for k_schema in (request["k"], get["parameters"][1]["schema"]):
        k_schema.update(maximum=max_k, default=default_k)
    request["recent_items"]["maxItems"] = max_recent
    if not events:
        del spec["paths"]["/v1/events"]
        spec["components"]["schemas"] = {
            name: schema for name, schema in spec["components"]["schemas"].items() if "Event" not in name
        }
    return spec


def _template() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "edgerec edge node",
            "version": "1",
            "description": "Personalized offer recommendations served at the edge.",
        },
        "paths": {
            "/v1/recommendations": {
                "post": {
                    "summary": "Rank the region's offers for one shopper",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/RecommendationRequest"}}
                        },
                    },
                    "responses": {"200": _ANSWER, **_ERRORS},
                },
                "get": {
                    "summary": "Region-level offers for an anonymous shopper; cacheable by a CDN",
                    "description": "Answers carry Cache-Control public with s-maxage and stale-while-revalidate, an "
                    "ETag (If-None-Match gives 304), and Surrogate-Key / Cache-Tag per offer, region "
                    "and data version.",
                    "parameters": [
                        {"name": "region", "in": "query", "required": False, "schema": _REGION},
                        {
                            "name": "k",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
                        },
                        {"name": "slot", "in": "query", "required": False, "schema": _SLOT},
                        {
                            "name": "device",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": sorted(DEVICES)},
                        },
                    ],
                    "responses": {"200": _ANSWER, "304": {"description": "Not modified (ETag matched)"}, **_ERRORS},
                },
            },
            "/v1/events": {
                "post": {
                    "summary": "Record what a shopper did after an answer: click, add_to_cart, purchase",
                    "description": "Each event names the request_id of the recommendation answer it follows; the "
                    "edge pseudonymizes shopper_id, spools the events durably and ships them to "
                    "the origin. Impressions are recorded by the edge itself. Retry contract: retry a POST "
                    "/v1/events with the same event_id on each event after any failure (an error, a timeout, a "
                    "connection cut); each event is stored once.",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventsRequest"}}},
                    },
                    "responses": {
                        "202": {
                            "description": "Kept: written to the edge's spool (with --events-ack fsync, "
                            "fdatasync'ed too) before this answer",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["accepted"],
                                        "properties": {"accepted": {"type": "integer"}},
                                    }
                                }
                            },
                        },
                        **{code: _ERROR_RESPONSE for code in ("400", "404", "413", "415", "422")},
                        "429": _RATE_LIMITED,
                        "503": {
                            "description": "Not kept (the spool is full, its write or sync failed, or the "
                            "edge is stopping); retry later",
                            "content": {"application/json": {"schema": _ERROR}},
                        },
                    },
                },
            },
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "Alive"}}}},
            "/readyz": {
                "get": {
                    "summary": "Readiness with sync details",
                    "responses": {
                        "200": {"description": "Ready"},
                        "503": {"description": "No state or model yet, too stale, or draining after SIGTERM"},
                    },
                }
            },
            "/metrics": {
                "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Text format"}}}
            },
        },
        "components": {
            "schemas": {
                "RecommendationRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "shopper_id": {
                            **_ID,
                            "description": "Opaque shopper id: enough for a personalized answer from the edge's "
                            "profile of the shopper (looked up by its keyed pseudonym; the id itself is never stored)",
                        },
                        "region": _REGION,
                        "slot": _SLOT,
                        "recent_items": {
                            "type": "array",
                            "maxItems": MAX_RECENT_ITEMS,
                            "description": "Recent purchase events, most recent last, repeats kept; when sent "
                            "(non-empty) they replace the stored profile for this answer (profile: request)",
                            "items": {
                                "oneOf": [
                                    _ID,
                                    {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["item"],
                                        "properties": {
                                            "item": _ID,
                                            "age_days": {
                                                "type": "number",
                                                "minimum": 0,
                                                "maximum": MAX_AGE_DAYS,
                                                "nullable": True,
                                                "description": "Days from the purchase to now",
                                            },
                                        },
                                    },
                                ]
                            },
                        },
                        "k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
                        "exclude": {"type": "array", "maxItems": MAX_EXCLUDE, "items": _ID},
                        "cart": {
                            "type": "array",
                            "maxItems": MAX_CART,
                            "items": _WIRE_ID,
                            "description": "Offer ids or SKUs in the shopper's cart now: context added to the "
                            "profile or recent_items as bought now (so not offered again within --just-bought-days)",
                        },
                        "context": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "time": {
                                    "oneOf": [
                                        {"type": "string", "format": "date-time"},
                                        {"type": "number", "minimum": MIN_EPOCH_S, "maximum": MAX_EPOCH_S},
                                    ],
                                    "nullable": True,
                                    "description": "The shopper's now: ISO 8601, or epoch seconds from "
                                    "1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z",
                                },
                                "device": {"type": "string", "enum": sorted(DEVICES), "nullable": True},
                            },
                        },
                    },
                },
                "EventsRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["events"],
                    "properties": {
                        "events": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_EVENTS_PER_REQUEST,
                            "items": {
                                "oneOf": [
                                    _event_schema(["click", "add_to_cart"], purchase=False),
                                    _event_schema(["purchase"], purchase=True),
                                ]
                            },
                        }
                    },
                },
                "RecommendationResponse": {
                    "type": "object",
                    "required": [
                        "offers",
                        "region",
                        "model_version",
                        "data_version",
                        "fallback",
                        "request_id",
                        "experiment",
                        "variant",
                        "profile",
                    ],
                    "properties": {
                        "offers": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["offer_id", "sku", "title", "price", "currency", "score"],
                                "properties": {
                                    "offer_id": {"type": "string"},
                                    "sku": {"type": "string"},
                                    "title": {"type": "string"},
                                    "price": {"type": "number"},
                                    "currency": {"type": "string"},
                                    "score": {"type": "number"},
                                },
                            },
                        },
                        "region": {"type": "string"},
                        "model_version": {"type": "string"},
                        "data_version": {"type": "integer"},
                        "fallback": {
                            "type": "string",
                            "nullable": True,
                            "enum": ["model_error", "latency_budget", None],
                            "description": "null, or why the answer comes from regional popularity",
                        },
                        "request_id": {"type": "string"},
                        "experiment": {
                            "type": "string",
                            "nullable": True,
                            "description": "The running experiment the shopper is enrolled in, or null",
                        },
                        "variant": {
                            "type": "string",
                            "nullable": True,
                            "description": "The shopper's variant (stable per shopper id), or null",
                        },
                        "profile": {
                            "type": "string",
                            "enum": ["hit", "miss", "request"],
                            "description": "What personalized the answer: hit, the edge's stored profile of the "
                            "shopper; request, the request's recent_items; miss, neither (unknown or no shopper: "
                            "the anonymous path)",
                        },
                    },
                },
            }
        },
    }
