"""A handler module that takes long to import, as one loading a model does."""

from __future__ import annotations

import time
from typing import Any

time.sleep(30)


def echo(payload: Any) -> Any:
    return payload
