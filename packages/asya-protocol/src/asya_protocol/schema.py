"""JSON Schema of the wire messages: written here from the protocol's own constants (name and code
patterns, limits), except the error-end payload, which msgspec generates from its type."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from .envelope import MAX_QUEUE_NAME_BYTES, QUEUE_NAME_PATTERN, RESERVED_QUEUE_PREFIX
from .messages import ERROR_CODE_PATTERN
from .routing import ErrorEndPayload

__all__ = ["envelope_schema", "runtime_schemas", "schemas"]

_STEP = {
    "type": "string",
    "pattern": f"^{QUEUE_NAME_PATTERN}$",
    "maxLength": MAX_QUEUE_NAME_BYTES,
    "not": {"pattern": "^" + re.escape(RESERVED_QUEUE_PREFIX)},
}


def envelope_schema() -> dict[str, Any]:
    """Envelope schema. Unknown top-level fields are allowed (and must be preserved)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Asya envelope",
        "type": "object",
        "required": ["route", "payload"],
        "properties": {
            "id": {"type": ["string", "null"], "description": "Assigned when missing."},
            "route": {
                "type": "object",
                "required": ["steps"],
                "properties": {
                    "steps": {"type": "array", "minItems": 1, "items": _STEP},
                    "current": {
                        "type": "integer",
                        "minimum": 0,
                        "default": 0,
                        "description": "0 <= current <= len(steps)",
                    },
                },
            },
            "payload": {"description": "Any JSON value."},
            "headers": {
                "type": ["object", "null"],
                "additionalProperties": {"type": "string"},
            },
            "parent_id": {"type": ["string", "null"]},
        },
        "additionalProperties": True,
    }


def runtime_schemas() -> dict[str, Any]:
    ok = {
        "type": "object",
        "required": ["status", "result"],
        "properties": {"status": {"const": "ok"}, "result": {}},
    }
    error = {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "pattern": f"^{ERROR_CODE_PATTERN}$"},
            "message": {"type": "string"},
            "retryable": {"type": "boolean"},
            "details": {"type": "object"},
        },
    }
    progress = {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"const": "progress"},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "message": {"type": "string"},
        },
    }
    partial = {
        "type": "object",
        "description": "Only on a connection that negotiated the 'partial' feature.",
        "required": ["status", "partial"],
        "properties": {"status": {"const": "partial"}, "partial": {}},
    }
    control = {
        "type": "object",
        "description": "Sent as the byte '!' followed by this object.",
        "required": ["op"],
        "properties": {
            "op": {"enum": ["hello", "ping"]},
            "protocol": {"type": "integer"},
            "features": {"type": "array", "items": {"type": "string"}},
        },
    }
    return {
        "request": {"description": "The raw payload JSON (any JSON value)."},
        "ok": ok,
        "error": error,
        "progress": progress,
        "partial": partial,
        "control": control,
        "error_end_payload": msgspec.json.schema(ErrorEndPayload),
    }


def schemas() -> dict[str, Any]:
    return {"envelope": envelope_schema(), "runtime": runtime_schemas()}
