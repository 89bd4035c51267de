"""The tools file: which pipelines the gateway offers, with their schemas and hints.

```yaml
tools:
  - name: classify_text
    title: Classify text                      # optional, a display name
    description: Classify a text
    steps: [preprocess, inference, postprocess]
    input_schema: {type: object, properties: {text: {type: string}}, required: [text]}
    output_schema: {type: object, properties: {result: {type: string}}}   # optional
    annotations: {read_only_hint: true}       # optional MCP hints (below)
    timeout: 60          # seconds, optional: the job's deadline
    wait: 30             # seconds, optional: how long an MCP tools/call waits for the result
```

``output_schema`` describes the pipeline's result (the ``result`` of a succeeded job).
``annotations`` takes the MCP tool hints ``read_only_hint``, ``destructive_hint``,
``idempotent_hint`` and ``open_world_hint`` (booleans). Names starting with ``asya_`` are the
gateway's own (``asya_job_result``).

A bad file raises :class:`ToolsFileError` naming the file, the tool and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from asya_protocol import RouteError, validate_queue_name

__all__ = [
    "DEFAULT_WAIT",
    "RESERVED_PREFIX",
    "Tool",
    "ToolsFileError",
    "load_tools",
    "parse_tools",
]

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
RESERVED_PREFIX = "asya_"
"""Tool names the gateway keeps for its own tools."""
DEFAULT_WAIT = 30.0
"""Seconds an MCP ``tools/call`` waits for its job's result when the tool sets no ``wait``:
below the 60 s request timeout common MCP clients apply, so a client gets an answer (the result,
or "still running" with the job id) before it gives up and cancels the call."""
HINTS = ("read_only_hint", "destructive_hint", "idempotent_hint", "open_world_hint")


class ToolsFileError(Exception):
    """The tools file is unusable; the message names the file, tool and field."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    steps: tuple[str, ...]
    input_schema: dict[str, Any]
    timeout: float | None = None
    title: str | None = None
    output_schema: dict[str, Any] | None = None
    annotations: dict[str, bool] = field(default_factory=dict)
    wait: float = DEFAULT_WAIT
    _validator: Any = field(default=None, compare=False, repr=False)
    _result_validator: Any = field(default=None, compare=False, repr=False)

    def result_errors(self, result: Any) -> list[str]:
        """How a succeeded job's result breaks ``output_schema`` (empty when it conforms)."""
        if self._result_validator is None:
            return []
        return [
            f"{'/'.join(str(p) for p in e.path) or '(result)'}: {e.message}"
            for e in sorted(self._result_validator.iter_errors(result), key=lambda e: list(e.path))
        ]

    def argument_errors(self, arguments: Any) -> list[str]:
        """Human-readable validation errors, each naming the field (empty when valid)."""
        errors = []
        for error in sorted(self._validator.iter_errors(arguments), key=lambda e: list(e.path)):
            where = "/".join(str(p) for p in error.path) or "(arguments)"
            if error.validator == "required":
                missing = error.message.split("'")[1] if "'" in error.message else error.message
                where = f"{where}/{missing}" if where != "(arguments)" else missing
                errors.append(f"{where}: required field missing")
            else:
                errors.append(f"{where}: {error.message}")
        return errors


_FIELDS = frozenset(
    {
        "name",
        "title",
        "description",
        "steps",
        "input_schema",
        "output_schema",
        "annotations",
        "timeout",
        "wait",
    }
)


def _fail(source: str, where: str, message: str) -> ToolsFileError:
    return ToolsFileError(f"{source}: {where}: {message}")


def _name(raw: dict[str, Any], index: int, source: str) -> str:
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _fail(
            source,
            f"tools[{index}].name",
            "expected 1-128 characters of letters, digits, '_', '.', '-'",
        )
    if name.startswith(RESERVED_PREFIX):
        raise _fail(
            source, f"tools[{index}].name", f"names starting with {RESERVED_PREFIX!r} are reserved"
        )
    return name


def _steps(raw: dict[str, Any], label: str, source: str) -> tuple[str, ...]:
    steps = raw.get("steps")
    if not isinstance(steps, list) or not steps:
        raise _fail(source, f"{label}.steps", "expected a non-empty list of queue names")
    try:
        for step in steps:
            validate_queue_name(step)
    except RouteError as exc:
        raise _fail(source, f"{label}.steps", str(exc)) from None
    return tuple(steps)


def _schema(schema: Any, key: str, label: str, source: str) -> dict[str, Any]:
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise _fail(source, f"{label}.{key}", "expected a JSON Schema of type object")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise _fail(source, f"{label}.{key}", exc.message) from None
    return {"type": "object", **schema}


def _seconds(raw: dict[str, Any], key: str, label: str, source: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise _fail(source, f"{label}.{key}", "expected a positive number of seconds")
    return float(value)


def _text(raw: dict[str, Any], key: str, label: str, source: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise _fail(source, f"{label}.{key}", "expected a string")
    return value


def _annotations(raw: dict[str, Any], label: str, source: str) -> dict[str, bool]:
    hints = raw.get("annotations", {})
    if not isinstance(hints, dict):
        raise _fail(source, f"{label}.annotations", f"expected a mapping of {', '.join(HINTS)}")
    for key, value in hints.items():
        if key not in HINTS:
            raise _fail(source, f"{label}.annotations", f"unknown hint {key!r} (known: {HINTS})")
        if not isinstance(value, bool):
            raise _fail(source, f"{label}.annotations.{key}", "expected true or false")
    return dict(hints)


def _tool(raw: Any, index: int, source: str, seen: dict[str, Tool]) -> Tool:
    if not isinstance(raw, dict):
        raise _fail(source, f"tools[{index}]", "expected a mapping")
    name = _name(raw, index, source)
    label = f"tool {name!r}"
    if name in seen:
        raise _fail(source, label, "defined twice")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise _fail(source, label, f"unknown field(s) {sorted(unknown)}")
    schema = _schema(raw.get("input_schema", {"type": "object"}), "input_schema", label, source)
    raw_output = raw.get("output_schema")
    output = None if raw_output is None else _schema(raw_output, "output_schema", label, source)
    return Tool(
        name=name,
        title=_text(raw, "title", label, source),
        description=_text(raw, "description", label, source) or "",
        steps=_steps(raw, label, source),
        input_schema=schema,
        output_schema=output,
        annotations=_annotations(raw, label, source),
        timeout=_seconds(raw, "timeout", label, source),
        wait=_seconds(raw, "wait", label, source) or DEFAULT_WAIT,
        _validator=jsonschema.Draft202012Validator(schema),
        _result_validator=None if output is None else jsonschema.Draft202012Validator(output),
    )


def parse_tools(doc: Any, source: str) -> dict[str, Tool]:
    if not isinstance(doc, dict) or not isinstance(doc.get("tools"), list) or not doc["tools"]:
        raise _fail(source, "tools", "expected a non-empty list under 'tools'")
    tools: dict[str, Tool] = {}
    for index, raw in enumerate(doc["tools"]):
        tool = _tool(raw, index, source, tools)
        tools[tool.name] = tool
    return tools


def load_tools(path: str | Path) -> dict[str, Tool]:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ToolsFileError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ToolsFileError(f"{source}: not valid YAML: {exc}") from None
    return parse_tools(doc, source)
