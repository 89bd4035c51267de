"""Who is asking: the principal a bearer token stands for, and what it may see.

``ASYA_GATEWAY_TOKENS`` lists tokens, each ``name:token`` (a named principal) or a bare
``token`` (its principal is named ``token-`` and the first 12 hex digits of the token's SHA-256,
stable across restarts and replicas, and not the token). Several tokens may name one principal
(rotation). Every job and task belongs to the principal that started it; another principal gets
"not found" for it. Principals named in ``ASYA_GATEWAY_ADMINS`` see and cancel every job. With
authentication disabled (a local run) there is one principal, ``anonymous``, who sees all.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ANONYMOUS",
    "SCOPE_KEY",
    "NoPrincipal",
    "Principal",
    "authenticate",
    "credential",
    "names",
    "principal_of",
    "principals",
]

SCOPE_KEY = "asya.principal"
"""Where :class:`~asya_gateway.middleware.AuthAndLimits` puts the caller's principal in the
ASGI scope."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Principal:
    name: str
    admin: bool = False

    def owns(self, owner: str) -> bool:
        """Whether a job started by ``owner`` is this principal's to see."""
        return self.admin or owner == self.name

    @property
    def scope(self) -> str | None:
        """The owner a listing is limited to; None for an admin (every job)."""
        return None if self.admin else self.name


ANONYMOUS = Principal("anonymous", admin=True)


def credential(raw: str) -> str:
    """One ``ASYA_GATEWAY_TOKENS`` item, checked: ``name:token`` or ``token``."""
    name, sep, token = raw.partition(":")
    if not sep:
        name, token = "", raw
    elif not _NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a principal name (letters, digits, '.', '_', '-'; at most 64); "
            "write name:token, or the token alone"
        )
    if not token or any(c.isspace() for c in token):
        raise ValueError("a token must be non-empty, without spaces")
    return raw


def _split(raw: str) -> tuple[str, str]:
    name, sep, token = raw.partition(":")
    if not sep:
        return "token-" + hashlib.sha256(raw.encode()).hexdigest()[:12], raw
    return name, token


def principals(tokens: Iterable[str], admins: Iterable[str] = ()) -> dict[str, Principal]:
    """Token to principal; ``ValueError`` for a token given to two principals."""
    admin = frozenset(admins)
    found: dict[str, Principal] = {}
    for raw in tokens:
        name, token = _split(raw)
        if token in found and found[token].name != name:
            raise ValueError(f"one token is given to two principals ({found[token].name}, {name})")
        found[token] = Principal(name, admin=name in admin)
    return found


def names(tokens: Iterable[str]) -> frozenset[str]:
    return frozenset(_split(raw)[0] for raw in tokens)


def authenticate(bearer: str, known: Mapping[str, Principal]) -> Principal | None:
    """The principal of a bearer token, compared in constant time with every known token."""
    match = None
    for token, principal in known.items():
        if hmac.compare_digest(bearer.encode(), token.encode()):
            match = principal
    return match


class NoPrincipal(RuntimeError):
    """A request that did not pass :class:`~asya_gateway.middleware.AuthAndLimits` (a bug)."""


def principal_of(scope: Mapping[str, Any] | None) -> Principal:
    """The principal the middleware found for this request (``anonymous`` without auth);
    :class:`NoPrincipal` if it found none: access is refused, never assumed."""
    found = scope.get(SCOPE_KEY) if scope is not None else None
    if not isinstance(found, Principal):
        raise NoPrincipal("the request carries no principal")
    return found
