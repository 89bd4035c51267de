"""The runtimes of ``asya dev``: one ``python -m asya_runtime`` child process per actor.

Started together, waited for together, and stopped together: if one of them cannot start, every
one already started is stopped (by its own pid, waiting for it to exit) before the error is
reported, so nothing is left running.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from asya_protocol import BlockingRuntimeClient, ControlRequest, encode_control

from .errors import DevError
from .pipeline import Pipeline

__all__ = ["Runtime", "runtime_env", "spawn_runtimes", "stop_runtimes", "wait_ready"]

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
TAIL_LINES = 5


@dataclass(frozen=True)
class Runtime:
    actor: str
    handler: str
    process: subprocess.Popen[bytes]
    socket_path: str
    log_path: Path

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines the runtime wrote (stdout and stderr), or 'no output'."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            text = ""
        kept = [line for line in text.splitlines() if line.strip()][-lines:]
        return "\n".join(kept) if kept else "no output"


def runtime_env(folder: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """A runtime's environment: ours (PATH, a virtualenv), with the pipeline's folder first on
    ``PYTHONPATH`` so its modules win over any of the same name elsewhere."""
    env = dict(environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), environ.get("PYTHONPATH")]))
    return env


def _spawn(actor: str, handler: str, env: Mapping[str, str], workdir: Path) -> Runtime:
    socket_path = str(workdir / f"{actor}.sock")
    log_path = workdir / f"{actor}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            # -P: the current directory is not put first on sys.path (``-m`` would), so a
            # same-named module there cannot shadow the pipeline's.
            [sys.executable, "-P", "-m", "asya_runtime"],
            env={
                **env,
                "ASYA_HANDLER": handler,
                "ASYA_SOCKET_PATH": socket_path,
                "ASYA_LOG_LEVEL": "WARNING",
            },
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Runtime(actor, handler, process, socket_path, log_path)


def spawn_runtimes(pipeline: Pipeline, workdir: Path) -> list[Runtime]:
    """Start every actor's runtime; if one cannot be started, stop the others first."""
    # The one read of the environment: each runtime inherits ours plus its own ASYA_* settings.
    env = runtime_env(pipeline.folder, os.environ)
    runtimes: list[Runtime] = []
    try:
        for actor, handler in pipeline.actors.items():
            runtimes.append(_spawn(actor, handler, env, workdir))
    except BaseException:
        stop_runtimes(runtimes)
        raise
    return runtimes


def stop_runtimes(runtimes: list[Runtime], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM each (by its pid), wait up to ``timeout`` for all, SIGKILL the rest and reap."""
    for runtime in runtimes:
        if runtime.process.poll() is None:
            runtime.process.terminate()
    deadline = time.monotonic() + timeout
    for runtime in runtimes:
        try:
            runtime.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            runtime.process.kill()
            runtime.process.wait(timeout=timeout)


def _ping(path: str) -> bool:
    try:
        with BlockingRuntimeClient(path, timeout=2) as client:
            client.send(encode_control(ControlRequest(op="ping")))
            client.reply()
    except OSError:
        return False
    return True


def _failed(runtime: Runtime, folder: Path) -> DevError:
    return DevError(
        f"the runtime of {runtime.actor!r} stopped (exit status {runtime.process.returncode}; "
        f"handler {runtime.handler}):\n  " + runtime.tail().replace("\n", "\n  "),
        f"check {runtime.handler!r}: the module must be importable from {folder} and the "
        "function must exist",
    )


async def wait_ready(
    runtimes: list[Runtime], folder: Path, stop: asyncio.Event, timeout: float = START_TIMEOUT
) -> bool:
    """Wait until every runtime answers a ping: True; False if ``stop`` is set first.

    :class:`DevError` names the first runtime that exited (with the tail of its output) or did
    not answer within ``timeout``; the caller stops them all.
    """
    deadline = time.monotonic() + timeout
    waiting = list(runtimes)
    while waiting:
        for runtime in list(waiting):
            if runtime.process.poll() is not None:
                raise _failed(runtime, folder)
            if await asyncio.to_thread(_ping, runtime.socket_path):
                waiting.remove(runtime)
        if not waiting or stop.is_set():
            break
        if time.monotonic() > deadline:
            raise DevError(
                f"the runtime of {waiting[0].actor!r} did not start in {timeout:.0f}s",
                f"see its output in {waiting[0].log_path}",
            )
        await asyncio.sleep(0.05)
    return not waiting
