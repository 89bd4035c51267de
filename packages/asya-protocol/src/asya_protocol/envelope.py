"""Envelope and Route: the JSON message that travels on every queue.

Decoding keeps the payload and every unknown top-level field as :class:`msgspec.Raw` (bytes
exactly as received), so a router can advance the route and re-encode the envelope without
decoding the payload, and without dropping fields that a newer producer added.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from .errors import ArgumentError, EnvelopeError, RouteError
from .limits import MAX_ENVELOPE_DEPTH, check_json

__all__ = [
    "CHILD_ID_NAMESPACE",
    "MAX_QUEUE_NAME_BYTES",
    "QUEUE_NAME_PATTERN",
    "RESERVED_QUEUE_PREFIX",
    "Envelope",
    "Route",
    "child_id",
    "decode_envelope",
    "encode_envelope",
    "new_id",
    "validate_queue_name",
]

MAX_QUEUE_NAME_BYTES = 255
"""AMQP limits queue names and routing keys to a short string of 255 bytes."""

QUEUE_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]*"
"""A step (queue) name, unanchored; also refused: a longer name than MAX_QUEUE_NAME_BYTES and
the RESERVED_QUEUE_PREFIX."""
RESERVED_QUEUE_PREFIX = "amq."
"""RabbitMQ refuses to declare a queue or exchange whose name starts with this (403)."""
_QUEUE_NAME = re.compile(QUEUE_NAME_PATTERN)
T = TypeVar("T")
_KNOWN_FIELDS = frozenset({"id", "route", "payload", "headers", "parent_id"})


def validate_queue_name(name: str) -> str:
    """Return ``name`` if it is a valid step (queue) name, else raise :class:`RouteError`.

    A valid name starts with a letter or digit, continues with letters, digits, ``.``, ``_``,
    ``:`` or ``-``, is at most 255 bytes and does not start with ``amq.`` (reserved by AMQP).
    Wildcards (``*``, ``#``) are refused because the name is also a topic-exchange binding key.
    """
    if not isinstance(name, str) or not _QUEUE_NAME.fullmatch(name):
        raise RouteError(f"invalid step name {name!r}: use letters, digits, '.', '_', ':', '-'")
    if len(name.encode()) > MAX_QUEUE_NAME_BYTES:
        raise RouteError(f"step name longer than {MAX_QUEUE_NAME_BYTES} bytes: {name[:40]!r}...")
    if name.startswith(RESERVED_QUEUE_PREFIX):
        raise RouteError(f"step name {name!r} uses the reserved prefix {RESERVED_QUEUE_PREFIX!r}")
    return name


def new_id() -> str:
    """A fresh envelope id (a random UUID in its canonical text form)."""
    return str(uuid.uuid4())


CHILD_ID_NAMESPACE = uuid.UUID("457d60a5-cc13-5398-82fb-e96ca64f7880")
"""The UUIDv5 namespace of fan-out child ids (see :func:`child_id`); it is itself
``uuid5(NAMESPACE_URL, "https://asya.sh/ns/fan-out-child")``."""


def child_id(parent_id: str, index: int) -> str:
    """The id of fan-out child ``index`` (0-based) of the message ``parent_id``.

    ``uuid5(CHILD_ID_NAMESPACE, f"{parent_id}:{index}")``: derived, never random, so a parent
    redelivered after a crash republishes its children under the same ids (duplicates a consumer
    can drop), and any router in any language computes the same ids.
    """
    if index < 0:
        raise ArgumentError(f"a child index is >= 0, not {index}")
    return str(uuid.uuid5(CHILD_ID_NAMESPACE, f"{parent_id}:{index}"))


# Pipelines repeat: remember step tuples already validated (bounded, cleared when full).
_VALID_STEPS_CACHE_SIZE = 4096
_valid_steps: set[tuple[str, ...]] = set()


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """The pipeline of a message: queue names, and the index of the step being processed."""

    steps: tuple[str, ...]
    current: int = 0

    def __post_init__(self) -> None:
        if self.steps not in _valid_steps:
            if not self.steps:
                raise RouteError("route.steps must not be empty")
            for step in self.steps:
                validate_queue_name(step)
            if len(_valid_steps) >= _VALID_STEPS_CACHE_SIZE:
                _valid_steps.clear()
            _valid_steps.add(self.steps)
        if not 0 <= self.current <= len(self.steps):
            raise RouteError(
                f"route.current={self.current} is outside 0..{len(self.steps)} "
                f"for {len(self.steps)} steps"
            )

    @property
    def exhausted(self) -> bool:
        """True once every step has run (``current == len(steps)``)."""
        return self.current >= len(self.steps)

    @property
    def current_step(self) -> str | None:
        """The queue of the step being processed, or ``None`` when the route is exhausted."""
        return None if self.exhausted else self.steps[self.current]

    def advance(self) -> Route:
        """The route after the current step succeeded. Raises if already exhausted."""
        if self.exhausted:
            raise RouteError("cannot advance an exhausted route")
        return Route(steps=self.steps, current=self.current + 1)


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """One message on a queue.

    ``payload`` and the values in ``extra`` (unknown top-level fields) are raw JSON bytes.
    Use :meth:`payload_value` to decode the payload, and :meth:`with_payload` to replace it.
    """

    route: Route
    payload: msgspec.Raw
    id: str | None = None
    headers: Mapping[str, str] = msgspec.field(default_factory=dict)
    parent_id: str | None = None
    extra: Mapping[str, msgspec.Raw] = msgspec.field(default_factory=dict)

    def payload_value(self) -> Any:
        """The payload decoded into Python objects."""
        return msgspec.json.decode(self.payload)

    def with_payload(self, value: Any) -> Envelope:
        """A copy whose payload is ``value`` (encoded to JSON now)."""
        return msgspec.structs.replace(self, payload=msgspec.Raw(_encoder.encode(value)))

    def with_raw_payload(self, raw: bytes | msgspec.Raw) -> Envelope:
        """A copy whose payload is the given JSON bytes, which the caller vouches for."""
        return msgspec.structs.replace(self, payload=msgspec.Raw(raw))

    def with_route(self, route: Route) -> Envelope:
        return msgspec.structs.replace(self, route=route)

    def ensure_id(self) -> Envelope:
        """This envelope if it has an id, else a copy with a new one."""
        return self if self.id else msgspec.structs.replace(self, id=new_id())


_encoder = msgspec.json.Encoder()
_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_route_decoder = msgspec.json.Decoder(Route)
_headers_decoder = msgspec.json.Decoder(dict[str, str] | None)
_optional_str_decoder = msgspec.json.Decoder(str | None)


def decode_envelope(body: bytes | bytearray | memoryview | str) -> Envelope:
    """Parse and validate one envelope. Raises :class:`EnvelopeError` (or ``RouteError``).

    Before anything is decoded, the body must be valid UTF-8 and nest at most
    :data:`~asya_protocol.limits.MAX_ENVELOPE_DEPTH` deep (else ``NestingTooDeepError``, an
    ``EnvelopeError``), so no input can make the decoder recurse too far or pass invalid bytes
    through in a raw field.
    """
    check_json(body, max_depth=MAX_ENVELOPE_DEPTH, what="envelope")
    try:
        fields = _fields_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"not a JSON object: {exc}") from None
    raw_route = fields.pop("route", None)
    if raw_route is None:
        raise EnvelopeError("missing required field 'route'")
    payload = fields.pop("payload", None)
    if payload is None:
        raise EnvelopeError("missing required field 'payload'")
    try:
        route = _route_decoder.decode(raw_route)
    except RouteError:
        raise
    except (msgspec.DecodeError, TypeError, ValueError) as exc:
        raise RouteError(f"invalid route: {_msgspec_reason(exc, 'route')}") from None
    headers = _decode_field(fields.pop("headers", None), _headers_decoder, "headers") or {}
    envelope_id = _decode_field(fields.pop("id", None), _optional_str_decoder, "id")
    parent_id = _decode_field(fields.pop("parent_id", None), _optional_str_decoder, "parent_id")
    return Envelope(
        route=route,
        payload=payload,
        id=envelope_id or None,
        headers=headers,
        parent_id=parent_id,
        extra=fields,
    )


def _decode_field(raw: msgspec.Raw | None, decoder: msgspec.json.Decoder[T], name: str) -> T | None:
    if raw is None:
        return None
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"invalid field '{name}': {_msgspec_reason(exc, name)}") from None


def _msgspec_reason(exc: Exception, prefix: str) -> str:
    text = str(exc)
    return text.replace("`$", f"`{prefix}", 1) if "`$" in text else text


def encode_envelope(envelope: Envelope) -> bytes:
    """Serialise an envelope: known fields first, then unknown fields exactly as received."""
    out: dict[str, Any] = {}
    if envelope.id is not None:
        out["id"] = envelope.id
    out["route"] = envelope.route
    out["payload"] = envelope.payload
    if envelope.headers:
        out["headers"] = envelope.headers
    if envelope.parent_id is not None:
        out["parent_id"] = envelope.parent_id
    for key, value in envelope.extra.items():
        if key not in _KNOWN_FIELDS:
            out[key] = value
    return _encoder.encode(out)
