"""asya-runtime round trips against a minimal raw echo server on a Unix socket, same run.

Run: ``hatch run bench:runtime`` (``--requests N``, ``--connections C``).

Both servers are separate processes answering the same frames; the client is the same code.
The raw server does the least a runtime can: read a frame, wrap the bytes in an ok reply, write
it back (no JSON decoding, no handler, no thread pool). Measured: requests per second with C
connections in parallel, and p50/p99 round-trip latency on one connection. The ratios
(asya/raw) are the figures to quote.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager

from asya_protocol import encode_frame, read_frame

RAW_SERVER = textwrap.dedent(
    """
    import asyncio, struct, sys
    HEADER = struct.Struct(">I")
    async def serve(reader, writer):
        try:
            while True:
                n = HEADER.unpack(await reader.readexactly(4))[0]
                body = await reader.readexactly(n)
                out = b'{"status":"ok","result":' + body + b"}"
                writer.write(HEADER.pack(len(out)) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
    async def main():
        server = await asyncio.start_unix_server(serve, sys.argv[1])
        async with server:
            await server.serve_forever()
    asyncio.run(main())
    """
)

HANDLER = textwrap.dedent(
    """
    def echo(payload):
        return payload
    async def async_echo(payload):
        return payload
    """
)

PAYLOAD = b'{"text": "Hello world", "n": [1, 2, 3]}'


def _wait_for_socket(path: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server on {path} did not start")
        time.sleep(0.02)


@contextmanager
def server(kind: str, workdir: str) -> Iterator[str]:
    path = os.path.join(workdir, f"{kind}.sock")
    env = dict(os.environ)
    if kind == "raw":
        argv = [sys.executable, "-c", RAW_SERVER, path]
    else:
        handler = "bench_handlers:echo" if kind == "asya-def" else "bench_handlers:async_echo"
        env |= {"ASYA_HANDLER": handler, "ASYA_SOCKET_PATH": path, "PYTHONPATH": workdir}
        env |= {"ASYA_LOG_LEVEL": "WARNING"}
        argv = [sys.executable, "-m", "asya_runtime"]
    proc = subprocess.Popen(argv, env=env)
    try:
        _wait_for_socket(path, proc)
        yield path
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _one_connection(path: str, n: int, latencies: list[float] | None) -> None:
    reader, writer = await asyncio.open_unix_connection(path)
    frame = encode_frame(PAYLOAD)
    try:
        for _ in range(n):
            started = time.perf_counter()
            writer.write(frame)
            await writer.drain()
            reply = await read_frame(reader)
            if reply is None or not reply.startswith(b'{"status":"ok"'):
                raise RuntimeError(f"unexpected reply {reply!r}")
            if latencies is not None:
                latencies.append(time.perf_counter() - started)
    finally:
        writer.close()
        await writer.wait_closed()


async def throughput(path: str, requests: int, connections: int) -> float:
    per = requests // connections
    started = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(connections):
            tg.create_task(_one_connection(path, per, None))
    return per * connections / (time.perf_counter() - started)


async def latency(path: str, requests: int) -> tuple[float, float]:
    samples: list[float] = []
    await _one_connection(path, requests, samples)
    q = statistics.quantiles(samples, n=100)
    return q[49] * 1e6, q[98] * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    results: dict[str, tuple[float, float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="asya-bench-") as workdir:
        with open(os.path.join(workdir, "bench_handlers.py"), "w") as f:
            f.write(HANDLER)
        for kind in ("raw", "asya-def", "asya-async"):
            with server(kind, workdir) as path:
                asyncio.run(_one_connection(path, 500, None))  # warm up
                rps = asyncio.run(throughput(path, args.requests, args.connections))
                p50, p99 = asyncio.run(latency(path, args.requests // 4))
                results[kind] = (rps, p50, p99)
                print(f"{kind:>11}: {rps:>9,.0f} req/s  p50 {p50:7.1f} us  p99 {p99:7.1f} us")
    raw = results["raw"]
    for kind in ("asya-def", "asya-async"):
        rps, p50, p99 = results[kind]
        print(
            f"{kind} / raw: throughput {rps / raw[0]:.2f}x, "
            f"p50 latency {p50 / raw[1]:.2f}x, p99 latency {p99 / raw[2]:.2f}x"
        )


if __name__ == "__main__":
    main()
