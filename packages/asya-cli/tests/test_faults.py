"""Nothing wedged, nothing lost: a runtime that cannot start leaves no other running, the
pipeline's own modules are imported, an answer that is not JSON is an error, Ctrl-C on
``asya call`` names the job and ``asya cancel`` stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from asya_testing.processes import free_port, wait_until

Run = Callable[..., subprocess.CompletedProcess[str]]  # the asya fixture (conftest.py)
DevRunning = Callable[..., AbstractContextManager[str]]  # the dev_running fixture
ASYA = [sys.executable, "-m", "asya_cli"]


def write_pipeline(folder: Path, actors: dict[str, str], modules: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    steps = ", ".join(actors)
    lines = [f"  {actor}: {handler}" for actor, handler in actors.items()]
    (folder / "pipeline.yaml").write_text(
        "actors:\n" + "\n".join(lines) + f"\ntools:\n  - name: t\n    steps: [{steps}]\n"
    )
    return folder / "pipeline.yaml"


def runtime_alive(pid: int) -> bool:
    """True while ``pid`` is a live asya_runtime process (a zombie or another program: False)."""
    try:
        return b"asya_runtime" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_a_runtime_that_cannot_start_leaves_none_running(tmp_path: Path, asya: Run) -> None:
    pids = tmp_path / "p" / "pids"
    pipeline = write_pipeline(
        tmp_path / "p",
        {"first": "good:run", "second": "late:missing"},
        {
            "good": """
                import os, pathlib
                here = pathlib.Path(__file__)
                here.with_name("pids.new").write_text(f"{os.getpid()}\\n")
                here.with_name("pids.new").rename(here.with_name("pids"))
                def run(payload):
                    return payload
            """,
            # Fails (no 'missing') only once the first runtime has imported its module.
            "late": """
                import pathlib, time
                deadline = time.monotonic() + 30
                while not pathlib.Path(__file__).with_name("pids").exists():
                    assert time.monotonic() < deadline, "the first runtime never started"
                    time.sleep(0.02)
            """,
        },
    )
    started: list[int] = []
    try:
        proc = asya("dev", str(pipeline), "--port", str(free_port()))
        started = [int(line) for line in pids.read_text().split()]
        assert proc.returncode == 1, proc.stderr
        assert "the runtime of 'second' stopped" in proc.stderr
        assert "module 'late' has no attribute 'missing'" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(started) == 1
        assert [pid for pid in started if runtime_alive(pid)] == []
    finally:
        for pid in started:  # the runtimes this test caused, if the CLI left any
            if runtime_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_pipelines_modules_come_first(
    tmp_path: Path, asya: Run, dev_running: DevRunning
) -> None:
    pipeline = write_pipeline(
        tmp_path / "p",
        {"which": "handlers:which"},
        {"handlers": "def which(payload):\n    return {'from': 'the pipeline'}\n"},
    )
    here = tmp_path / "cwd"
    here.mkdir()
    (here / "handlers.py").write_text("def which(payload):\n    return {'from': 'cwd'}\n")
    with dev_running(Path("..") / "p" / pipeline.name, cwd=here) as url:
        called = asya("call", "t", "{}", "--url", url)
    assert called.returncode == 0, called.stderr
    assert '"from": "the pipeline"' in called.stdout


class NotTheGateway(BaseHTTPRequestHandler):
    status = 502
    kind = "text/html"
    body = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(self.status)
        self.send_header("content-type", self.kind)
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class PlainText(NotTheGateway):
    status = 200
    kind = "text/plain; charset=utf-8"
    body = b"hello from something else"


@pytest.fixture(params=[NotTheGateway, PlainText], ids=["html-502", "text-200"])
def not_gateway(request: pytest.FixtureRequest) -> Iterator[tuple[str, type[NotTheGateway]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), request.param)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", request.param
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize(
    "command", [["call", "t", "{}"], ["jobs"], ["cancel", "j1"]], ids=lambda c: c[0]
)
def test_an_answer_that_is_not_json(
    asya: Run, not_gateway: tuple[str, type[NotTheGateway]], command: list[str]
) -> None:
    url, answer = not_gateway
    proc = asya(*command, "--url", url)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"answered {answer.status} ({answer.kind}), not JSON" in proc.stderr
    assert answer.body.decode()[:30] in proc.stderr
    assert "hint:" in proc.stderr


SLOW = """
    import pathlib, time

    def wait(payload):
        if payload.get("fast"):
            return {"done": "fast"}
        flag = pathlib.Path(payload["flag"])
        deadline = time.monotonic() + 60
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.02)  # the slow handler: it ends when the test lets it
        return {"done": "slow"}
