"""The conformance checks of the ``partial`` extension (run by :mod:`asya_protocol.conformance`
when the runtime agrees on ``partial``; skipped for one that does not).

The runtime must then serve the conformance handler as a streaming handler, with one more op:
``{"op": "stream", "values": [..], "value": V}`` sends each of ``values`` as a partial result, in
order, then returns ``V``; with ``"code"`` and ``"message"`` it ends with that error instead of
returning. On a connection that did not negotiate ``partial`` the partial results are dropped:
only the final frame comes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from .client import BlockingRuntimeClient
from .messages import ErrorReply, Feature, OkReply, Reply

__all__ = ["STREAM_VALUES", "PartialChecks"]

Client = Callable[[], AbstractContextManager[BlockingRuntimeClient]]

STREAM_VALUES: list[Any] = ["Hel", "lo", " wor", "ld", {"token": 5}, [1, 2], None, 3.5, ""]
"""Partial results of every JSON kind, streamed and expected back in this order."""


class PartialCheckFailed(AssertionError):
    pass


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise PartialCheckFailed(message)


def _ok(reply: Reply) -> Any:
    _expect(isinstance(reply, OkReply), f"expected an ok final reply, got {reply!r}")
    assert isinstance(reply, OkReply)  # noqa: S101 - narrowed for the type checker
    return reply.result_value()


def _stream(values: list[Any], value: Any = "done", **fail: str) -> bytes:
    return json.dumps({"op": "stream", "values": values, "value": value, **fail}).encode()


class PartialChecks:
    """The partial checks, each on its own connection."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def negotiate(self) -> bool:
        """Whether the runtime agrees on ``partial``."""
        with self._client() as c:
            hello = c.hello(Feature.PARTIAL.value, Feature.PROGRESS.value)
        return hello is not None and Feature.PARTIAL.value in hello.features

    @contextmanager
    def _session(self) -> Iterator[BlockingRuntimeClient]:
        with self._client() as c:
            hello = c.hello(Feature.PARTIAL.value)
            _expect(hello is not None and "partial" in hello.features, "partial not negotiated")
            yield c

    def in_order(self) -> None:
        with self._session() as c:
            for values in (STREAM_VALUES, [], ["one"]):
                reply, _, partials = c.stream(_stream(values, {"n": len(values)}))
                _expect(_ok(reply) == {"n": len(values)}, f"final result {reply!r}")
                got = [p.value() for p in partials]
                _expect(got == values, f"partials {got!r}, expected {values!r}")

    def then_error(self) -> None:
        with self._session() as c:
            reply, _, partials = c.stream(
                _stream(["a", "b"], code="conformance_error", message="mid-stream")
            )
            _expect(isinstance(reply, ErrorReply), f"expected an error reply, got {reply!r}")
            assert isinstance(reply, ErrorReply)  # noqa: S101 - narrowed
            _expect(reply.error == "conformance_error", f"code {reply.error!r}")
            _expect([p.value() for p in partials] == ["a", "b"], f"partials {partials!r}")
            reply, _, partials = c.stream(_stream(["c"], 7))
            _expect(_ok(reply) == 7 and len(partials) == 1, "connection unusable after an error")

    def only_when_negotiated(self) -> None:
        with self._client() as c:
            hello = c.hello(Feature.PROGRESS.value)
            _expect(hello is None or "partial" not in hello.features, "partial agreed unasked")
            reply, _, partials = c.stream(_stream(["x", "y"], 9))
            _expect(not partials, f"{len(partials)} partial frame(s) without negotiation")
            _expect(_ok(reply) == 9, f"final result {reply!r}")
        with self._client() as c:  # no hello at all: the base protocol
            reply, _, partials = c.stream(_stream(["x"], 10))
            _expect(not partials and _ok(reply) == 10, "partials on a base-protocol connection")
