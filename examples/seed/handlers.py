"""The seed's text pipeline: preprocess -> inference -> postprocess."""

from __future__ import annotations

from typing import Any

from asya_runtime import progress


def preprocess(payload: dict[str, Any]) -> dict[str, Any]:
    """Tokenise (a stand-in for a real tokenizer)."""
    words = payload["text"].split()
    return {"tokens": [n + 1 for n in range(len(words))]}


def inference(payload: dict[str, Any]) -> dict[str, Any]:
    """Classify (a stand-in for a model)."""
    progress(0.5, "running the model")
    label = "greeting" if len(payload["tokens"]) <= 3 else "statement"
    return {"prediction": label}


def postprocess(payload: dict[str, Any]) -> dict[str, Any]:
    return {"result": f"Classified as {payload['prediction']}"}
