"""A server-sent-events answer whose every write has a deadline.

Starlette's ``StreamingResponse`` waits as long as the client likes when it stops
reading (the transport pauses the writer): a reader that never reads would hold its
events forever. Here a write that takes longer than ``write_timeout_s`` ends the feed
and the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import structlog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

log = structlog.get_logger("headwater.api")

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[bytes],
        write_timeout_s: float,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.raw_headers = list(HEADERS)
        self.events = events
        self.write_timeout_s = write_timeout_s
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(self._write(send))
                tg.create_task(_until_disconnect(receive, writer))
        except* TimeoutError:
            log.info("subscriber_dropped", reason="write_timeout", timeout_s=self.write_timeout_s)
        except* OSError:  # the client went away mid-write
            pass
        finally:
            self.on_close()

    async def _write(self, send: Send) -> None:
        async for chunk in self.events:
            async with asyncio.timeout(self.write_timeout_s):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _until_disconnect(receive: Receive, writer: asyncio.Task[None]) -> None:
    """Cancel the writer when the client disconnects (or the writer ends first)."""
    while not writer.done():
        message = await receive()
        if message["type"] == "http.disconnect":
            writer.cancel()
            return
