"""OpenAPI 3 description of the edge's public API, kept beside the validation rules it documents."""

from __future__ import annotations

from .validation import DEVICES, MAX_EXCLUDE, MAX_ID_CHARS, MAX_RECENT_ITEMS

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
_ERROR_RESPONSE = {"description": "Client error", "content": {"application/json": {"schema": _ERROR}}}

OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "edgerec edge node", "version": "1",
             "description": "Personalized offer recommendations served at the edge."},
    "paths": {
        "/v1/recommendations": {
            "post": {
                "summary": "Rank the region's offers for one shopper",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RecommendationRequest"}}},
                },
                "responses": {
                    "200": {"description": "Ranked offers",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/RecommendationResponse"}}}},
                    "400": _ERROR_RESPONSE, "404": _ERROR_RESPONSE, "413": _ERROR_RESPONSE,
                    "415": _ERROR_RESPONSE, "422": _ERROR_RESPONSE,
                    "503": {"description": "No state yet", "content": {"application/json": {"schema": _ERROR}}},
                },
            }
        },
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "Alive"}}}},
        "/readyz": {"get": {"summary": "Readiness with sync details",
                            "responses": {"200": {"description": "Ready"},
                                          "503": {"description": "No state or model yet"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Text format"}}}},
    },
    "components": {
        "schemas": {
            "RecommendationRequest": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "shopper_id": {**_ID, "description": "Opaque shopper id; never stored at the edge"},
                    "region": {"type": "string", "pattern": "^[A-Za-z]{2}$",
                               "description": "Market code; optional when the edge serves one region"},
                    "recent_items": {
                        "type": "array", "maxItems": MAX_RECENT_ITEMS,
                        "description": "Recent purchase events, most recent last, repeats kept",
                        "items": {"oneOf": [
                            _ID,
                            {"type": "object", "additionalProperties": False, "required": ["item"],
                             "properties": {"item": _ID,
                                            "age_days": {"type": "number", "minimum": 0, "nullable": True}}},
                        ]},
                    },
                    "k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
                    "exclude": {"type": "array", "maxItems": MAX_EXCLUDE, "items": _ID},
                    "context": {
                        "type": "object", "additionalProperties": False,
                        "properties": {
                            "time": {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
                                     "nullable": True},
                            "device": {"type": "string", "enum": sorted(DEVICES), "nullable": True},
                        },
                    },
                },
            },
            "RecommendationResponse": {
                "type": "object",
                "required": ["offers", "region", "model_version", "data_version", "fallback", "request_id"],
                "properties": {
                    "offers": {"type": "array", "items": {
                        "type": "object",
                        "required": ["offer_id", "sku", "title", "price", "currency", "score"],
                        "properties": {
                            "offer_id": {"type": "string"}, "sku": {"type": "string"},
                            "title": {"type": "string"}, "price": {"type": "number"},
                            "currency": {"type": "string"}, "score": {"type": "number"},
                        },
                    }},
                    "region": {"type": "string"},
                    "model_version": {"type": "string"},
                    "data_version": {"type": "integer"},
                    "fallback": {"type": "string", "nullable": True},
                    "request_id": {"type": "string"},
                },
            },
        }
    },
}
