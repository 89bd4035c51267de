"""The error tree of asya-protocol.

Everything raised by this package derives from :class:`ProtocolError`, so a caller can catch
the package's failures without catching its own bugs. The two kinds that a caller may already
catch as ``ValueError`` (a bad argument, an unreadable step event) are both.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "EnvelopeError",
    "EventError",
    "FrameError",
    "FrameTooLargeError",
    "IncompleteFrameError",
    "NestingTooDeepError",
    "ProtocolError",
    "RouteError",
]


class ProtocolError(Exception):
    """Base class of every error raised by asya-protocol."""


class ArgumentError(ProtocolError, ValueError):
    """A function was given a value it cannot take (a negative child index, a parent without
    an id, a progress outside 0..1)."""


class EventError(ProtocolError, ValueError):
    """A step event's body is not a valid event."""


class ReplyError(ProtocolError):
    """The runtime closed the connection, or broke the protocol, instead of replying."""


class EnvelopeError(ProtocolError):
    """A message body is not a valid envelope (bad JSON, a missing or mistyped field)."""


class NestingTooDeepError(EnvelopeError):
    """A JSON body nests arrays and objects deeper than the limit (see :mod:`.limits`).

    Raised before any recursive decoding is attempted; ``depth`` is the depth found.
    """

    def __init__(self, what: str, depth: int, limit: int) -> None:
        super().__init__(f"{what} nests {depth} levels deep; the limit is {limit}")
        self.depth = depth
        self.limit = limit


class RouteError(EnvelopeError):
    """The envelope parses but its route is unusable (bad step name, ``current`` out of range)."""


class FrameError(ProtocolError):
    """A socket frame is malformed."""


class FrameTooLargeError(FrameError):
    """A frame announces (or a caller tries to send) more bytes than the limit allows."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class IncompleteFrameError(FrameError):
    """The stream ended in the middle of a frame (inside the length prefix or the body)."""

    def __init__(self, expected: int, received: int, *, in_header: bool) -> None:
        where = "length prefix" if in_header else "frame body"
        super().__init__(
            f"connection closed inside the {where}: expected {expected} bytes, got {received}"
        )
        self.expected = expected
        self.received = received
        self.in_header = in_header
