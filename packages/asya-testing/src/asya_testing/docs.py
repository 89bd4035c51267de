"""Run the Python examples of a Markdown file, so documentation cannot drift from the code."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

__all__ = ["python_blocks", "run_python_blocks"]

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(path: Path) -> list[str]:
    """The ```` ```python ```` blocks of a Markdown file, in order."""
    return _BLOCK.findall(path.read_text(encoding="utf-8"))


def run_python_blocks(path: Path) -> int:
    """Execute every Python block of ``path`` in one namespace; return how many ran.

    A block that raises fails the caller's test with the file and block number in the error.
    """
    blocks = python_blocks(path)
    # A module of its own in sys.modules while the blocks run: dataclasses and typing look a
    # class's module up there (an example may declare a dataclass).
    module = types.ModuleType("asya_docs_" + re.sub(r"\W", "_", path.stem))
    sys.modules[module.__name__] = module
    try:
        for number, source in enumerate(blocks, start=1):
            code = compile(source, f"{path}:block{number}", "exec")
            exec(code, module.__dict__)  # noqa: S102 - running our own documentation is the point
    finally:
        del sys.modules[module.__name__]
    return len(blocks)
