"""Drive any runtime implementation through the socket protocol and report what it gets right.

    python -m asya_protocol.conformance --socket /var/run/asya/runtime.sock [--max-frame-size N]

The runtime under test must serve the *conformance handler*, whose behaviour is fixed here so any
language can implement it in a few lines (asya-runtime ships one as
``asya_runtime.conformance:handler``). Its payload is an object with an ``op``:

| payload | the handler must |
|---|---|
| ``{"op": "echo", "value": V}`` | return ``V`` |
| ``{"op": "fanout", "values": [..]}`` | return the list (fan-out) |
| ``{"op": "fail", "code": C, "message": M}`` | end with an error reply: code C, message M |
| ``{"op": "raise", "message": M}`` | fail as a crashing handler would (any code, M in message) |
| ``{"op": "progress", "steps": N}`` | report progress N times, then return ``N`` |
| ``{"op": "sleep", "seconds": S, "value": V}`` | wait ``S`` seconds, then return ``V`` |

A runtime that negotiates the ``batch`` extension is checked on batches too (see
:mod:`asya_protocol.conformance_batch`); one that does not skips those checks. The same for
the ``partial`` extension (:mod:`asya_protocol.conformance_partial`, its ``stream`` op).

Besides answering correctly, a runtime must send exactly one final frame per request and
nothing after it (``one-final-frame-per-request``): a sidecar reading a pooled connection cannot
tell a stray second reply from the answer to its next request.

Exit status 0 when every check passes, 1 otherwise. Uses blocking sockets and the standard
library only (plus this package), so it runs anywhere the runtime's socket is reachable.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .client import BlockingRuntimeClient, ReplyError
from .conformance_batch import BatchChecks
from .conformance_partial import PartialChecks
from .errors import FrameError
from .messages import (
    ControlRequest,
    ErrorReply,
    OkReply,
    Reply,
    encode_control,
)

__all__ = ["CheckResult", "ConformanceReport", "run_checks"]

ECHO_VALUES: list[Any] = [
    {"text": "Hello world"},
    "plain string",
    42,
    1.5,
    None,
    True,
    {"unicode": "h\u00e9llo \u2603 \U0001f600"},
    {"nested": [{"a": []}, {"b": {"c": [1, 2, 3]}}]},
]


EXTRA_FRAME_WAIT = 0.1
"""Seconds to wait, after a final reply, for bytes that should never come."""


def _bytes_within(sock: socket.socket, seconds: float) -> bytes | None:
    """Bytes the peer sends within ``seconds`` (``b""`` for none), or ``None`` if it closed."""
    previous = sock.gettimeout()
    sock.settimeout(seconds)
    try:
        data = sock.recv(65536)
    except TimeoutError:
        return b""
    finally:
        sock.settimeout(previous)
    return data or None


class CheckFailed(AssertionError):
    """One conformance expectation was not met."""


def _call(c: BlockingRuntimeClient, payload: Any) -> Reply:
    try:
        return c.call(payload)
    except ReplyError as exc:
        raise CheckFailed(str(exc)) from None


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str = ""
    seconds: float = 0.0


@dataclass
class ConformanceReport:
    results: list[CheckResult] = field(default_factory=list)
    extended: bool = False

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)


def _reply(c: BlockingRuntimeClient) -> Reply:
    try:
        return c.reply()
    except ReplyError as exc:
        raise CheckFailed(str(exc)) from None


def _ok_value(reply: Reply) -> Any:
    if not isinstance(reply, OkReply):
        raise CheckFailed(f"expected an ok reply, got {reply!r}")
    return reply.result_value()


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


class _Checks:
    def __init__(self, path: str, timeout: float, max_frame_size: int | None) -> None:
        self.path = path
        self.timeout = timeout
        self.max_frame_size = max_frame_size
        self.extended = False

    @contextmanager
    def client(self) -> Iterator[BlockingRuntimeClient]:
        c = BlockingRuntimeClient(self.path, timeout=self.timeout)
        try:
            yield c
        finally:
            c.close()

    def ping(self) -> None:
        with self.client() as c:
            c.send(encode_control(ControlRequest(op="ping")))
            reply = _reply(c)
        if isinstance(reply, OkReply):
            _expect(reply.result_value() == "pong", f"ping answered {reply.result_value()!r}")
            self.extended = True
        else:
            _expect(
                isinstance(reply, ErrorReply) and reply.error == "parse_error",
                f"a base runtime must answer a control frame with parse_error, got {reply!r}",
            )

    def echo_values(self) -> None:
        with self.client() as c:
            for value in ECHO_VALUES:
                got = _ok_value(_call(c, {"op": "echo", "value": value}))
                _expect(got == value, f"echo of {value!r} returned {got!r}")

    def many_exchanges_on_one_connection(self) -> None:
        with self.client() as c:
            for i in range(50):
                _expect(_ok_value(_call(c, {"op": "echo", "value": i})) == i, f"exchange {i}")

    def one_final_frame_per_request(self) -> None:
        requests: list[Any] = [
            {"op": "echo", "value": 1},
            {"op": "fanout", "values": [1, 2]},
            {"op": "fail", "code": "conformance_error", "message": "as asked"},
            {"op": "raise", "message": "deliberate crash"},
        ]
        with self.client() as c:
            for payload in requests:
                _call(c, payload)
                self._nothing_more(c, f"the reply to {payload['op']!r}")
            c.send(b"{not json")
            _reply(c)
            self._nothing_more(c, "the parse_error reply")
            _expect(_ok_value(_call(c, {"op": "echo", "value": 6})) == 6, "connection unusable")

    def _nothing_more(self, c: BlockingRuntimeClient, after: str) -> None:
        extra = _bytes_within(c.sock, EXTRA_FRAME_WAIT)
        _expect(extra is not None, f"the runtime closed the connection after {after}")
        _expect(
            not extra,
            f"{len(extra or b'')} byte(s) arrived after {after}: a runtime sends exactly one "
            "final frame per request (a sidecar would read them as the next request's answer)",
        )

    def concurrent_connections(self) -> None:
        errors: list[str] = []

        def worker(n: int) -> None:
            try:
                with self.client() as c:
                    for i in range(10):
                        value = {"worker": n, "i": i}
                        got = _ok_value(_call(c, {"op": "sleep", "seconds": 0.01, "value": value}))
                        if got != value:
                            errors.append(f"worker {n} got {got!r} for {value!r}")
            except Exception as exc:  # noqa: BLE001 - collected and reported as a failure
                errors.append(f"worker {n}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.timeout * 10)
        _expect(not errors, "; ".join(errors[:3]))

    def fan_out(self) -> None:
        values = [{"chunk": 1, "text": "Hello"}, {"chunk": 2, "text": "world"}]
        with self.client() as c:
            _expect(_ok_value(_call(c, {"op": "fanout", "values": values})) == values, "fan-out")
            _expect(_ok_value(_call(c, {"op": "fanout", "values": []})) == [], "empty fan-out")

    def chosen_error_code(self) -> None:
        with self.client() as c:
            reply = _call(c, {"op": "fail", "code": "conformance_error", "message": "as asked"})
            if not isinstance(reply, ErrorReply):
                raise CheckFailed(f"expected an error reply, got {reply!r}")
            _expect(reply.error == "conformance_error", f"code {reply.error!r}")
            _expect(reply.message == "as asked", f"message {reply.message!r}")

    def handler_exception(self) -> None:
        with self.client() as c:
            reply = _call(c, {"op": "raise", "message": "deliberate crash"})
            if not isinstance(reply, ErrorReply):
                raise CheckFailed(f"expected an error reply, got {reply!r}")
            _expect("deliberate crash" in reply.message, f"message {reply.message!r}")
            _expect(_ok_value(_call(c, {"op": "echo", "value": 1})) == 1, "connection unusable")

    def parse_error(self) -> None:
        with self.client() as c:
            c.send(b"{not json")
            reply = _reply(c)
            _expect(
                isinstance(reply, ErrorReply) and reply.error == "parse_error",
                f"expected parse_error, got {reply!r}",
            )
            _expect(_ok_value(_call(c, {"op": "echo", "value": 2})) == 2, "connection unusable")

    def too_deep_request(self) -> None:
        deep = b"[" * 1000 + b"]" * 1000  # 2 KB that overflows a recursive decoder
        with self.client() as c:
            c.send(b'{"op": "echo", "value": ' + deep + b"}")
            reply = _reply(c)
            _expect(
                isinstance(reply, ErrorReply) and reply.error == "parse_error",
                f"a request nested past MAX_JSON_DEPTH must be a parse_error, got {reply!r}",
            )
            _expect(_ok_value(_call(c, {"op": "echo", "value": 3})) == 3, "connection unusable")

    def truncated_frame(self) -> None:
        with self.client() as c:
            c.sock.sendall((100).to_bytes(4, "big") + b"0123456789")
        with self.client() as c:
            _expect(_ok_value(_call(c, {"op": "echo", "value": 3})) == 3, "runtime did not survive")

    def oversized_frame(self) -> None:
        if self.max_frame_size is None:
            raise CheckFailed("oversized-frame needs --max-frame-size")
        with self.client() as c:
            c.sock.sendall((self.max_frame_size + 1).to_bytes(4, "big"))
            reply = _reply(c)
            _expect(
                isinstance(reply, ErrorReply) and reply.error == "frame_too_large",
                f"expected frame_too_large, got {reply!r}",
            )
        with self.client() as c:
            _expect(_ok_value(_call(c, {"op": "echo", "value": 4})) == 4, "runtime did not survive")

    def client_gives_up(self) -> None:
        with self.client() as c:
            c.send(json.dumps({"op": "sleep", "seconds": 0.3, "value": 0}).encode())
        with self.client() as c:
            _expect(_ok_value(_call(c, {"op": "echo", "value": 5})) == 5, "runtime did not survive")

    def progress_only_when_negotiated(self) -> None:
        with self.client() as c:
            _expect(_ok_value(_call(c, {"op": "progress", "steps": 3})) == 3, "progress result")

    def hello_and_progress(self) -> None:
        with self.client() as c:
            c.send(encode_control(ControlRequest(op="hello", features=("progress",))))
            hello = _ok_value(_reply(c))
            _expect(isinstance(hello, dict), f"hello result {hello!r}")
            _expect(hello.get("protocol") == 1, f"hello protocol {hello.get('protocol')!r}")
            _expect("progress" in hello.get("features", []), f"features {hello!r}")
            reply, progress = c.final(json.dumps({"op": "progress", "steps": 3}).encode())
            _expect(_ok_value(reply) == 3, "progress result")
            _expect(len(progress) == 3, f"expected 3 progress frames, got {len(progress)}")


def run_checks(
    path: str, *, timeout: float = 10.0, max_frame_size: int | None = None
) -> ConformanceReport:
    """Run every applicable check against the runtime serving on ``path``."""
    checks = _Checks(path, timeout, max_frame_size)
    plan: list[tuple[str, Callable[[], None]]] = [
        ("ping", checks.ping),
        ("echo-values", checks.echo_values),
        ("many-exchanges-on-one-connection", checks.many_exchanges_on_one_connection),
        ("one-final-frame-per-request", checks.one_final_frame_per_request),
        ("concurrent-connections", checks.concurrent_connections),
        ("fan-out", checks.fan_out),
        ("chosen-error-code", checks.chosen_error_code),
        ("handler-exception", checks.handler_exception),
        ("parse-error", checks.parse_error),
        ("too-deep-request", checks.too_deep_request),
        ("truncated-frame", checks.truncated_frame),
        ("client-gives-up", checks.client_gives_up),
        ("no-progress-without-negotiation", checks.progress_only_when_negotiated),
    ]
    if max_frame_size is not None:
        plan.append(("oversized-frame", checks.oversized_frame))
    report = ConformanceReport()
    for name, check in plan:
        report.results.append(_run_one(name, check))
    report.extended = checks.extended
    if checks.extended:  # only a runtime that answers control frames can negotiate progress
        report.results.append(_run_one("hello-and-progress", checks.hello_and_progress))
        report.results.extend(_batch_checks(checks))
        report.results.extend(_partial_checks(checks))
    return report


def _partial_checks(checks: _Checks) -> list[CheckResult]:
    """The ``partial`` extension's checks, for a runtime that agrees on it (none otherwise)."""
    partial = PartialChecks(checks.client)
    try:
        negotiated = partial.negotiate()
    except (FrameError, OSError, ValueError, ReplyError) as exc:
        return [CheckResult("partial-hello", False, f"{type(exc).__name__}: {exc}")]
    if not negotiated:
        return []
    plan = [
        ("partial-hello", lambda: None),
        ("partials-in-order", partial.in_order),
        ("partials-then-error", partial.then_error),
        ("no-partials-without-negotiation", partial.only_when_negotiated),
    ]
    return [_run_one(name, check) for name, check in plan]


