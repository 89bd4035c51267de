"""The sidecar's consumer: carries out the routing decisions for every delivery.

One :class:`Sidecar` per actor. It owns its tasks: a session per broker connection (consume,
process up to ``concurrency`` deliveries at once, ack after confirms), a runtime watch that
notices a runtime restart, and the probe server. Shutdown follows the usual order: stop taking
deliveries, let in-flight ones finish within the grace period, close the channel and connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

from asya_protocol import (
    Backoff,
    ErrorCode,
    ErrorReply,
    EventType,
    Feature,
    HandlerMode,
    ProgressReply,
)

from .decision import (
    Decision,
    Outcome,
    Process,
    RoutingContext,
    RuntimeOutcome,
    RuntimeTimeout,
    RuntimeUnavailableOutcome,
    after_runtime,
    inspect,
    unroutable,
)
from .errors import RuntimeUnavailable, TransportError, Unroutable
from .http import ProbeServer
from .metrics import Metrics
from .runtime_client import RuntimeClient
from .settings import SidecarSettings
from .step_events import StepEvents
from .transport.base import Delivery, Transport

__all__ = ["Sidecar"]

log = logging.getLogger("asya_sidecar")

TransportFactory = Callable[[], Transport]


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
        )
        self._transport: Transport | None = None
        self._runtime_up = asyncio.Event()
        self._runtime_down = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._ctx: RoutingContext | None = None
        self.http_port: int | None = None
        self.consuming = asyncio.Event()
        self._last_activity = time.monotonic()

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
            async for delivery in transport.deliveries():
                self._last_activity = time.monotonic()
                await self._slots.acquire()
                task = tg.create_task(self._handle(transport, delivery))
                handlers.add(task)
                task.add_done_callback(handlers.discard)
            # Deliveries ended: we were stopped (the stopper drains in-flight work) or the
            # iterator raised (connection lost) and the task group cancels everything.
            if not stop.is_set():  # pragma: no cover - deliveries only end after stop
                stopper.cancel()

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
        ctx = self._ctx
        assert ctx is not None  # noqa: S101 - set in run() before any session starts
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            if delivery.redelivered:
                self.metrics.redeliveries.inc()
            step = inspect(
                delivery.body,
                ctx,
                redelivered=delivery.redelivered,
                redeliveries=delivery.redeliveries,
            )
            process: Process | None = None
            if isinstance(step, Process):
                process = step
                decision = await self._process(transport, process, ctx)
                if decision.outcome is Outcome.REQUEUE:
                    await self._wait_runtime_back()
            else:
                decision = step
            await self._carry_out(transport, delivery, decision, process, ctx)
            self.metrics.outcome(decision.outcome.value)
        except TransportError:
            with contextlib.suppress(TransportError):
                await delivery.nack()
            raise
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug here must not lose the message: give it back; the redelivery limit ends a loop.
            log.exception("unexpected error handling a delivery; returning it to the queue")
            with contextlib.suppress(TransportError):
                await delivery.nack()
        finally:
            self.metrics.in_flight.dec()
            self.metrics.processing.observe(time.perf_counter() - started)
            self._slots.release()

    async def _process(
        self, transport: Transport, process: Process, ctx: RoutingContext
    ) -> Decision:
        envelope = process.envelope
        await self.events.emit(transport, EventType.RECEIVED, envelope, attempt=process.attempt)
        if len(process.request) > self.settings.max_frame_size:
            outcome: RuntimeOutcome = ErrorReply(
                error=ErrorCode.FRAME_TOO_LARGE,
                message=f"payload of {len(process.request)} bytes exceeds the frame limit "
                f"of {self.settings.max_frame_size}",
            )
            return after_runtime(process, outcome, ctx, random_unit=self._rng())
        try:
            async with asyncio.timeout(self.settings.runtime_wait):
                await self._runtime_up.wait()
        except TimeoutError:
            reason = f"the runtime was not ready within {self.settings.runtime_wait:g}s"
            return after_runtime(process, RuntimeUnavailableOutcome(reason), ctx)
        await self.events.emit(transport, EventType.STARTED, envelope, attempt=process.attempt)

        async def on_progress(p: ProgressReply) -> None:
            await self.events.emit(
                transport, EventType.PROGRESS, envelope, progress=p.progress, message=p.message
            )

        try:
            reply = await self.runtime.call(
                process.request, timeout=self.settings.runtime_timeout, on_progress=on_progress
            )
            outcome = reply
        except TimeoutError:
            outcome = RuntimeTimeout(self.settings.runtime_timeout)
        except RuntimeUnavailable as exc:
            log.warning("runtime unavailable during a request: %s", exc)
            self._runtime_lost("runtime unavailable")
            outcome = RuntimeUnavailableOutcome(str(exc))
        if isinstance(outcome, ErrorReply) and outcome.error == ErrorCode.NOT_READY:
            self._runtime_lost(f"the runtime refused a request: not ready: {outcome.message}")
        if isinstance(outcome, ErrorReply | RuntimeTimeout):
            code = outcome.error if isinstance(outcome, ErrorReply) else ErrorCode.TIMEOUT
            self.metrics.runtime_error(code)
        return after_runtime(process, outcome, ctx, random_unit=self._rng())

    async def _wait_runtime_back(self) -> None:
        """Before giving a message back, let the runtime come back (bounded), so a restart
        does not burn the message's redeliveries in a tight loop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.runtime_wait):
                await self._runtime_up.wait()

    async def _carry_out(
        self,
        transport: Transport,
        delivery: Delivery,
        decision: Decision,
        process: Process | None,
        ctx: RoutingContext,
    ) -> None:
        try:
            for out in decision.publish:
                await transport.publish(out)
        except Unroutable as exc:
            if process is None or exc.routing_key == ctx.error_end:
                log.error("cannot route to %r (queue deleted?); message goes back", exc.routing_key)
                await asyncio.sleep(1.0)  # do not spin on a broken setup
                await delivery.nack()
                return
            log.warning("step output unroutable: %s; input goes to %s", exc, ctx.error_end)
            decision = unroutable(process, ctx, exc.routing_key)
            for out in decision.publish:
                await transport.publish(out)
        if decision.ack:
            await delivery.ack()
        else:
            await delivery.nack()
        if decision.outcome is Outcome.RETRY:
            self.metrics.retries.inc()
        if process is not None:
            await self.events.decision(transport, process, decision)
