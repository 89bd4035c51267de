"""REST and SSE over real HTTP, jobs driven by real sidecars and runtimes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

TOKEN = "test-token-123"  # noqa: S105 - a test credential
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def wait_job(client: httpx.AsyncClient, job_id: str, timeout: float = 30) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            job = (await client.get(f"/jobs/{job_id}")).json()
            if job["status"] in ("succeeded", "failed", "timed_out", "cancelled"):
                return job
            await asyncio.sleep(0.05)


async def sse_events(response: httpx.Response) -> list[tuple[int, str, dict[str, Any]]]:
    """``(id, event, data)`` of every event in an SSE stream, until it ends."""
    events = []
    current: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(("id:", "event:", "data:")):
            key, _, value = line.partition(":")
            current[key] = value.strip()
        elif line == "" and current:
            events.append((int(current["id"]), current["event"], json.loads(current["data"])))
            current = {}
    return events


async def test_seed_job_through_rest(gateway: Any, actors: None) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as client:
        created = await client.post(
            "/jobs", json={"tool": "classify_text", "arguments": {"text": "Hello world"}}
        )
        assert created.status_code == 201, created.text
        job = created.json()
        # "running", or already "succeeded" when the pipeline beat the publisher confirm.
        assert job["status"] in ("running", "succeeded")
        done = await wait_job(client, job["id"])
        assert done["status"] == "succeeded"
        assert done["result"] == {"result": "Classified as greeting"}
        assert done["progress"] == 1.0
        listed = (await client.get("/jobs", params={"tool": "classify_text"})).json()
        assert [j["id"] for j in listed["items"]] == [job["id"]]
        metrics = (await client.get("/metrics")).text
        assert 'asya_gateway_jobs_started_total{tool="classify_text",via="rest"} 1.0' in metrics


async def test_sse_streams_progress_and_resumes(gateway: Any, actors: None) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=30) as client:
        job = (
            await client.post(
                "/jobs", json={"tool": "classify_text", "arguments": {"text": "Hello world"}}
            )
        ).json()
        async with client.stream("GET", f"/jobs/{job['id']}/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = await sse_events(response)
        statuses = [e[2]["status"] for e in events if e[1] == "status"]
        assert statuses[0] == "pending"
        assert statuses[-1] == "succeeded"
        ids = [e[0] for e in events]
        assert ids == sorted(ids)
        # Resume from the middle with Last-Event-ID: only later events come.
        middle = ids[len(ids) // 2]
        resumed = []
        async with client.stream(
            "GET", f"/jobs/{job['id']}/events", headers={"Last-Event-ID": str(middle)}
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    resumed.append(int(line[3:]))
        later = [i for i in ids if i > middle]
        assert resumed[: len(later)] == later
        assert all(i > middle for i in resumed)

        # Step events travel apart from results, so some may land after the job finished;
        # replaying the history shows every step's events once they are in.
        async def history() -> set[tuple[str, str, str | None]]:
            seen = set()
            async with client.stream("GET", f"/jobs/{job['id']}/events") as response:
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        data = json.loads(line[5:])
                        if "actor" in data:
                            actor = data["actor"].rsplit("-", 1)[0]
                            seen.add((actor, data["type"], data.get("message")))
            return seen

        # The inference step's progress message reaches the stream: on its done event when the
        # step ended within ASYA_PROGRESS_INTERVAL (it held the progress), else on its own.
        steps = {("postprocess", "done", None), ("preprocess", "done", None)}
        thinking = {("inference", "done", "thinking"), ("inference", "progress", "thinking")}
        async with asyncio.timeout(10):
            while True:
                seen = await history()
                if steps <= seen and thinking & seen:
                    break
                await asyncio.sleep(0.1)


async def test_fan_out_job_lists_every_branch(gateway: Any, actors: None) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as client:
        job = (
            await client.post(
                "/jobs", json={"tool": "shout_words", "arguments": {"text": "hello big world"}}
            )
        ).json()
        done = await wait_job(client, job["id"])
    assert done["status"] == "succeeded", done
    texts = sorted(b["result"]["text"] for b in done["result"]["branches"])
    assert texts == ["BIG", "HELLO", "WORLD"]


async def test_fan_out_with_a_failing_branch(gateway: Any, actors: None) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as client:
        job = (
            await client.post(
                "/jobs", json={"tool": "shout_words", "arguments": {"text": "ok fail"}}
            )
        ).json()
        done = await wait_job(client, job["id"])
    assert done["status"] == "failed"
    assert done["error"]["error"] == "branch_failed"
    assert len(done["result"]["branches"]) == 2


async def test_failing_job_carries_the_error(gateway: Any, actors: None) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as client:
        job = (await client.post("/jobs", json={"tool": "broken", "arguments": {}})).json()
        done = await wait_job(client, job["id"])
    assert done["status"] == "failed"
    assert done["error"]["error"] == "handler_error"
    assert "the model is broken" in done["error"]["message"]


async def test_timed_out_job_and_late_result_ignored(gateway: Any, actors: None) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as client:
        job = (
            await client.post("/jobs", json={"tool": "sleepy", "arguments": {"seconds": 2}})
        ).json()
        done = await wait_job(client, job["id"])
        assert done["status"] == "timed_out"
        await asyncio.sleep(2.5)  # the late happy-end arrives meanwhile
        again = (await client.get(f"/jobs/{job['id']}")).json()
    assert again["status"] == "timed_out"
    assert again["result"] is None


async def test_unroutable_tool_fails_at_once(gateway: Any) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as client:
        response = await client.post("/jobs", json={"tool": "nowhere", "arguments": {}})
    assert response.status_code == 503
    assert response.json()["status"] == "failed"
    assert "not-deployed" in response.json()["error"]["message"]


async def test_bad_requests(gateway: Any) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        assert (await client.get("/healthz")).status_code == 200
        missing = await client.get("/jobs")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert (
            await client.get("/jobs", headers={"Authorization": "Bearer wrong"})
        ).status_code == 401
        client.headers.update(AUTH)
        assert (await client.post("/jobs", json={"tool": "nope"})).status_code == 404
        bad = await client.post("/jobs", json={"tool": "classify_text", "arguments": {"text": 5}})
        assert bad.status_code == 422
        assert "text: 5 is not of type 'string'" in json.dumps(bad.json())
        missing_field = await client.post("/jobs", json={"tool": "classify_text", "arguments": {}})
        assert "text: required field missing" in json.dumps(missing_field.json())
        huge = await client.post(
            "/jobs",
            content=b"{" + b" " * 70000 + b"}",
            headers={"content-type": "application/json"},
        )
        assert huge.status_code == 413
        assert (await client.get("/jobs/does-not-exist")).status_code == 404
        assert (await client.post("/jobs/does-not-exist/cancel")).status_code == 404


async def test_injection_shaped_strings_are_stored_verbatim(gateway: Any) -> None:
    nasty = "'); DROP TABLE asya_jobs; -- <script>alert(1)</script> \u0000\u2603"
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as client:
        job = (
            await client.post("/jobs", json={"tool": "nowhere", "arguments": {"text": nasty}})
        ).json()
        fetched = (await client.get(f"/jobs/{job['id']}")).json()
        listed = (await client.get("/jobs", params={"tool": "nowhere' OR '1'='1"})).json()
    assert fetched["input"] == {"text": nasty}
    assert listed["items"] == []


async def test_cancel(gateway: Any, actors: None) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as client:
        job = (
            await client.post("/jobs", json={"tool": "sleepy", "arguments": {"seconds": 0.5}})
        ).json()
        cancelled = await client.post(f"/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        assert (await client.post(f"/jobs/{job['id']}/cancel")).status_code == 409
        await asyncio.sleep(1.0)  # the pipeline finishes anyway: its result must not land
        assert (await client.get(f"/jobs/{job['id']}")).json()["status"] == "cancelled"


async def test_duplicate_and_late_terminal_messages_change_nothing(
    gateway: Any, actors: None, amqp_url: str, amqp_names: Any
) -> None:
    from asya_testing import AmqpClient

    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as client:
        job = (
            await client.post(
                "/jobs", json={"tool": "classify_text", "arguments": {"text": "Hello world"}}
            )
        ).json()
        done = await wait_job(client, job["id"])
        assert done["status"] == "succeeded"
        events_before = (await client.get(f"/jobs/{job['id']}")).json()
        # At-least-once delivery: the same result again, and a contradicting late failure.
        async with AmqpClient(amqp_url, amqp_names) as amqp:
            headers = {"asya-job-id": job["id"]}
            await amqp.publish(
                amqp_names.happy_end,
                {
                    "id": "dup",
                    "route": {"steps": ["x"], "current": 1},
                    "payload": {"result": "something else"},
                    "headers": headers,
                },
            )
            await amqp.publish(
                amqp_names.error_end,
                {
                    "id": "late",
                    "route": {"steps": ["x"], "current": 0},
                    "payload": {"error": "handler_error", "message": "late", "step": "x"},
                    "headers": headers,
                },
            )
        # A later job through the same queues: once it is done, the gateway has been handed
        # the two messages above (they were queued first); give their handling a moment.
        other = (
            await client.post("/jobs", json={"tool": "classify_text", "arguments": {"text": "x"}})
        ).json()
        assert (await wait_job(client, other["id"]))["status"] == "succeeded"
        await asyncio.sleep(0.5)
        after = (await client.get(f"/jobs/{job['id']}")).json()
    assert after["status"] == "succeeded"
    assert after["result"] == {"result": "Classified as greeting"}
    assert after["error"] is None
    assert after["finished_at"] == events_before["finished_at"]
