"""A real model pipeline: chunk -> embed -> classify, with all-MiniLM-L6-v2 run in numpy.

- ``chunk`` splits a text into sentences, one message each (fan-out);
- ``Embedder.embed`` embeds them, many messages per call (``@batch``): the model is loaded once,
  in ``Embedder.__init__``, when the runtime starts (``ASYA_HANDLER=handlers:Embedder.embed``);
- ``Classifier.classify`` names the nearest label; the labels' descriptions are embedded once,
  in ``Classifier.__init__``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
from minilm import MiniLM

import asya_runtime

LABELS: dict[str, list[str]] = {
    "greeting": [
        "Hello, how are you?",
        "Hi there, good morning, nice to meet you.",
        "Hey, how is it going?",
    ],
    "billing": [
        "A question about an invoice, a bill or a payment that is due.",
        "I was charged twice, I want a refund.",
        "Please pay the outstanding amount on your account.",
    ],
    "technical support": [
        "The app crashes with an error message when I start it.",
        "Something is broken and does not work, please help me fix it.",
        "I cannot log in, the page shows an error.",
    ],
    "shipping": [
        "Where is my order? It has not been delivered yet.",
        "The parcel tracking number shows no update.",
    ],
}

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def chunk(payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One message per sentence of ``payload["text"]``."""
    sentences = [s.strip() for s in _SENTENCE.split(payload["text"]) if s.strip()]
    for n, sentence in enumerate(sentences, start=1):
        yield {"chunk": n, "text": sentence}


class Embedder:
    def __init__(self) -> None:
        self.model = MiniLM()

    @asya_runtime.batch(max_size=32, max_wait=0.01)
    def embed(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        vectors = self.model.encode([p["text"] for p in payloads])
        return [{**p, "embedding": v.tolist()} for p, v in zip(payloads, vectors, strict=True)]


class Classifier:
    def __init__(self) -> None:
        model = MiniLM()
        self.names = list(LABELS)
        # One unit vector per label: the mean of its descriptions' embeddings, normalised.
        centroids = np.stack([model.encode(LABELS[name]).mean(axis=0) for name in self.names])
        self.centroids = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)

    def classify(self, payload: dict[str, Any]) -> dict[str, Any]:
        scores = self.centroids @ np.asarray(payload["embedding"], dtype=np.float32)
        best = int(scores.argmax())
        return {
            "chunk": payload["chunk"],
            "text": payload["text"],
            "label": self.names[best],
            "score": round(float(scores[best]), 4),
            "scores": {n: round(float(s), 4) for n, s in zip(self.names, scores, strict=True)},
        }
