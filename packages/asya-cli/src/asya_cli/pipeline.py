"""The pipeline file ``asya dev`` runs: actors (queue name -> handler) and the gateway's tools.

```yaml
actors:
  preprocess: handlers:preprocess        # module:function, importable from this file's folder
  inference:                             # or a mapping: the handler and the sidecar's caps on a
    handler: handlers:Model.infer        #   @batch handler's limits (ASYA_BATCH_MAX_SIZE and
    batch: {max_size: 16, max_wait: 0.01}  # ASYA_BATCH_MAX_WAIT; max_size 1 turns batching off)
  postprocess: handlers:postprocess
tools:
  - name: classify_text
    steps: [preprocess, inference, postprocess]
    input_schema: {type: object, properties: {text: {type: string}}, required: [text]}
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from asya_gateway import Tool, ToolsFileError, parse_tools
from asya_protocol import RouteError, validate_queue_name

__all__ = ["BatchCaps", "Pipeline", "PipelineError", "load_pipeline"]

MAX_BATCH_SIZE = 10_000
MAX_BATCH_WAIT = 60.0


class PipelineError(Exception):
    """The pipeline file is unusable; the message says where."""


@dataclass(frozen=True)
class BatchCaps:
    """An actor's caps on its ``@batch`` handler's limits, given to its sidecar as
    ``ASYA_BATCH_MAX_SIZE`` and ``ASYA_BATCH_MAX_WAIT`` (``None``: the handler's own)."""

    max_size: int | None = None
    max_wait: float | None = None


@dataclass(frozen=True)
class Pipeline:
    path: Path
    actors: dict[str, str]
    tools: dict[str, Tool]
    batch: dict[str, BatchCaps] = field(default_factory=dict)
    """The actors whose entry sets ``batch``."""

    @property
    def folder(self) -> Path:
        """The file's folder, absolute: the runtimes' first import path."""
        return self.path.absolute().parent


def load_pipeline(path: Path) -> Pipeline:
    try:
        doc: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("actors"), dict) or not doc["actors"]:
        raise PipelineError(f"{path}: actors: expected a mapping of queue name to module:function")
    actors: dict[str, str] = {}
    batch: dict[str, BatchCaps] = {}
    for name, entry in doc["actors"].items():
        try:
            validate_queue_name(str(name))
        except RouteError as exc:
            raise PipelineError(f"{path}: actors.{name}: {exc}") from None
        where = f"{path}: actors.{name}"
        actors[str(name)], caps = _actor(where, entry)
        if caps is not None:
            batch[str(name)] = caps
    try:
        tools = parse_tools({"tools": doc.get("tools")}, str(path))
    except ToolsFileError as exc:
        raise PipelineError(str(exc)) from None
    for tool in tools.values():
        missing = [s for s in tool.steps if s not in actors]
        if missing:
            raise PipelineError(
                f"{path}: tool {tool.name!r}.steps: no actor named {missing[0]!r} in actors"
            )
    return Pipeline(path=path, actors=actors, tools=tools, batch=batch)


def _actor(where: str, entry: Any) -> tuple[str, BatchCaps | None]:
    """An actor's entry: ``module:function``, or ``{handler: ..., batch: {...}}``."""
    caps = None
    handler = entry
    if isinstance(entry, dict):
        unknown = sorted(set(entry) - {"handler", "batch"})
        if unknown:
            raise PipelineError(f"{where}: unknown key {unknown[0]!r} (handler, batch)")
        handler = entry.get("handler")
        if "batch" in entry:
            caps = _batch(f"{where}.batch", entry["batch"])
    if not isinstance(handler, str) or ":" not in handler:
        raise PipelineError(f"{where}: expected module:function, got {handler!r}")
    return handler, caps


def _batch(where: str, value: Any) -> BatchCaps:
    if not isinstance(value, dict) or not value or set(value) - {"max_size", "max_wait"}:
        raise PipelineError(f"{where}: expected a mapping with max_size and/or max_wait")
    size, wait = value.get("max_size"), value.get("max_wait")
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_BATCH_SIZE
    ):
        raise PipelineError(f"{where}.max_size: expected 1..{MAX_BATCH_SIZE}, got {size!r}")
    if wait is not None and (
        isinstance(wait, bool)
        or not isinstance(wait, int | float)
        or not 0 <= wait <= MAX_BATCH_WAIT
    ):
        raise PipelineError(f"{where}.max_wait: expected 0..{MAX_BATCH_WAIT:g} s, got {wait!r}")
    return BatchCaps(max_size=size, max_wait=None if wait is None else float(wait))
