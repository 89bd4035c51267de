from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asya_gateway import ToolsFileError, load_tools, parse_tools
from asya_gateway.tools import DEFAULT_WAIT

GOOD = """
tools:
  - name: classify_text
    description: Classify a text
    steps: [preprocess, inference, postprocess]
    input_schema: {type: object, properties: {text: {type: string}}, required: [text]}
    timeout: 60
"""


def test_load_good_file(tmp_path: Path) -> None:
    path = tmp_path / "tools.yaml"
    path.write_text(GOOD)
    tools = load_tools(path)
    tool = tools["classify_text"]
    assert tool.steps == ("preprocess", "inference", "postprocess")
    assert tool.timeout == 60
    assert tool.argument_errors({"text": "hi"}) == []
    assert tool.argument_errors({}) == ["text: required field missing"]
    assert tool.argument_errors({"text": 1}) == ["text: 1 is not of type 'string'"]


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({}, "tools.yaml: tools: expected a non-empty list"),
        ({"tools": [{"name": "bad name"}]}, "tools.yaml: tools[0].name:"),
        ({"tools": [{"name": "t"}]}, "tool 't'.steps: expected a non-empty list"),
        (
            {"tools": [{"name": "t", "steps": ["ok", "a b"]}]},
            "tool 't'.steps: invalid step name 'a b'",
        ),
        (
            {"tools": [{"name": "t", "steps": ["a"], "input_schema": {"type": "string"}}]},
            "tool 't'.input_schema: expected a JSON Schema of type object",
        ),
        (
            {
                "tools": [
                    {"name": "t", "steps": ["a"], "input_schema": {"type": "object", "required": 5}}
                ]
            },
            "tool 't'.input_schema: 5 is not of type 'array'",
        ),
        ({"tools": [{"name": "t", "steps": ["a"], "timeout": -1}]}, "tool 't'.timeout:"),
        ({"tools": [{"name": "t", "steps": ["a"], "wait": 0}]}, "tool 't'.wait:"),
        ({"tools": [{"name": "t", "steps": ["a"], "title": 5}]}, "tool 't'.title: expected"),
        (
            {"tools": [{"name": "t", "steps": ["a"], "output_schema": {"type": "array"}}]},
            "tool 't'.output_schema: expected a JSON Schema of type object",
        ),
        (
            {"tools": [{"name": "t", "steps": ["a"], "annotations": {"fast_hint": True}}]},
            "tool 't'.annotations: unknown hint 'fast_hint'",
        ),
        (
            {"tools": [{"name": "t", "steps": ["a"], "annotations": {"read_only_hint": "yes"}}]},
            "tool 't'.annotations.read_only_hint: expected true or false",
        ),
        (
            {"tools": [{"name": "asya_job_result", "steps": ["a"]}]},
            "tools[0].name: names starting with 'asya_' are reserved",
        ),
        (
            {"tools": [{"name": "t", "steps": ["a"], "color": "red"}]},
            "tool 't': unknown field(s) ['color']",
        ),
        (
            {"tools": [{"name": "t", "steps": ["a"]}, {"name": "t", "steps": ["b"]}]},
            "tool 't': defined twice",
        ),
    ],
)
def test_bad_files_name_file_tool_and_field(doc: dict[str, Any], where: str) -> None:
    with pytest.raises(ToolsFileError) as info:
        parse_tools(doc, "tools.yaml")
    assert where in str(info.value)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ToolsFileError, match="cannot read"):
        load_tools(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tools: [unclosed")
    with pytest.raises(ToolsFileError, match="not valid YAML"):
        load_tools(bad)


def test_docs_example_is_a_valid_tools_file() -> None:
    import re

    import yaml

    root = Path(__file__).resolve().parents[3]
    text = (root / "docs/gateway.md").read_text()
    [block] = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    tools = parse_tools(yaml.safe_load(block), "docs/gateway.md")
    classify = tools["classify_text"]
    assert (classify.timeout, classify.wait, classify.title) == (60, 30, "Classify text")
    assert classify.annotations == {"read_only_hint": True}
    assert classify.result_errors({"result": "Classified as greeting"}) == []


def test_output_schema_title_hints_and_wait() -> None:
    tools = parse_tools(
        {
            "tools": [
                {
                    "name": "t",
                    "title": "T",
                    "steps": ["a"],
                    "output_schema": {"properties": {"n": {"type": "integer"}}, "required": ["n"]},
                    "annotations": {"read_only_hint": True},
                    "wait": 5,
                },
                {"name": "u", "steps": ["a"]},
            ]
        },
        "tools.yaml",
    )
    t, u = tools["t"], tools["u"]
    assert (t.title, t.annotations, t.wait) == ("T", {"read_only_hint": True}, 5.0)
    assert t.output_schema == {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
    }
    assert t.result_errors({"n": 1}) == []
    assert t.result_errors({"n": "one"}) == ["n: 'one' is not of type 'integer'"]
    assert t.result_errors({}) == ["(result): 'n' is a required property"]
    assert (u.title, u.output_schema, u.annotations, u.wait) == (None, None, {}, DEFAULT_WAIT)
    assert u.result_errors("anything") == []
