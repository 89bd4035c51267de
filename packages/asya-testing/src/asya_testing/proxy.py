"""A TCP proxy on 127.0.0.1 whose connections a test can cut, to simulate losing the broker."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["TcpProxy"]


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port``. ``cut()`` drops every
    connection open now (new ones still work), as a network blip or broker restart would."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self.cuts = 0

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        if self._pumps:
            await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def cut(self) -> None:
        self.cuts += 1
        for writer in list(self._writers):
            transport = writer.transport
            transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        task = asyncio.current_task()
        if task is not None:
            self._pumps.add(task)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pump(reader, up_writer))
                tg.create_task(self._pump(up_reader, writer))
        except* OSError:
            pass  # a cut connection: both sides are aborted
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()
            if task is not None:
                self._pumps.discard(task)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(OSError):
                writer.transport.abort()
