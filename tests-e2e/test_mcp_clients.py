"""The gateway driven by third-party MCP clients, as a user's would: the official MCP Inspector
CLI and a small client on the official TypeScript SDK (tests-e2e/mcp_clients, versions pinned by
its package-lock.json), against a real gateway process with real runtimes and sidecars on
RabbitMQ and PostgreSQL. A plain MCP client gets a tool's result; the SDK's own schemas accept
every answer, the 2025-11-25 task answers included; a call the client aborts cancels its job."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from asya_testing import AmqpNames, fresh_database
from asya_testing.pipeline import AUTH, TOKEN, ProcessPipeline, process_pipeline

OTHER_TOKEN = "e2e-other-token"  # noqa: S105 - a test credential
"""A second principal's token, named ``other`` in the gateway's ASYA_GATEWAY_TOKENS."""
OTHER_AUTH = {"Authorization": f"Bearer {OTHER_TOKEN}"}

HERE = Path(__file__).resolve().parent
SEED = str(HERE.parent / "examples/seed")
SLOW_ACTORS = str(HERE / "mcp_actors")
CLIENTS = HERE / "mcp_clients"
STAMP = CLIENTS / "node_modules" / ".asya-package-lock.sha256"
NPM_TIMEOUT = 240.0
CLIENT_TIMEOUT = 90.0
STEPS = ("preprocess", "inference", "postprocess")
SLOW_STEPS = ("first", "second")
SLOW_INPUT = {"type": "object", "properties": {"seconds": {"type": "number"}}}
TOOLS = [
    {
        "name": "classify_text",
        "title": "Classify text",
        "description": "Classify a text",
        "steps": list(STEPS),
        "timeout": 60,
        "input_schema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
        "output_schema": {
            "type": "object",
            "properties": {"result": {"type": "string"}},
            "required": ["result"],
        },
    },
    {
        "name": "slow",
        "description": "Two slow steps, reporting progress (the default wait)",
        "steps": list(SLOW_STEPS),
        "timeout": 120,
        "input_schema": SLOW_INPUT,
    },
    {
        "name": "slow_brief",
        "description": "The same two slow steps; a call waits half a second for them",
        "steps": list(SLOW_STEPS),
        "timeout": 120,
        "wait": 0.5,
        "input_schema": SLOW_INPUT,
    },
]
GREETING = {"result": "Classified as greeting"}
HELLO = {"text": "Hello world"}

pytestmark = pytest.mark.timeout(NPM_TIMEOUT + 120)


@pytest.fixture(scope="session")
def mcp_clients() -> Path:
    """tests-e2e/mcp_clients with its node_modules installed by ``npm ci`` from the committed
    lock; not again while the lock's hash is the one the last install recorded. Without node
    and npm the tests skip locally and fail in CI; a failing install always fails them."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        message = "node and npm are needed to run the third-party MCP clients"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    digest = hashlib.sha256((CLIENTS / "package-lock.json").read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text().strip() == digest:
        return CLIENTS
    try:
        done = subprocess.run(
            # --ignore-scripts: the one install script in the lock, the Inspector's postinstall,
            # only installs its own clients' dependencies in a source checkout (a no-op here).
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=CLIENTS,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"npm ci did not finish within {NPM_TIMEOUT:g} s:\n{exc.stderr}")
    if done.returncode != 0:
        pytest.fail(f"npm ci failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    STAMP.write_text(digest)
    return CLIENTS


@pytest.fixture
async def system(
    amqp_url: str, amqp_names: AmqpNames, database_url: str, tmp_path: Path
) -> AsyncIterator[ProcessPipeline]:
    """The seed pipeline (examples/seed's handlers) and the slow two-step tool, each step a
    runtime and a sidecar process, and a gateway process that knows two tokens (principals)."""
    async with (
        fresh_database(database_url) as database,
        process_pipeline(
            amqp_url,
            amqp_names,
            database,
            tmp_path,
            handlers=SEED,
            steps=STEPS,
            tools=TOOLS,
            gateway_env={"ASYA_GATEWAY_TOKENS": f"{TOKEN},other:{OTHER_TOKEN}"},
        ) as pipeline,
    ):
        pipeline.handlers = SLOW_ACTORS
        for step in SLOW_STEPS:
            pipeline.start_runtime(step)
            pipeline.start_sidecar(step)
        yield pipeline


def node_env(home: Path, **extra: str) -> dict[str, str]:
    """A Node client's environment: a home of the test's own (the Inspector keeps its catalog
    and secrets under ~/.mcp-inspector), no colours."""
    home.mkdir(exist_ok=True)
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TMPDIR", "CI")}
    return {
        **keep,
        "HOME": str(home),
        "NO_COLOR": "1",
        "npm_config_update_notifier": "false",
        **extra,
    }


class Node:
    """A Node client process whose stdout and stderr the test reads; killed if left running."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, argv: list[str], cwd: Path, env: Mapping[str, str]) -> Node:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def first_line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        async with asyncio.timeout(CLIENT_TIMEOUT):
            line = await self.process.stdout.readline()
        if not line:
            rc, out, err = await self.finish()
            raise AssertionError(f"the client printed nothing (exit {rc}):\n{out}\n{err}")
        return dict(json.loads(line))

    async def finish(self) -> tuple[int, str, str]:
        """Close stdin and wait for the exit; the exit code, the rest of stdout, stderr."""
        assert self.process.stdin is not None
        self.process.stdin.close()  # communicate() without input leaves it open on 3.11
        try:
            async with asyncio.timeout(CLIENT_TIMEOUT):
                out, err = await self.process.communicate()
        except TimeoutError:
            self.process.kill()
            out, err = await self.process.communicate()
            raise AssertionError(
                f"the client did not exit within {CLIENT_TIMEOUT:g} s (killed):\n"
                f"stdout:\n{out.decode()}\nstderr:\n{err.decode()}"
            ) from None
        assert self.process.returncode is not None
        return self.process.returncode, out.decode(), err.decode()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def run_node(argv: list[str], cwd: Path, env: Mapping[str, str]) -> str:
    """Run a Node client to its end (bounded); its stdout, or a failure showing its stderr."""
    node = await Node.start(argv, cwd, env)
    try:
        rc, out, err = await node.finish()
    finally:
        await node.kill()
    assert rc == 0, f"{argv[:6]} exited {rc}:\nstdout:\n{out}\nstderr:\n{err}"
    return out


async def inspector(
    clients: Path, home: Path, url: str, era: str, method: str, *args: str
) -> dict[str, Any]:
    """``npx @modelcontextprotocol/inspector --cli``: one method, its JSON result (the CLI's
    ``--format json`` prints ``{"result": ...}``)."""
    argv = [
        "npx",
        "--no-install",
        "@modelcontextprotocol/inspector",
        "--cli",
        f"{url}/mcp",
        "--transport",
        "http",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--protocol-era",
        era,
        "--method",
        method,
        *args,
        "--format",
        "json",
    ]
    printed = json.loads(await run_node(argv, clients, node_env(home)))
    return dict(printed["result"])


async def ts_client(
    clients: Path, home: Path, scenario: str, url: str, arguments: Any, token: str = TOKEN
) -> Node:
    return await Node.start(
        ["node", "client.mjs", scenario, f"{url}/mcp", json.dumps(arguments)],
        clients,
        node_env(home, ASYA_MCP_TOKEN=token),
    )


async def ts_scenario(
    clients: Path, home: Path, scenario: str, url: str, arguments: Any, token: str = TOKEN
) -> dict[str, Any]:
    node = await ts_client(clients, home, scenario, url, arguments, token)
    try:
        rc, out, err = await node.finish()
    finally:
        await node.kill()
    assert rc == 0, f"client.mjs {scenario} exited {rc}:\nstdout:\n{out}\nstderr:\n{err}"
    return dict(json.loads(out))


def body(result: Mapping[str, Any]) -> dict[str, Any]:
    """The job summary a tool result carries as text."""
    return dict(json.loads(result["content"][0]["text"]))


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_inspector_cli_lists_tools_and_gets_the_result(
    system: ProcessPipeline, mcp_clients: Path, tmp_path: Path, era: str
) -> None:
    """The point of the issue: a plain MCP client calls a tool and gets its result."""
    home = tmp_path / "home"
    # --strict: the CLI exits 6 if a tool's schema has an error-severity portability problem.
    listed = await inspector(mcp_clients, home, system.url, era, "tools/list", "--strict")
    names = [t["name"] for t in listed["tools"]]
    assert "classify_text" in names, listed
    assert "asya_job_result" in names
    called = await inspector(
        mcp_clients,
        home,
        system.url,
        era,
        "tools/call",
        "--tool-name",
        "classify_text",
        "--tool-args-json",
        json.dumps(HELLO),
    )
    assert not called.get("isError"), called
    assert called["structuredContent"]["status"] == "succeeded", called
    assert called["structuredContent"]["result"] == GREETING
    assert body(called)["result"] == GREETING


async def inspector_call(
    clients: Path, home: Path, url: str, era: str, tool: str, arguments: Any
) -> dict[str, Any]:
    """``--method tools/call``: the tool result's ``structuredContent`` (the job summary)."""
    args = ["--tool-name", tool, "--tool-args-json", json.dumps(arguments)]
    called = await inspector(clients, home, url, era, "tools/call", *args)
    assert not called.get("isError"), called
    return dict(called["structuredContent"])


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_inspector_cli_gets_a_long_jobs_result_with_asya_job_result(
    system: ProcessPipeline, mcp_clients: Path, tmp_path: Path, era: str
) -> None:
    """A job outlasting the tool's wait: the call answers its id, the built-in tool the result."""
    home = tmp_path / "home"
    running = await inspector_call(mcp_clients, home, system.url, era, "slow_brief", {"seconds": 1})
    expected = {"seconds": 1, "steps": ["first", "second"]}
    if era == "modern" and running["status"] == "succeeded":
        # The Inspector declares the 2026-07-28 tasks extension: it got a task and followed it.
        assert running["result"] == expected, running
        return
    assert running["status"] in ("pending", "running"), running
    done = await inspector_call(
        mcp_clients,
        home,
        system.url,
        era,
        "asya_job_result",
        {"job_id": running["job_id"], "wait": 60},
    )
    assert done == {
        "job_id": running["job_id"],
        "status": "succeeded",
        "result": {"seconds": 1, "steps": ["first", "second"]},
    }


async def test_ts_sdk_client_lists_and_calls_with_and_without_a_progress_token(
    system: ProcessPipeline, mcp_clients: Path, tmp_path: Path
) -> None:
    out = await ts_scenario(mcp_clients, tmp_path / "home", "basics", system.url, HELLO)
    assert out["protocolVersion"] == "2025-11-25"
    assert out["capabilities"]["tasks"] == {"list": {}, "cancel": {}}
    tools = {t["name"]: t for t in out["tools"]}
    assert tools["classify_text"] == {
        "name": "classify_text",
        "title": "Classify text",
        "hasOutputSchema": True,
    }
    assert {"slow", "slow_brief", "asya_job_result"} <= set(tools)
    for result in (out["plain"], out["tracked"]):
        assert not result.get("isError"), result
        assert result["structuredContent"]["result"] == GREETING
        assert body(result)["status"] == "succeeded"
    values = [p["progress"] for p in out["progress"]]
    assert values, out
    assert values == sorted(set(values)), values
    assert values[-1] == 1.0
    assert all(p["total"] == 1.0 for p in out["progress"])


async def test_ts_sdk_client_follows_a_running_job_with_the_task_methods(
    system: ProcessPipeline, mcp_clients: Path, tmp_path: Path
) -> None:
    out = await ts_scenario(mcp_clients, tmp_path / "home", "tasks", system.url, {"seconds": 3})
    first = out["first"]
    assert first["status"] in ("pending", "running"), first
    assert "asya_job_result" in first["message"]
    job_id = first["job_id"]
    assert out["working"]["taskId"] == job_id
    assert out["working"]["status"] == "working"
    assert out["working"]["ttl"] > 0
    for task in (out["working"], out["completed"], out["cancelled"], out["afterCancel"]):
        for field in ("createdAt", "lastUpdatedAt"):
            stamp = datetime.fromisoformat(task[field])
            assert stamp.utcoffset() is not None, f"{field} has no UTC offset: {task}"
    assert job_id in [t["taskId"] for t in out["listed"]["tasks"]]
    expected = {"seconds": 3, "steps": ["first", "second"]}
    payload = out["payload"]
    assert not payload.get("isError"), payload
    assert payload["structuredContent"]["result"] == expected
    assert payload["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": job_id}
    assert out["again"]["structuredContent"] == {
        "job_id": job_id,
        "status": "succeeded",
        "result": expected,
    }
    assert out["completed"]["status"] == "completed"
    assert out["cancelFinished"]["code"] == -32602, out["cancelFinished"]
    assert "cannot cancel a task that is succeeded" in out["cancelFinished"]["message"]
    assert out["unknown"]["code"] == -32602, out["unknown"]
    second = out["second"]
    assert out["cancelled"]["taskId"] == second["job_id"]
    assert out["cancelled"]["status"] == "cancelled"
    assert out["afterCancel"]["status"] == "cancelled"
    async with httpx.AsyncClient(base_url=system.url, headers=AUTH) as http:
        job = (await http.get(f"/jobs/{second['job_id']}")).json()
    assert job["status"] == "cancelled"


async def _only_job(http: httpx.AsyncClient, tool: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            items = (await http.get("/jobs", params={"tool": tool})).json()["items"]
            if items:
                assert len(items) == 1, items
                return dict(items[0])
            await asyncio.sleep(0.1)


async def _status_becomes(http: httpx.AsyncClient, job_id: str, status: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            job = dict((await http.get(f"/jobs/{job_id}")).json())
            if job["status"] == status:
                return job
            await asyncio.sleep(0.1)


async def test_ts_sdk_client_aborting_a_call_cancels_its_running_job(
    system: ProcessPipeline, mcp_clients: Path, tmp_path: Path
) -> None:
    """The client aborts the call (AbortSignal: the SDK sends notifications/cancelled) at its
    first progress notification; its session stays open until the job is seen cancelled, so
    it is the cancelled call, not a closed session, that cancels the job. The job stops: its
    first step (a ``def`` handler, which runs to its end) ends, its second step never starts,
    and nothing reaches happy-end."""
    trace = tmp_path / "trace.log"
    arguments = {"seconds": 2, "trace": str(trace)}
    node = await ts_client(mcp_clients, tmp_path / "home", "abort", system.url, arguments)
    try:
        out = await node.first_line()
        assert "rejected" in out, out
        assert out["progress"], out
        async with httpx.AsyncClient(base_url=system.url, headers=AUTH) as http:
            job = await _only_job(http, "slow")
            cancelled = await _status_becomes(http, job["id"], "cancelled")
            assert cancelled["result"] is None
            await _trace_reaches(trace, "first ended")
            # The first step's sidecar would forward its result at once; give the second step
            # far longer than a hop takes (milliseconds) to show it is never asked.
            await asyncio.sleep(3)
            assert _lines(trace) == ["first started", "first ended"]
            after = (await http.get(f"/jobs/{job['id']}")).json()
        assert after["status"] == "cancelled", after
        assert after["result"] is None
        rc, rest, err = await node.finish()
        assert rc == 0, f"client.mjs abort exited {rc}:\n{rest}\n{err}"
    finally:
        await node.kill()
    assert "cancelled" in system.sidecars["first"].log(), system.sidecars["first"].log()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def _trace_reaches(path: Path, line: str) -> None:
    async with asyncio.timeout(30):
        while line not in _lines(path):  # noqa: ASYNC110 - a file another process writes
            await asyncio.sleep(0.1)


async def test_two_tokens_cannot_see_each_others_jobs(
    system: ProcessPipeline, mcp_clients: Path, tmp_path: Path
) -> None:
    """A job started with one token is "not found" for the other, on REST and through the
    TypeScript SDK's task methods and asya_job_result, and absent from its lists."""
    home = tmp_path / "home"
    running = await inspector_call(
        mcp_clients, home, system.url, "legacy", "slow_brief", {"seconds": 1}
    )
    job_id = running["job_id"]
    out = await ts_scenario(
        mcp_clients, home, "foreign", system.url, {"job_id": job_id}, token=OTHER_TOKEN
    )
    for method in ("get", "result", "cancel"):
        assert out[method].get("code") == -32602, (method, out)
        assert job_id in out[method]["message"], (method, out)
    assert job_id not in out["listed"]
    assert out["jobResult"]["isError"] is True, out
    assert f"no such job: {job_id}" in out["jobResult"]["content"][0]["text"]
    async with (
        httpx.AsyncClient(base_url=system.url, headers=OTHER_AUTH) as other,
        httpx.AsyncClient(base_url=system.url, headers=AUTH) as owner,
    ):
        assert (await other.get(f"/jobs/{job_id}")).status_code == 404
        assert (await other.post(f"/jobs/{job_id}/cancel")).status_code == 404
        assert job_id not in [j["id"] for j in (await other.get("/jobs")).json()["items"]]
        done = await _status_becomes(owner, job_id, "succeeded")
    assert done["result"] == {"seconds": 1, "steps": ["first", "second"]}
