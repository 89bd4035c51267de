"""Per-actor batch caps in the pipeline file: parsed, refused when wrong, and given to the
actor's sidecar by ``asya dev`` (ASYA_BATCH_MAX_SIZE / ASYA_BATCH_MAX_WAIT)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from asya_cli import PipelineError, load_pipeline
from asya_cli.pipeline import BatchCaps

Run = Callable[..., subprocess.CompletedProcess[str]]  # the asya fixture (conftest.py)
DevRunning = Callable[..., AbstractContextManager[str]]  # the dev_running fixture

TOOLS = "tools:\n  - name: t\n    steps: [a]\n"


def test_an_actor_may_be_a_mapping_with_batch_caps(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "actors:\n"
        "  a: {handler: 'm:C.f', batch: {max_size: 16, max_wait: 0.01}}\n"
        "  b: {handler: 'm:g'}\n"
        "  c: 'm:h'\n"
        "  d: {handler: 'm:k', batch: {max_size: 1}}\n" + TOOLS
    )
    pipeline = load_pipeline(path)
    assert pipeline.actors == {"a": "m:C.f", "b": "m:g", "c": "m:h", "d": "m:k"}
    assert pipeline.batch == {
        "a": BatchCaps(max_size=16, max_wait=0.01),
        "d": BatchCaps(max_size=1, max_wait=None),
    }


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{handler: 'm:f', batch: {max_size: 0}}", "actors.a.batch.max_size: expected 1..10000"),
        ("{handler: 'm:f', batch: {max_size: true}}", "actors.a.batch.max_size: expected"),
        ("{handler: 'm:f', batch: {max_wait: 61}}", "actors.a.batch.max_wait: expected 0..60 s"),
        ("{handler: 'm:f', batch: {size: 4}}", "actors.a.batch: expected a mapping"),
        ("{handler: 'm:f', batch: 4}", "actors.a.batch: expected a mapping"),
        ("{handler: 'm:f', batches: {}}", "actors.a: unknown key 'batches'"),
        ("{batch: {max_size: 4}}", "actors.a: expected module:function, got None"),
    ],
)
def test_bad_batch_entries(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"actors:\n  a: {entry}\n" + TOOLS)
    with pytest.raises(PipelineError) as info:
        load_pipeline(path)
    assert message in str(info.value)


HANDLERS = """
import asya_runtime

def split(payload):
    return [{"n": n} for n in range(6)]

@asya_runtime.batch(max_size=8, max_wait=0.5)
def count(payloads):
    return [{"n": p["n"], "batch": len(payloads)} for p in payloads]
"""


def test_asya_dev_gives_the_cap_to_the_sidecar(
    tmp_path: Path, asya: Run, dev_running: DevRunning
) -> None:
    """The handler would take 8 within 0.5 s; capped at 1, each of the six fan-out children
    reaches it alone, however fast they arrive."""
    folder = tmp_path / "capped"
    folder.mkdir()
    (folder / "handlers.py").write_text(HANDLERS)
    pipeline = folder / "pipeline.yaml"
    pipeline.write_text(
        "actors:\n"
        "  split: handlers:split\n"
        "  count: {handler: 'handlers:count', batch: {max_size: 1}}\n"
        "tools:\n  - name: counted\n    steps: [split, count]\n"
    )
    with dev_running(pipeline) as url:
        called = asya("call", "counted", "{}", "--url", url)
    assert called.returncode == 0, called.stderr
    branches = json.loads(called.stdout[called.stdout.index("{") :])["branches"]
    assert sorted(b["result"]["n"] for b in branches) == list(range(6))
    assert {b["result"]["batch"] for b in branches} == {1}
