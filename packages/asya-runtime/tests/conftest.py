from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from asya_testing.processes import ManagedProcess, runtime_process

HERE = str(Path(__file__).parent)

StartRuntime = Callable[..., AbstractContextManager[tuple[ManagedProcess, str]]]


@pytest.fixture
def start_runtime(tmp_path: Path) -> StartRuntime:
    """Start ``python -m asya_runtime`` with a handler from sample_handlers (or any module)."""

    def start(handler: str, **kwargs: Any) -> AbstractContextManager[tuple[ManagedProcess, str]]:
        if ":" not in handler:
            handler = f"sample_handlers:{handler}"
        return runtime_process(handler, python_path=[HERE], log_dir=tmp_path, **kwargs)

    return start
