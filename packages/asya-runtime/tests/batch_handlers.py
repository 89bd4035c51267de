"""Batch handlers served in the runtime's batch tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from asya_runtime import AsyaError, batch


@batch(max_size=4, max_wait=0.02)
def double(payloads: list[dict[str, Any]]) -> list[Any]:
    out: list[Any] = []
    for p in payloads:
        if p.get("bad"):
            out.append(AsyaError("bad_item", f"item {p['n']} is bad"))
        elif p.get("split"):
            out.append([p["n"], p["n"]])
        elif p.get("unencodable"):
            out.append(object())
        else:
            out.append({"n": p["n"] * 2})
    return out


@batch(max_size=4)
async def async_double(payloads: list[dict[str, Any]]) -> list[Any]:
    await asyncio.sleep(0)
    return [{"n": p["n"] * 2} for p in payloads]


@batch(max_size=4)
def crash(payloads: list[Any]) -> list[Any]:
    raise RuntimeError(f"the model crashed on {len(payloads)} payloads")


@batch(max_size=4)
def short(payloads: list[Any]) -> list[Any]:
    return payloads[1:]


class Model:
    @batch(max_size=2, max_wait=0.001)
    def predict(self, payloads: list[Any]) -> list[Any]:
        return [len(payloads)] * len(payloads)


@batch(max_size=2)
def generator(payloads: list[Any]) -> Iterator[Any]:
    yield from payloads
