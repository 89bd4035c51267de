"""The sidecar's consumer: carries out the routing decisions for every delivery.

One :class:`Sidecar` per actor. It owns its tasks: a session per broker connection (consume,
process up to ``concurrency`` deliveries at once, ack after confirms), a runtime watch that
notices a runtime restart, and the probe server. It keeps the jobs the gateway cancelled (from
the control exchange): their messages are skipped, or abandoned while they run (see
:mod:`.cancellations`). Shutdown follows the usual order: stop taking
deliveries, let in-flight ones finish within the grace period, close the channel and connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

import msgspec

from asya_protocol import (
    JOB_HEADER,
    Backoff,
    BatchOkReply,
    ErrorCode,
    ErrorReply,
    EventType,
    Feature,
    HandlerMode,
    JobControlError,
    JobControlType,
    OkReply,
    PartialReply,
    decode_job_control,
)

from . import batched
from .batching import BatchOutcome, BatchPlan, batch_plan, prefetch_for
from .cancellations import ABANDONED, Abandoned, CancelledJobs, abandon_when
from .decision import (
    Decision,
    Outcome,
    Process,
    RoutingContext,
    RuntimeOutcome,
    RuntimeTimeout,
    RuntimeUnavailableOutcome,
    after_runtime,
    cancelled,
    inspect,
)
from .errors import RuntimeUnavailable, TransportError
from .http import ProbeServer
from .metrics import Metrics
from .partials import PartialStream, partial_stream
from .runtime_client import RuntimeClient
from .settings import SidecarSettings
from .settle import carry_out, nack_all
from .step_events import StepEvents, StepReport, noted
from .transport.base import Delivery, Transport

__all__ = ["Sidecar"]


async def _drop(_: PartialReply) -> None:
    """Partial results of a message that is not a job's: nobody follows them."""


log = logging.getLogger("asya_sidecar")

TransportFactory = Callable[[], Transport]
T = TypeVar("T")


