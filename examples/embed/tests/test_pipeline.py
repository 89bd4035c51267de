"""The whole pipeline as a user runs it: ``asya dev`` (a real runtime process per actor, the
sidecars, the gateway) and ``asya call``."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

ASYA_CALL = [sys.executable, "-m", "asya_cli", "call"]


def call(url: str, text: str) -> list[dict[str, Any]]:
    arguments = json.dumps({"text": text})
    proc = subprocess.run(
        [*ASYA_CALL, "classify_text", arguments, "--url", url],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    branches = json.loads(proc.stdout[proc.stdout.index("{") :])["branches"]
    return sorted((b["result"] for b in branches), key=lambda r: r["chunk"])


@pytest.mark.timeout(240)
def test_sentences_are_classified_by_meaning(dev: str) -> None:
    [greeting] = call(dev, "Hello there, how are you?")
    assert greeting["label"] == "greeting"
    [billing] = call(dev, "Your invoice #123 is overdue, please pay")
    assert billing["label"] == "billing"
    both = call(dev, "Hello there, how are you? Your invoice #123 is overdue, please pay.")
    assert [r["label"] for r in both] == ["greeting", "billing"]
    assert both[0]["text"] == "Hello there, how are you?"
    assert both[0]["score"] == max(both[0]["scores"].values())
