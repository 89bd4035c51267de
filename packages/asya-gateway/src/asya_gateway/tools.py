"""The tools file: which pipelines the gateway offers, with their input schemas.

```yaml
tools:
  - name: classify_text
    description: Classify a text
    steps: [preprocess, inference, postprocess]
    input_schema: {type: object, properties: {text: {type: string}}, required: [text]}
    timeout: 60          # seconds, optional
```

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

__all__ = ["Tool", "ToolsFileError", "load_tools", "parse_tools"]

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class ToolsFileError(Exception):
    """The tools file is unusable; the message names the file, tool and field."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    steps: tuple[str, ...]
    input_schema: dict[str, Any]
    timeout: float | None = None
    _validator: Any = field(default=None, compare=False, repr=False)

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


_FIELDS = frozenset({"name", "description", "steps", "input_schema", "timeout"})


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


def _schema(raw: dict[str, Any], label: str, source: str) -> dict[str, Any]:
    schema = raw.get("input_schema", {"type": "object"})
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise _fail(source, f"{label}.input_schema", "expected a JSON Schema of type object")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise _fail(source, f"{label}.input_schema", exc.message) from None
    return schema


def _timeout(raw: dict[str, Any], label: str, source: str) -> float | None:
    timeout = raw.get("timeout")
    if timeout is None:
        return None
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        raise _fail(source, f"{label}.timeout", "expected a positive number of seconds")
    return float(timeout)


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
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise _fail(source, f"{label}.description", "expected a string")
    steps = _steps(raw, label, source)
    schema = _schema(raw, label, source)
    return Tool(
        name=name,
        description=description,
        steps=steps,
        input_schema={"type": "object", **schema},
        timeout=_timeout(raw, label, source),
        _validator=jsonschema.Draft202012Validator(schema),
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
