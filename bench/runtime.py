"""asya-runtime round trips against a minimal raw echo server on a Unix socket, same run.

Run: ``hatch run bench:runtime`` (``--requests N``, ``--connections C``).

Every server is a process of its own answering the same frames; the client is the same code.
The raw server does the least a runtime can: read a frame, wrap the bytes in an ok reply, write
it back (no JSON decoding, no handler), on one asyncio loop. The raw-threads server does the same
with a thread per connection and blocking calls, as the runtime serves a ``def`` handler: the
floor for one (each blocking call hands the GIL over). Measured: requests per second with C
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

RAW_THREADS = textwrap.dedent(
    """
    import os, socket, struct, sys, threading
    HEADER = struct.Struct(">I")
    def serve(sock):
        stream = sock.makefile("rb", buffering=65536)
        try:
            while len(header := stream.read(4)) == 4:
                body = stream.read(HEADER.unpack(header)[0])
                out = b'{"status":"ok","result":' + body + b"}"
                sock.sendall(HEADER.pack(len(out)) + out)
        finally:
            sock.close()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(sys.argv[1] + ".new")
    listener.listen(64)
    os.rename(sys.argv[1] + ".new", sys.argv[1])
    while True:
        threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()
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
    elif kind == "raw-threads":
        argv = [sys.executable, "-c", RAW_THREADS, path]
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
        for kind in ("raw", "raw-threads", "asya-def", "asya-async"):
            with server(kind, workdir) as path:
                asyncio.run(_one_connection(path, 500, None))  # warm up
                rps = asyncio.run(throughput(path, args.requests, args.connections))
                p50, p99 = asyncio.run(latency(path, args.requests // 4))
                results[kind] = (rps, p50, p99)
                print(f"{kind:>11}: {rps:>9,.0f} req/s  p50 {p50:7.1f} us  p99 {p99:7.1f} us")
    for kind, base in (("raw-threads", "raw"), ("asya-def", "raw"), ("asya-async", "raw")):
        rps, p50, p99 = results[kind]
        ref = results[base]
        print(
            f"{kind} / {base}: throughput {rps / ref[0]:.2f}x, "
            f"p50 latency {p50 / ref[1]:.2f}x, p99 latency {p99 / ref[2]:.2f}x"
        )
    rps, p50, _ = results["asya-def"]
    ref = results["raw-threads"]
    print(
        f"asya-def / raw-threads: throughput {rps / ref[0]:.2f}x, p50 latency {p50 / ref[1]:.2f}x"
    )


if __name__ == "__main__":
    main()
