"""A pipeline can finish before the gateway has marked its job running: the job a start returns
must then say what happened, not "pending"."""

from __future__ import annotations

from pathlib import Path

from asya_gateway.db import make_engine
from asya_gateway.jobs import JOB_HEADER, JobStore
from asya_gateway.migrate import upgrade
from asya_gateway.notify import Notifier
from asya_gateway.service import Gateway
from asya_gateway.tools import parse_tools
from asya_protocol import Envelope

TOOLS = {"tools": [{"name": "echo", "description": "Echo", "steps": ["echo"]}]}


class FinishesBeforePublishReturns:
    """A broker whose pipeline delivers the result before ``publish_job`` returns: the ordering
    a real broker produces when the confirm is slower than the three hops."""

    def __init__(self) -> None:
        self.store: JobStore | None = None

    async def publish_job(self, envelope: Envelope) -> None:
        assert self.store is not None
        job_id = envelope.headers[JOB_HEADER]
        done = envelope.with_payload({"echoed": envelope.payload_value()})
        await self.store.on_terminal(job_id, done, ok=True)

    async def publish_control(self, body: bytes) -> None:
        raise AssertionError("nothing is cancelled here")


async def test_start_returns_the_finished_job(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    await upgrade(url)
    engine = make_engine(url)
    notifier = Notifier(url)
    broker = FinishesBeforePublishReturns()
    store = JobStore(engine, notifier.notify)
    broker.store = store
    try:
        gateway = Gateway(
            tools=parse_tools(TOOLS, "test"),
            store=store,
            broker=broker,  # type: ignore[arg-type]
            notifier=notifier,
            default_timeout=60,
        )
        job = (await gateway.start("echo", {"x": 1})).job
        assert job.status == "succeeded"
        assert job.result == {"echoed": {"x": 1}}
    finally:
        await engine.dispose()