class Sidecar:
    def __init__(
        self,
        settings: SidecarSettings,
        transport_factory: TransportFactory,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self._transport_factory = transport_factory
        self._rng = rng
        self.metrics = Metrics(settings.actor)
        self.events = StepEvents(settings)
        self.runtime = RuntimeClient(
            settings.socket_path,
            size=settings.concurrency,
            max_frame_size=settings.max_frame_size,
            batch=settings.batch_max_size != 1,
            partial=bool(settings.events_exchange),
        )
        self.cancelled = CancelledJobs()
        """Jobs the gateway cancelled (heard on the control exchange), kept for a while."""
        self.batch: BatchPlan | None = None
        """Set at start when the runtime's handler takes batches (see :mod:`.batching`)."""
        self._transport: Transport | None = None
        self._runtime_up = asyncio.Event()
        self._runtime_down = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._ctx: RoutingContext | None = None
        self.http_port: int | None = None
        self.consuming = asyncio.Event()
        self._last_activity = time.monotonic()

    @property
    def transport(self) -> Transport | None:
        """The current session's transport (None before the first)."""
        return self._transport

    @property
    def prefetch(self) -> int:
        """Unacknowledged deliveries to take: concurrency, times the batch size when batching."""
        return prefetch_for(self.batch, self.settings.concurrency)

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set. Raises :class:`RuntimeUnavailable` if the runtime never
        answers within ``runtime_wait`` at start."""
        s = self.settings
        log.info("waiting for the runtime on %s (up to %gs)", s.socket_path, s.runtime_wait)
        await self.runtime.wait_ready(s.runtime_wait)
        info = self.runtime.info
        log.info(
            "runtime %s ready: %s mode, features %s",
            info.name,
            info.mode.value,
            sorted(info.features) or "none",
        )
        envelope_mode = info.mode is HandlerMode.ENVELOPE
        if (
            envelope_mode and Feature.ENVELOPE.value not in info.features
        ):  # pragma: no cover - our runtime
            raise RuntimeUnavailable("runtime is in envelope mode but did not negotiate it")
        self._ctx = RoutingContext.of(s, envelope_mode=envelope_mode)
        self.batch = batch_plan(info.batch, s)
        if self.batch is not None:
            log.info(
                "batching: up to %d per request, waiting at most %gs; prefetch %d",
                self.batch.max_size,
                self.batch.max_wait,
                self.prefetch,
            )
        self._runtime_up.set()
        probes = ProbeServer(live=lambda: True, ready=self._ready, metrics=self.metrics.render)
        if s.http_port is not None:
            self.http_port = await probes.start(s.http_host, s.http_port)
        try:
            async with asyncio.TaskGroup() as tg:
                watch = tg.create_task(self._watch_runtime(), name="runtime-watch")
                await self._consume_until(stop)
                watch.cancel()
        finally:
            await probes.stop()
            await self.runtime.close()
        log.info("stopped")

    async def _consume_until(self, stop: asyncio.Event) -> None:
        """One session per broker connection; after a lost or refused one, reconnect after a
        jittered :class:`~asya_protocol.Backoff` delay (at most 2 s, reset once connected), so
        work resumes within about 2 s of the broker answering again."""
        backoff = Backoff()
        while not stop.is_set():
            failures = await self._connection_session(stop, backoff)
            if stop.is_set():
                return
            delay = backoff.next_delay()
            for exc in failures:
                log.warning("broker: %s; reconnecting in %.1fs", exc, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()

    async def _connection_session(
        self, stop: asyncio.Event, backoff: Backoff
    ) -> tuple[BaseException, ...]:
        """Connect, set up and consume until stopped or the connection fails; the failures."""
        transport = self._transport_factory()
        self._transport = transport
        failures: tuple[BaseException, ...] = ()
        try:
            await transport.connect()
            await transport.setup()
            backoff.reset()
            await self._session(transport, stop)
        except* TransportError as group:
            failures = group.exceptions
        finally:
            self.consuming.clear()
            await transport.close()
        return failures

    async def _session(self, transport: Transport, stop: asyncio.Event) -> None:
        grace = self.settings.shutdown_grace
        async with asyncio.TaskGroup() as tg:
            handlers: set[asyncio.Task[None]] = set()

            async def on_stop() -> None:
                await stop.wait()
                log.info("stopping: no new deliveries; %d in flight", len(handlers))
                await transport.stop_consuming()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(grace):
                        while handlers:
                            await asyncio.wait(set(handlers))
                if handlers:
                    log.warning(
                        "grace period of %gs over: %d message(s) left unacked (redelivered)",
                        grace,
                        len(handlers),
                    )
                    for task in handlers:
                        task.cancel()

            stopper = tg.create_task(on_stop(), name="stopper")
            if self.settings.exit_when_idle is not None:
                tg.create_task(self._exit_when_idle(stop, handlers), name="idle-exit")
            self.consuming.set()
            s = self.settings
            log.info("consuming %r (concurrency %d)", s.actor, s.concurrency)
            if self.batch is not None:
                await batched.consume(self, transport, self.batch, tg, handlers)
            else:
                await self._consume(transport, tg, handlers)
            # Deliveries ended: we were stopped (the stopper drains in-flight work) or the
            # iterator raised (connection lost) and the task group cancels everything.
            if not stop.is_set():  # pragma: no cover - deliveries only end after stop
                stopper.cancel()

    async def _consume(
        self, transport: Transport, tg: asyncio.TaskGroup, handlers: set[asyncio.Task[None]]
    ) -> None:
        async for delivery in transport.deliveries():
            self.touch()
            await self._slots.acquire()
            task = tg.create_task(self._handle(transport, delivery))
            handlers.add(task)
            task.add_done_callback(handlers.discard)

    async def _exit_when_idle(self, stop: asyncio.Event, handlers: set[asyncio.Task[None]]) -> None:
        idle = self.settings.exit_when_idle or 0.0
        self._last_activity = time.monotonic()
        while not stop.is_set():
            if handlers:
                self._last_activity = time.monotonic()
            elif time.monotonic() - self._last_activity >= idle:
                log.info("no message for %gs (ASYA_EXIT_WHEN_IDLE): exiting", idle)
                stop.set()
                return
            await asyncio.sleep(min(idle / 4, 1.0))

    async def _ready(self) -> tuple[bool, str]:
        transport = self._transport
        if transport is None or not transport.connected or not self.consuming.is_set():
            return False, "broker: not connected"
        state = await self.runtime.probe(timeout=1.0)
        if not state.answered:
            return False, "runtime: not answering"
        if not state.ready:
            return False, f"runtime: not ready: {state.reason}"
        if not self._runtime_up.is_set():
            return False, "runtime: not answering"  # answering again: taken back within 1 s
        return True, "ready"

    def _runtime_lost(self, reason: str) -> None:
        """Stop sending work to the runtime until :meth:`_watch_runtime` finds it ready."""
        if self._runtime_up.is_set():
            log.warning("%s; no new work for it until it is ready", reason)
        self._runtime_up.clear()
        self._runtime_down.set()

    async def _watch_runtime(self) -> None:
        while True:
            await self._runtime_down.wait()
            log.warning("runtime lost or not ready; waiting for it to be ready")
            await self.runtime.close()  # pooled connections to the old process are dead
            await self.runtime.wait_answering()
            self._runtime_down.clear()
            self._runtime_up.set()
            log.info("runtime is back")

    # --- one delivery -------------------------------------------------------------------------

    async def _handle(self, transport: Transport, delivery: Delivery) -> None:
        ctx = self.ctx
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            async with self.nack_on_failure(delivery):
                step = self.skip_cancelled(self.inspect(delivery, ctx))
                process: Process | None = None
                if isinstance(step, Process):
                    process = step
                    decision = await self._process(transport, process, ctx)
                    if decision.outcome is Outcome.REQUEUE:
                        await self.wait_runtime_back()
                else:
                    decision = step
                await self.carry_out(transport, delivery, decision, process)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.processing.observe(time.perf_counter() - started)
            self._slots.release()

    def inspect(self, delivery: Delivery, ctx: RoutingContext) -> Decision | Process:
        if delivery.redelivered:
            self.metrics.redeliveries.inc()
        return inspect(
            delivery.body, ctx, redelivered=delivery.redelivered, redeliveries=delivery.redeliveries
        )

    # --- cancelled jobs ------------------------------------------------------------------------

    def on_control(self, body: bytes) -> None:
        """A control message from the transport: remember a cancelled job (waking its requests
        in flight). A body that is not one is logged and ignored."""
        try:
            message = decode_job_control(body)
        except JobControlError as exc:
            log.warning("control message ignored: %s (body %r)", exc, body[:200])
            return
        match message.type:
            case JobControlType.CANCEL:
                if message.job_id not in self.cancelled:
                    log.info("job %s cancelled: its messages are skipped", message.job_id)
                self.cancelled.cancel(message.job_id)

    def skip_cancelled(self, step: Decision | Process) -> Decision | Process:
        """A message of a cancelled job is not sent to the runtime: acked, nothing published."""
        if not isinstance(step, Process) or step.job_id not in self.cancelled:
            return step
        log.info(
            "message %s of cancelled job %s skipped (not sent to the runtime)",
            step.envelope.id,
            step.job_id,
        )
        return cancelled(step)

    def drop_if_cancelled(self, process: Process, decision: Decision) -> Decision:
        """The result of a message whose job was cancelled while it ran is dropped."""
        if process.job_id not in self.cancelled:
            return decision
        log.info(
            "message %s of cancelled job %s: result dropped, nothing published",
            process.envelope.id,
            process.job_id,
        )
        return cancelled(process)

    async def unless_cancelled(
        self, processes: Sequence[Process], call: Awaitable[T]
    ) -> T | Abandoned:
        """Await the runtime ``call`` for ``processes``; abandon it (cancelled: its connection
        is closed, as on a timeout) once every one of their jobs is cancelled. Never for a
        request with a message that belongs to no job."""
        jobs = {p.job_id for p in processes}
        job_ids = {j for j in jobs if j is not None}
        if not job_ids or len(job_ids) != len(jobs):
            return await call
        with self.cancelled.watching(job_ids) as gone:
            result = await abandon_when(gone, call)
        if result is ABANDONED:
            log.info(
                "job(s) %s cancelled: the runtime request of %d message(s) abandoned",
                ", ".join(sorted(job_ids)),
                len(processes),
            )
        return result

    @contextlib.asynccontextmanager
    async def nack_on_failure(self, *deliveries: Delivery) -> AsyncIterator[None]:
        """Give ``deliveries`` back when the block fails: a transport failure is re-raised (the
        session ends), a bug is logged (the redelivery limit ends a loop)."""
        try:
            yield
        except TransportError:
            await nack_all(deliveries)
            raise
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unexpected error handling a delivery; returning it to the queue")
            await nack_all(deliveries)

    @property
    def ctx(self) -> RoutingContext:
        assert self._ctx is not None  # noqa: S101 - set in run() before any session starts
        return self._ctx

    @property
    def slots(self) -> asyncio.Semaphore:
        return self._slots

    def touch(self) -> None:
        self._last_activity = time.monotonic()

    def random_unit(self) -> float:
        return self._rng()

    async def carry_out(
        self, transport: Transport, delivery: Delivery, decision: Decision, process: Process | None
    ) -> None:
        await carry_out(transport, delivery, decision, process, self.ctx, self.metrics, self.events)

    async def _process(
        self, transport: Transport, process: Process, ctx: RoutingContext
    ) -> Decision:
        await self.events.emit(
            transport, EventType.RECEIVED, process.envelope, attempt=process.attempt
        )
        refused = batched.refuse(process, self.settings.max_frame_size)
        if refused is None:
            refused = await self.await_runtime()
        if refused is not None:
            return after_runtime(process, refused, ctx, random_unit=self._rng())
        async with (
            self.report(transport, (process,)) as report,
            self._partials(transport, process) as partials,
        ):
            outcome = await self.unless_cancelled(
                (process,),
                self.outcome_of(
                    self.runtime.call(
                        process.request,
                        timeout=self.settings.runtime_timeout,
                        on_progress=report.progress,
                        on_partial=partials.add if partials is not None else _drop,
                    )
                ),
            )
        if isinstance(outcome, Abandoned):
            return cancelled(process)
        assert not isinstance(outcome, BatchOkReply)  # noqa: S101 - a single call's outcome
        self.note(outcome)
        decision = after_runtime(process, outcome, ctx, random_unit=self._rng())
        return noted(self.drop_if_cancelled(process, decision), report.note)

    def report(self, transport: Transport, processes: Sequence[Process]) -> StepReport:
        """The started and progress events of a runtime request for ``processes``."""
        return StepReport(self.events, transport, processes, self.settings.progress_interval)

    def _partials(
        self, transport: Transport, process: Process
    ) -> AbstractAsyncContextManager[PartialStream | None]:
        """Where the exchange's partial results go: ``partial`` events for a message of a job
        (it carries the gateway's job header), nowhere for any other message."""
        envelope = process.envelope
        if not self.settings.events_exchange or JOB_HEADER not in envelope.headers:
            return contextlib.nullcontext()
        s = self.settings

        async def publish(offset: int, chunks: list[msgspec.Raw]) -> None:
            await self.events.emit(
                transport,
                EventType.PARTIAL,
                envelope,
                confirmed=True,
                chunks=tuple(chunks),
                offset=offset,
            )

        return partial_stream(
            publish,
            max_bytes=s.partial_max_bytes,
            interval=s.partial_interval,
            what=f"message {envelope.id}",
        )

    async def await_runtime(self) -> RuntimeUnavailableOutcome | None:
        """Wait (bounded) until the runtime is up; the outcome when it was not."""
        try:
            async with asyncio.timeout(self.settings.runtime_wait):
                await self._runtime_up.wait()
        except TimeoutError:
            reason = f"the runtime was not ready within {self.settings.runtime_wait:g}s"
            return RuntimeUnavailableOutcome(reason)
        return None

    async def outcome_of(
        self, call: Awaitable[OkReply | ErrorReply | BatchOkReply]
    ) -> RuntimeOutcome | BatchOutcome:
        try:
            return await call
        except TimeoutError:
            return RuntimeTimeout(self.settings.runtime_timeout)
        except RuntimeUnavailable as exc:
            log.warning("runtime unavailable during a request: %s", exc)
            self._runtime_lost("runtime unavailable")
            return RuntimeUnavailableOutcome(str(exc))

    def note(self, outcome: RuntimeOutcome) -> None:
        """Metrics of one item's outcome; a ``not_ready`` refusal marks the runtime lost."""
        if isinstance(outcome, ErrorReply) and outcome.error == ErrorCode.NOT_READY:
            self._runtime_lost(f"the runtime refused a request: not ready: {outcome.message}")
        if isinstance(outcome, ErrorReply | RuntimeTimeout):
            code = outcome.error if isinstance(outcome, ErrorReply) else ErrorCode.TIMEOUT
            self.metrics.runtime_error(code)

    async def wait_runtime_back(self) -> None:
        """Before giving a message back, let the runtime come back (bounded), so a restart
        does not burn the message's redeliveries in a tight loop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.runtime_wait):
                await self._runtime_up.wait()
