"""A streaming handler for the gateway's end-to-end tests (served by a real asya-runtime)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from asya_runtime import streaming


@streaming
def words(payload: dict[str, Any]) -> Iterator[str]:
    """Each word of the text (and a space) as a partial result, a little apart; then the count."""
    for word in payload["text"].split():
        time.sleep(0.002)
        yield word + " "
    return {"words": len(payload["text"].split())}
