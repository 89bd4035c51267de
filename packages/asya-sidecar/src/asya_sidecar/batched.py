"""The consumer's batching path: gather deliveries into batches, send each batch to the runtime
in one request, then settle every delivery on its own (its own decision, publishes, ack).

Used when the runtime's handler takes batches (:mod:`.batching` decides the limits). Each of the
``concurrency`` slots carries one batch at a time; a slot, once free, takes the first delivery
waiting and then whatever arrives within ``max_wait`` of it, up to ``max_size``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from asya_protocol import ErrorCode, ErrorReply, EventType

from .batching import BATCH_FRAME_OVERHEAD, BatchPlan, split_outcome
from .cancellations import Abandoned
from .decision import (
    Decision,
    Outcome,
    Process,
    RoutingContext,
    RuntimeOutcome,
    after_runtime,
    cancelled,
)
from .step_events import StepReport, noted
from .transport.base import Delivery, Transport

if TYPE_CHECKING:
    from .consumer import Sidecar

__all__ = ["Gatherer", "consume", "handle_batch", "process_batch", "refuse"]


class Gatherer:
    """Batches out of a queue of deliveries (``None`` ends it)."""

    def __init__(self, queue: asyncio.Queue[Delivery | None], plan: BatchPlan) -> None:
        self._queue = queue
        self._plan = plan
        self._carry: Delivery | None = None
        self.ended = False

    async def _get(self) -> Delivery | None:
        if self._carry is not None:
            carried, self._carry = self._carry, None
            return carried
        return await self._queue.get()

    async def next_batch(self) -> list[Delivery]:
        """The next batch (empty once the deliveries ended): waits for a first delivery, then at
        most ``max_wait`` for more, stopping at ``max_size`` or ``max_bytes``."""
        first = await self._get()
        if first is None:
            self.ended = True
            return []
        batch, size = [first], len(first.body) + BATCH_FRAME_OVERHEAD
        deadline = asyncio.get_running_loop().time() + self._plan.max_wait
        while len(batch) < self._plan.max_size:
            try:
                async with asyncio.timeout_at(deadline):
                    more = await self._get()
            except TimeoutError:
                break
            if more is None:
                self.ended = True
                break
            size += len(more.body) + BATCH_FRAME_OVERHEAD
            if size > self._plan.max_bytes:
                self._carry = more  # the first of the next batch
                break
            batch.append(more)
        return batch


async def consume(
    sidecar: Sidecar,
    transport: Transport,
    plan: BatchPlan,
    tg: asyncio.TaskGroup,
    handlers: set[asyncio.Task[None]],
) -> None:
    """Take deliveries until they end, a batch per free slot, each batch a task in ``tg``."""
    queue: asyncio.Queue[Delivery | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for delivery in transport.deliveries():
                sidecar.touch()
                queue.put_nowait(delivery)
        finally:
            queue.put_nowait(None)

    tg.create_task(pump(), name="deliveries")
    gatherer = Gatherer(queue, plan)
    while not gatherer.ended:
        await sidecar.slots.acquire()
        batch = await gatherer.next_batch()
        if not batch:
            sidecar.slots.release()
            continue
        task = tg.create_task(handle_batch(sidecar, transport, batch))
        handlers.add(task)
        task.add_done_callback(handlers.discard)


async def handle_batch(sidecar: Sidecar, transport: Transport, deliveries: list[Delivery]) -> None:
    ctx = sidecar.ctx
    started = time.perf_counter()
    sidecar.metrics.in_flight.inc(len(deliveries))
    sidecar.metrics.batch_size.observe(len(deliveries))
    try:
        settled: list[tuple[Delivery, Decision, Process | None]] = []
        async with sidecar.nack_on_failure(*deliveries):
            steps = [sidecar.skip_cancelled(sidecar.inspect(d, ctx)) for d in deliveries]
            work = [s for s in steps if isinstance(s, Process)]
            decided = iter(await process_batch(sidecar, transport, work, ctx))
            for d, s in zip(deliveries, steps, strict=True):
                settled.append((d, next(decided), s) if isinstance(s, Process) else (d, s, None))
            if any(dec.outcome is Outcome.REQUEUE for _, dec, _ in settled):
                await sidecar.wait_runtime_back()
        async with asyncio.TaskGroup() as each:
            for delivery, decision, process in settled:
                each.create_task(_settle(sidecar, transport, delivery, decision, process, ctx))
    finally:
        sidecar.metrics.in_flight.dec(len(deliveries))
        elapsed = time.perf_counter() - started
        for _ in deliveries:
            sidecar.metrics.processing.observe(elapsed)
        sidecar.slots.release()


async def _settle(
    sidecar: Sidecar,
    transport: Transport,
    delivery: Delivery,
    decision: Decision,
    process: Process | None,
    ctx: RoutingContext,
) -> None:
    """One delivery of a batch: its publishes, confirmed, then its ack."""
    async with sidecar.nack_on_failure(delivery):
        await sidecar.carry_out(transport, delivery, decision, process)


async def process_batch(
    sidecar: Sidecar, transport: Transport, processes: list[Process], ctx: RoutingContext
) -> list[Decision]:
    """Send ``processes`` to the runtime in one request; one decision each, in order."""
    outcomes: dict[int, RuntimeOutcome] = {}
    for i, process in enumerate(processes):
        await sidecar.events.emit(
            transport, EventType.RECEIVED, process.envelope, attempt=process.attempt
        )
        refused = refuse(process, sidecar.settings.max_frame_size)
        if refused is not None:
            outcomes[i] = refused
    sending = [i for i in range(len(processes)) if i not in outcomes]
    note: str | None = None
    if sending:
        unavailable = await sidecar.await_runtime()
        if unavailable is not None:
            outcomes.update(dict.fromkeys(sending, unavailable))
        else:
            batch = [processes[i] for i in sending]
            async with sidecar.report(transport, batch) as report:
                called = await _call(sidecar, batch, sending, report)
            note = report.note
            if not isinstance(called, Abandoned):
                outcomes.update(called)
    # Abandoned (every job of the request cancelled): those messages have no outcome.
    # A progress the request held back: the done of each of its items carries its message.
    return [
        noted(
            sidecar.drop_if_cancelled(
                p, after_runtime(p, outcomes[i], ctx, random_unit=sidecar.random_unit())
            ),
            note,
        )
        if i in outcomes
        else cancelled(p)
        for i, p in enumerate(processes)
    ]


async def _call(
    sidecar: Sidecar, batch: list[Process], indices: list[int], report: StepReport
) -> dict[int, RuntimeOutcome] | Abandoned:
    """The request's outcome per item; abandoned once every one of the batch's jobs is
    cancelled (a batch with a member of another job, or of none, runs to its end)."""
    outcome = await sidecar.unless_cancelled(
        batch,
        sidecar.outcome_of(
            sidecar.runtime.call_batch(
                [p.request for p in batch],
                timeout=sidecar.settings.runtime_timeout,
                on_progress=report.progress,
            )
        ),
    )
    if isinstance(outcome, Abandoned):
        return outcome
    items = split_outcome(outcome, len(batch))  # type: ignore[arg-type]
    for item in items:
        sidecar.note(item)
    return dict(zip(indices, items, strict=True))


def refuse(process: Process, max_frame_size: int) -> RuntimeOutcome | None:
    """``frame_too_large`` for a request over the frame limit (never sent)."""
    if len(process.request) <= max_frame_size:
        return None
    return ErrorReply(
        error=ErrorCode.FRAME_TOO_LARGE,
        message=f"payload of {len(process.request)} bytes exceeds the frame limit "
        f"of {max_frame_size}",
    )
