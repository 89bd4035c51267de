"""The conformance checks of the ``batch`` extension (run by :mod:`asya_protocol.conformance`
when the runtime negotiates ``batch``; skipped for one that does not).

The runtime must serve the conformance handler as a batch handler: each item is one of the
conformance payloads; ``fail`` fails that item alone (an entry in ``errors``), ``raise`` fails
the whole batch (one error reply), and every other op answers as it does alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from .batch import BatchOkReply, decode_batch_reply, encode_batch_request, split_batch_reply
from .client import BlockingRuntimeClient
from .framing import read_frame_blocking
from .messages import BatchLimits, ErrorReply, Feature, OkReply

__all__ = ["BatchChecks"]

Client = Callable[[], AbstractContextManager[BlockingRuntimeClient]]


class BatchCheckFailed(AssertionError):
    pass


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise BatchCheckFailed(message)


class BatchChecks:
    """The batch checks, each on a connection that negotiated ``batch``."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.limits: BatchLimits | None = None

    def negotiate(self) -> bool:
        """Whether the runtime takes batches (then :attr:`limits` holds its limits)."""
        with self._client() as c:
            hello = c.hello(Feature.BATCH.value)
        if hello is None or Feature.BATCH.value not in hello.features:
            return False
        self.limits = hello.batch
        return True

    @contextmanager
    def _session(self) -> Iterator[BlockingRuntimeClient]:
        with self._client() as c:
            hello = c.hello(Feature.BATCH.value)
            _expect(hello is not None and "batch" in hello.features, "batch not negotiated")
            yield c

    def _exchange(self, c: BlockingRuntimeClient, items: list[Any]) -> BatchOkReply | ErrorReply:
        c.send(encode_batch_request([json.dumps(i).encode() for i in items]))
        frame = read_frame_blocking(c.sock)
        _expect(frame is not None, "the runtime closed the connection instead of replying")
        assert frame is not None  # noqa: S101 - for the type checker, checked above
        reply = decode_batch_reply(frame)
        _expect(not isinstance(reply, OkReply), "progress frame without negotiation")
        assert not isinstance(reply, OkReply)  # noqa: S101 - narrowed for the type checker
        _expect(isinstance(reply, BatchOkReply | ErrorReply), f"a batch reply, not {reply!r}")
        return reply  # type: ignore[return-value]

    def _items(self, c: BlockingRuntimeClient, items: list[Any]) -> list[OkReply | ErrorReply]:
        reply = self._exchange(c, items)
        return split_batch_reply(reply, len(items))

    @property
    def max_size(self) -> int:
        return self.limits.max_size if self.limits is not None else 1

    def hello(self) -> None:
        limits = self.limits
        _expect(limits is not None, "a hello agreeing on 'batch' must carry a 'batch' object")
        assert limits is not None  # noqa: S101 - narrowed
        _expect(limits.max_size >= 1, f"batch max_size {limits.max_size} < 1")
        _expect(limits.max_wait_ms >= 0, f"batch max_wait_ms {limits.max_wait_ms} < 0")

    def results_in_order(self) -> None:
        values = [{"n": i} for i in range(self.max_size)]
        with self._session() as c:
            for size in sorted({1, self.max_size}):
                got = self._items(c, [{"op": "echo", "value": v} for v in values[:size]])
                _expect([_value(r) for r in got] == values[:size], f"batch of {size}: {got!r}")

    def per_item_error(self) -> None:
        items = [
            {"op": "fail", "code": "conformance_error", "message": "as asked"},
            {"op": "echo", "value": 2},
            {"op": "fanout", "values": [1, 2]},
        ][: self.max_size]
        with self._session() as c:
            got = self._items(c, items)
            first = got[0]
            _expect(isinstance(first, ErrorReply), f"item 0 must fail alone, got {first!r}")
            assert isinstance(first, ErrorReply)  # noqa: S101 - narrowed
            _expect(first.error == "conformance_error", f"item 0 code {first.error!r}")
            _expect([_value(r) for r in got[1:]] == [2, [1, 2]][: len(got) - 1], repr(got))

    def whole_batch_error(self) -> None:
        items = [{"op": "echo", "value": 1}, {"op": "raise", "message": "deliberate crash"}]
        with self._session() as c:
            reply = self._exchange(c, items[-self.max_size :])
            _expect(isinstance(reply, ErrorReply), f"a raising batch is one error, got {reply!r}")
            assert isinstance(reply, ErrorReply)  # noqa: S101 - narrowed
            _expect("deliberate crash" in reply.message, f"message {reply.message!r}")
            got = self._items(c, [{"op": "echo", "value": 3}])
            _expect([_value(r) for r in got] == [3], "connection unusable after an error")

    def over_max_size(self) -> None:
        items = [{"op": "echo", "value": i} for i in range(self.max_size + 1)]
        with self._session() as c:
            reply = self._exchange(c, items)
            _expect(
                isinstance(reply, ErrorReply) and reply.error == "protocol_error",
                f"a batch over max_size must be a protocol_error, got {reply!r}",
            )
            got = self._items(c, [{"op": "echo", "value": 4}])
            _expect([_value(r) for r in got] == [4], "connection unusable after a refusal")


def _value(reply: OkReply | ErrorReply) -> Any:
    _expect(isinstance(reply, OkReply), f"expected an ok item, got {reply!r}")
    assert isinstance(reply, OkReply)  # noqa: S101 - narrowed
    return reply.result_value()
