"""The asya command as a new user runs it: real processes, the seed pipeline."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from asya_cli import PipelineError, load_pipeline
from asya_testing.processes import free_port

ROOT = Path(__file__).resolve().parents[3]
SEED = ROOT / "examples/seed/pipeline.yaml"
Run = Callable[..., subprocess.CompletedProcess[str]]  # the asya fixture (conftest.py)
DevRunning = Callable[..., AbstractContextManager[str]]  # the dev_running fixture


@pytest.fixture
def dev(dev_running: DevRunning) -> Iterator[str]:
    with dev_running(SEED) as url:
        yield url


def test_dev_call_and_jobs(dev: str, asya: Run) -> None:
    called = asya("call", "classify_text", '{"text": "Hello world"}', "--url", dev)
    assert called.returncode == 0, called.stderr
    assert '"result": "Classified as greeting"' in called.stdout
    listed = asya("jobs", "--url", dev)
    assert listed.returncode == 0
    assert "classify_text" in listed.stdout
    assert "succeeded" in listed.stdout


def test_call_errors_have_hints(dev: str, asya: Run) -> None:
    bad = asya("call", "classify_text", '{"text": 5}', "--url", dev)
    assert bad.returncode == 1
    assert "invalid arguments" in bad.stderr
    assert "hint:" in bad.stderr
    unknown = asya("call", "nope", "{}", "--url", dev)
    assert unknown.returncode == 1
    assert "unknown tool 'nope'" in unknown.stderr
    not_json = asya("call", "classify_text", "{text", "--url", dev)
    assert not_json.returncode == 1
    assert "arguments are not JSON" in not_json.stderr


def test_no_gateway(asya: Run) -> None:
    proc = asya("call", "classify_text", "{}", "--url", f"http://127.0.0.1:{free_port()}")
    assert proc.returncode == 1
    assert "no gateway answers" in proc.stderr
    assert "asya dev" in proc.stderr


def test_handler_not_importable(tmp_path: Path, asya: Run) -> None:
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        "actors:\n  broken: no_such_module:run\ntools:\n  - name: t\n    steps: [broken]\n"
    )
    proc = asya("dev", str(pipeline), "--port", str(free_port()))
    assert proc.returncode == 1
    assert "the runtime of 'broken' stopped" in proc.stderr
    assert "no_such_module" in proc.stderr
    assert "hint:" in proc.stderr


def test_port_taken(asya: Run) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = asya("dev", str(SEED), "--port", str(port))
    assert proc.returncode == 1
    assert f"port {port} on 127.0.0.1 is taken" in proc.stderr
    assert "--port" in proc.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("actors: {}\n", "actors: expected a mapping"),
        (
            "actors: {a: 'nocolon'}\ntools: [{name: t, steps: [a]}]\n",
            "actors.a: expected module:function",
        ),
        (
            "actors: {a: 'm:f'}\ntools: [{name: t, steps: [b]}]\n",
            "tool 't'.steps: no actor named 'b'",
        ),
        ("actors: {a: 'm:f'}\n", "tools: expected a non-empty list"),
    ],
)
def test_bad_pipeline_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(PipelineError) as info:
        load_pipeline(path)
    assert message in str(info.value)


def test_quickstart_pipeline_is_the_example() -> None:
    import re

    import yaml

    text = (ROOT / "docs/quickstart.md").read_text()
    [block] = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    documented = yaml.safe_load(block)
    example = yaml.safe_load(SEED.read_text())
    assert documented["actors"] == example["actors"]
    assert documented["tools"][0]["steps"] == example["tools"][0]["steps"]


def test_fanout_and_failing_examples(asya: Run, dev_running: DevRunning) -> None:
    import json

    with dev_running(ROOT / "examples/fanout/pipeline.yaml") as url:
        fan = asya("call", "shout_words", '{"text": "Hello big world"}', "--url", url)
    assert fan.returncode == 0, fan.stderr
    branches = json.loads(fan.stdout[fan.stdout.index("{") :])["branches"]
    assert sorted(b["result"]["text"] for b in branches) == ["BIG", "HELLO", "WORLD"]
    with dev_running(ROOT / "examples/failing/pipeline.yaml") as url:
        doomed = asya("call", "doomed", '{"text": "anything"}', "--url", url)
        empty = asya("call", "doomed", "{}", "--url", url)
    assert doomed.returncode == 1
    assert "failed" in doomed.stderr
    assert "the model file is missing" in doomed.stderr
    assert empty.returncode == 1
    assert "empty_input" in empty.stderr


def test_call_prints_partial_results_before_the_result(asya: Run, dev_running: DevRunning) -> None:
    import json

    with dev_running(ROOT / "examples/streaming/pipeline.yaml") as url:
        called = asya("call", "echo_reply", '{"text": "Hello big world"}', "--url", url)
    assert called.returncode == 0, called.stderr
    out = called.stdout
    # The words came as text, on one line, before the final result (the JSON object).
    assert "You said: Hello big world\n" in out
    assert out.index("You said: Hello big world\n") < out.index("{")
    assert json.loads(out[out.index("{") :]) == {"reply": "You said: Hello big world", "words": 5}