def _batch_checks(checks: _Checks) -> list[CheckResult]:
    """The ``batch`` extension's checks, for a runtime that negotiates it (none otherwise)."""
    batch = BatchChecks(checks.client)
    try:
        negotiated = batch.negotiate()
    except (FrameError, OSError, ValueError, ReplyError) as exc:
        return [CheckResult("batch-hello", False, f"{type(exc).__name__}: {exc}")]
    if not negotiated:
        return []
    plan = [
        ("batch-hello", batch.hello),
        ("batch-results-in-order", batch.results_in_order),
        ("batch-per-item-error", batch.per_item_error),
        ("batch-whole-batch-error", batch.whole_batch_error),
        ("batch-over-max-size", batch.over_max_size),
    ]
    return [_run_one(name, check) for name, check in plan]


def _run_one(name: str, check: Callable[[], None]) -> CheckResult:
    started = time.perf_counter()
    try:
        check()
    except AssertionError as exc:  # CheckFailed, and the batch checks' own
        return CheckResult(name, False, str(exc), time.perf_counter() - started)
    except (FrameError, OSError, ValueError, ReplyError) as exc:
        detail = f"{type(exc).__name__}: {exc}"
        return CheckResult(name, False, detail, time.perf_counter() - started)
    return CheckResult(name, True, "", time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m asya_protocol.conformance",
        description="Check a runtime serving the conformance handler against the protocol.",
    )
    parser.add_argument("--socket", required=True, help="path of the runtime's Unix socket")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per reply")
    parser.add_argument(
        "--max-frame-size", type=int, help="the runtime's frame limit, to test oversized frames"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = run_checks(args.socket, timeout=args.timeout, max_frame_size=args.max_frame_size)
    if args.json:
        out = {
            "passed": report.passed,
            "extended": report.extended,
            "checks": [r.__dict__ for r in report.results],
        }
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        for r in report.results:
            mark = "PASS" if r.passed else "FAIL"
            sys.stdout.write(f"{mark} {r.name} ({r.seconds * 1000:.0f} ms) {r.detail}\n")
        kind = "extended" if report.extended else "base"
        failed = sum(not r.passed for r in report.results)
        passed = len(report.results) - failed
        sys.stdout.write(f"{kind} protocol runtime: {passed} passed, {failed} failed\n")
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
