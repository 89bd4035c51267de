"""Streaming: a handler that yields its answer word by word (partial results) before the whole
answer (the final result). ``asya call`` prints the words as they come."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from asya_runtime import streaming


@streaming
def reply(payload: dict[str, Any]) -> Iterator[str]:
    words = f"You said: {payload['text']}".split()
    for i, word in enumerate(words):
        time.sleep(0.05)  # as a model generating tokens would
        yield word if i == 0 else " " + word
    return {"reply": " ".join(words), "words": len(words)}
