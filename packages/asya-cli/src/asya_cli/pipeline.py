"""The pipeline file ``asya dev`` runs: actors (queue name -> handler) and the gateway's tools.

```yaml
actors:
  preprocess: handlers:preprocess        # module:function, importable from this file's folder
  inference: handlers:inference
  postprocess: handlers:postprocess
tools:
  - name: classify_text
    steps: [preprocess, inference, postprocess]
    input_schema: {type: object, properties: {text: {type: string}}, required: [text]}
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from asya_gateway import Tool, ToolsFileError, parse_tools
from asya_protocol import RouteError, validate_queue_name

__all__ = ["Pipeline", "PipelineError", "load_pipeline"]


class PipelineError(Exception):
    """The pipeline file is unusable; the message says where."""


@dataclass(frozen=True)
class Pipeline:
    path: Path
    actors: dict[str, str]
    tools: dict[str, Tool]

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
    for name, handler in doc["actors"].items():
        try:
            validate_queue_name(str(name))
        except RouteError as exc:
            raise PipelineError(f"{path}: actors.{name}: {exc}") from None
        if not isinstance(handler, str) or ":" not in handler:
            raise PipelineError(f"{path}: actors.{name}: expected module:function, got {handler!r}")
        actors[str(name)] = handler
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
    return Pipeline(path=path, actors=actors, tools=tools)