"""


def job_id_from(output: Path) -> str | None:
    for line in output.read_text().splitlines():
        if line.startswith("job "):
            return line.split()[1]
    return None


def test_ctrl_c_names_the_job_and_cancel_stops_it(
    tmp_path: Path, asya: Run, dev_running: DevRunning
) -> None:
    pipeline = write_pipeline(tmp_path / "slow", {"wait": "slow:wait"}, {"slow": SLOW})
    flag = tmp_path / "let-it-end"
    out, err = tmp_path / "call.out", tmp_path / "call.err"
    try:
        with dev_running(pipeline) as url, open(out, "w") as o, open(err, "w") as e:
            call = subprocess.Popen(
                [*ASYA, "call", "t", json.dumps({"flag": str(flag)}), "--url", url],
                stdout=o,
                stderr=e,
            )
            try:
                wait_until(lambda: job_id_from(out) is not None, timeout=30, what="job id")
                job_id = job_id_from(out)
                assert job_id is not None
                wait_until(
                    lambda: httpx.get(f"{url}/jobs/{job_id}").json()["status"] == "running",
                    timeout=30,
                    what="the job running",
                )
                call.send_signal(signal.SIGINT)
                assert call.wait(timeout=30) == 130, err.read_text()
            finally:
                if call.poll() is None:
                    call.kill()
                    call.wait(timeout=10)
            said = err.read_text()
            assert "Traceback" not in said
            assert f"job {job_id} goes on running" in said
            assert f"asya cancel {job_id} --url {url}" in said
            assert httpx.get(f"{url}/jobs/{job_id}").json()["status"] == "running"

            cancelled = asya("cancel", job_id, "--url", url)
            assert cancelled.returncode == 0, cancelled.stderr
            assert f"job {job_id} cancelled" in cancelled.stdout
            assert httpx.get(f"{url}/jobs/{job_id}").json()["status"] == "cancelled"

            again = asya("cancel", job_id, "--url", url)
            assert again.returncode == 1
            assert "already finished (cancelled)" in again.stderr
            fast = asya("call", "t", '{"fast": true}', "--url", url)
            assert fast.returncode == 0, fast.stderr
            done = job_id_from_text(fast.stdout)
            finished = asya("cancel", done, "--url", url)
            assert finished.returncode == 1
            assert "already finished (succeeded): nothing to cancel" in finished.stderr
            unknown = asya("cancel", "no-such-job", "--url", url)
            assert unknown.returncode == 1
            assert "no job 'no-such-job'" in unknown.stderr
            assert "asya jobs" in unknown.stderr
            flag.touch()  # the handler ends, so asya dev stops promptly
    finally:
        flag.touch()


def job_id_from_text(text: str) -> str:
    [line] = [line for line in text.splitlines() if line.startswith("job ")]
    return line.split()[1]


class Silent(BaseHTTPRequestHandler):
    """Takes the request and does not answer until ``release`` (bounded)."""

    asked = threading.Event()
    release = threading.Event()

    def do_POST(self) -> None:
        Silent.asked.set()
        Silent.release.wait(timeout=30)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_ctrl_c_before_the_gateway_answers(tmp_path: Path) -> None:
    """A gateway that never answers POST /jobs: Ctrl-C says no job was created, exit 130."""
    with ThreadingHTTPServer(("127.0.0.1", 0), Silent) as server:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}"
            call = subprocess.Popen(
                [*ASYA, "call", "t", "{}", "--url", url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                assert Silent.asked.wait(timeout=30)  # the client is inside call_tool
                call.send_signal(signal.SIGINT)
                _, said = call.communicate(timeout=30)
            finally:
                if call.poll() is None:
                    call.kill()
                    call.wait(timeout=10)
            assert call.returncode == 130, said
            assert "interrupted before the gateway created a job" in said
            assert "Traceback" not in said
        finally:
            Silent.release.set()
            server.shutdown()
            thread.join(timeout=10)
