"""Envelope decode + advance + encode per second: asya-protocol against plain ``json``.

Run: ``hatch run bench:protocol`` (optionally ``--seconds 3``). Both sides do the same work on the
same bodies in the same run: parse the envelope, validate the route, advance ``current``, replace
the payload with a result and serialise. The ratio asya/json is the figure to quote.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable

from asya_protocol import advance, decode_envelope, encode_envelope

_STEP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


def _body(payload_bytes: int) -> bytes:
    text = "x" * payload_bytes
    return json.dumps(
        {
            "id": "7f0c9a52-6f5e-4b8e-9d0a-2b1c3d4e5f60",
            "route": {"steps": ["preprocess", "inference", "postprocess"], "current": 0},
            "payload": {"text": text, "meta": {"lang": "en", "n": [1, 2, 3]}},
            "headers": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
            "x-extra": {"k": "v"},
        }
    ).encode()


RESULT = b'{"tokens":[1,2,3]}'


def asya_hop(body: bytes) -> bytes:
    return encode_envelope(advance(decode_envelope(body), RESULT))


def json_hop(body: bytes) -> bytes:
    doc = json.loads(body)
    route = doc["route"]
    steps, current = route["steps"], route.get("current", 0)
    if not steps or not all(isinstance(s, str) and _STEP.fullmatch(s) for s in steps):
        raise ValueError("bad steps")
    if not isinstance(current, int) or not 0 <= current < len(steps):
        raise ValueError("bad current")
    headers = doc.get("headers") or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ValueError("bad headers")
    doc["route"] = {"steps": steps, "current": current + 1}
    doc["payload"] = json.loads(RESULT)
    return json.dumps(doc, separators=(",", ":")).encode()


def measure(fn: Callable[[bytes], bytes], body: bytes, seconds: float) -> float:
    n = 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while True:
        for _ in range(500):
            fn(body)
        n += 500
        if time.perf_counter() >= deadline:
            break
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    args = parser.parse_args()
    assert json.loads(asya_hop(_body(10))) == json.loads(json_hop(_body(10)))
    print(f"{'payload':>10} {'asya/s':>12} {'json/s':>12} {'ratio':>7}")
    for size in (100, 10_000, 1_000_000):
        body = _body(size)
        seconds = args.seconds if size < 1_000_000 else args.seconds / 2
        asya = measure(asya_hop, body, seconds)
        plain = measure(json_hop, body, seconds)
        print(f"{size:>10} {asya:>12,.0f} {plain:>12,.0f} {asya / plain:>6.1f}x", flush=True)


if __name__ == "__main__":
    main()
