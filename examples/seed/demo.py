"""Run the seed's pipeline on one machine: three real asya-runtime processes, three sidecars on
the in-process transport, the message {"text": "Hello world"} in, the result out.

    hatch run demo:seed            (or: python examples/seed/demo.py "Some other text")
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from asya_protocol import EventScope, decode_event
from asya_sidecar import MemoryBroker, SidecarSettings, memory_sidecar

HERE = Path(__file__).resolve().parent
STEPS = ("preprocess", "inference", "postprocess")


def start_runtime(step: str, socket_path: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        ASYA_HANDLER=f"handlers:{step}",
        ASYA_SOCKET_PATH=socket_path,
        ASYA_LOG_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    )
    return subprocess.Popen([sys.executable, "-m", "asya_runtime"], env=env)


async def run(text: str) -> dict[str, object]:
    broker = MemoryBroker()
    started = time.monotonic()

    def show(routing_key: str, body: bytes) -> None:
        event = decode_event(body)
        what = event.type.value
        if event.progress is not None:
            what += f" {event.progress:.0%} {event.message or ''}".rstrip()
        elif event.destination:
            what += f" -> {event.destination}"
        print(f"[{time.monotonic() - started:6.2f}s] {event.actor:<12} {what}", flush=True)

    broker.event_listeners.append(show)
    workdir = tempfile.mkdtemp(prefix="asya-demo-")
    runtimes = {s: start_runtime(s, os.path.join(workdir, f"{s}.sock")) for s in STEPS}
    sidecars = [
        memory_sidecar(
            broker,
            SidecarSettings(
                actor=step,
                socket_path=os.path.join(workdir, f"{step}.sock"),
                http_port=None,
                runtime_wait=30,
                # The demo prints every step event itself, for a message of no gateway job,
                # each as it happens (none held back for ASYA_PROGRESS_INTERVAL).
                step_events=EventScope.ALL,
                progress_interval=0.0,
            ),
        )
        for step in STEPS
    ]
    stop = asyncio.Event()
    result: dict[str, object] = {}
    try:
        async with asyncio.TaskGroup() as tg:
            for sidecar in sidecars:
                tg.create_task(sidecar.run(stop))
            try:
                async with asyncio.timeout(60):
                    for sidecar in sidecars:
                        await sidecar.consuming.wait()
                message = {"route": {"steps": list(STEPS), "current": 0}, "payload": {"text": text}}
                print(f"in:  {json.dumps(message)}", flush=True)
                await broker.publish(STEPS[0], json.dumps(message).encode())
                done = asyncio.ensure_future(broker.get("happy-end", timeout=60))
                failed = asyncio.ensure_future(broker.get("error-end", timeout=60))
                finished, pending = await asyncio.wait(
                    {done, failed}, return_when=asyncio.FIRST_COMPLETED
                )
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                result = json.loads(finished.pop().result())
            finally:
                stop.set()
    finally:
        broker.close()
        for proc in runtimes.values():
            proc.terminate()
        for proc in runtimes.values():
            proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("text", nargs="?", default="Hello world")
    args = parser.parse_args()
    envelope = asyncio.run(run(args.text))
    print(f"out: {json.dumps(envelope)}")
    payload = envelope.get("payload")
    if isinstance(payload, dict) and "result" in payload:
        print(payload["result"])
        return 0
    print(f"the pipeline failed: {payload}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
