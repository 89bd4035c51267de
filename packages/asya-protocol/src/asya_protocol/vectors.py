"""Language-neutral test vectors shipped with the package (``asya_protocol/data/*.json``).

Every implementation of the protocol (this one included) should pass them; see
``docs/protocol.md`` for what each file means.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from .errors import ArgumentError

__all__ = ["VECTOR_FILES", "load_vectors"]

VECTOR_FILES = ("envelopes", "frames", "replies", "batch")


def load_vectors(name: str) -> list[dict[str, Any]]:
    """The vectors of one file: ``envelopes``, ``frames``, ``replies`` or ``batch``."""
    if name not in VECTOR_FILES:
        raise ArgumentError(f"unknown vector file {name!r}; choose one of {VECTOR_FILES}")
    text = resources.files("asya_protocol").joinpath("data", f"{name}.json").read_text("utf-8")
    vectors: list[dict[str, Any]] = json.loads(text)["vectors"]
    return vectors
