"""Run the Python examples of a Markdown file, so documentation cannot drift from the code."""

from __future__ import annotations

import re
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
    namespace: dict[str, object] = {"__name__": f"docs:{path.name}"}
    for number, source in enumerate(blocks, start=1):
        code = compile(source, f"{path}:block{number}", "exec")
        exec(code, namespace)  # noqa: S102 - running our own documentation is the point
    return len(blocks)
