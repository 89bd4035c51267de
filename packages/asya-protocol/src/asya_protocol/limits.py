"""Checks on JSON bytes made before any recursive decoding: nesting depth and UTF-8.

msgspec (like most JSON decoders) recurses once per nested array or object, even when it only
skips a value to keep it as :class:`msgspec.Raw`. A 2 KB body nested 1,000 deep is enough to
raise ``RecursionError``. So every body Asya decodes (envelopes, request frames, replies) is
first scanned here, without recursion: strings are cut out with a regular expression, the
brackets left are turned into +1/-1 steps, and the deepest running sum is the depth. All of it
runs in C, in time linear in the body's size; a body with no more brackets than the limit is
accepted after two ``bytes.count`` calls.

The same scan validates UTF-8, because a value kept raw is never decoded, so msgspec would let
invalid bytes through and a router would publish a body that is not JSON.
"""

from __future__ import annotations

import itertools
import re

from .errors import EnvelopeError, NestingTooDeepError

__all__ = [
    "MAX_ENVELOPE_DEPTH",
    "MAX_JSON_DEPTH",
    "check_json",
    "json_depth",
]

MAX_JSON_DEPTH = 128
"""The deepest a payload may nest arrays and objects: a request frame, a handler's result, the
``payload`` of an envelope. ``1`` and ``"s"`` have depth 0, ``[]`` and ``{}`` depth 1,
``{"a": [1]}`` depth 2. (The same bound as serde_json's default; far below the ~1,000 levels at
which Python's decoders, msgspec's included, raise ``RecursionError``.)"""

MAX_ENVELOPE_DEPTH = MAX_JSON_DEPTH + 2
"""The deepest an envelope body may nest: one level for the envelope object and one for the
error-end payload around an original payload of :data:`MAX_JSON_DEPTH`, so every error-end
message a router produces can be decoded again. Unknown top-level fields may use it all."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # as signed bytes: +1, +1, -1, -1
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(data: bytes | bytearray | memoryview | str) -> int:
    """How deep ``data`` (JSON text) nests arrays and objects; brackets inside strings do not
    count. Linear time, no recursion. For text that is not JSON the number is meaningless but
    still bounded by the number of brackets."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if b"[" not in raw and b"{" not in raw:
        return 0
    if b'"' in raw:
        raw = _STRING.sub(b"", raw)
    steps = raw.translate(_STEPS, _NOT_BRACKET)
    return max(itertools.accumulate(memoryview(steps).cast("b"), initial=0))


def check_json(
    data: bytes | bytearray | memoryview | str,
    *,
    max_depth: int = MAX_JSON_DEPTH,
    what: str = "body",
) -> None:
    """Raise unless ``data`` nests at most ``max_depth`` deep and is valid UTF-8.

    Raises :class:`NestingTooDeepError` (naming the limit) or :class:`EnvelopeError` (invalid
    UTF-8, naming the first bad byte). Both are errors of the body, never worth a retry.
    ``what`` names the body in the message ("payload", "request", ...).
    """
    if isinstance(data, str):
        depth_bound = data.count("[") + data.count("{")
    else:
        if not isinstance(data, bytes):
            data = bytes(data)
        depth_bound = data.count(b"[") + data.count(b"{")
        if not data.isascii():
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise EnvelopeError(
                    f"{what} is not valid UTF-8 (byte {exc.start}: {exc.reason})"
                ) from None
    if depth_bound <= max_depth:
        return
    depth = json_depth(data)
    if depth > max_depth:
        raise NestingTooDeepError(what, depth, max_depth)
