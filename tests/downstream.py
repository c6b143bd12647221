"""A real HTTP server standing in for a sink's destination, with scripted faults.

It speaks HTTP/1.1 over asyncio streams (keep-alive, Content-Length bodies) so a test can
script what no framework lets an app do: reset the connection, answer late, or answer
429 with ``Retry-After`` as seconds or as an HTTP-date. It runs on its own thread and
records every request it read: its ``Idempotency-Key``, body and the answer given.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    reset: bool = False  # drop the connection without answering
    body: bytes = b"{}"


@dataclass
class Seen:
    at: float
    key: str | None
    headers: dict[str, str]
    body: bytes
    status: int | None  # None: the connection was reset

    def rows(self) -> list[Any]:
        data = orjson.loads(self.body)
        return data if isinstance(data, list) else [data]


Script = Callable[[int, "Downstream"], Answer]


def always_ok(i: int, d: Downstream) -> Answer:
    return Answer()


def retry_after_date(seconds: float) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


class RateLimited:
    """The classic partner API: ``per_s`` requests per second (429 + Retry-After beyond),
    ``fail`` of the rest answered 500 at random, latency uniform in ``latency_s``."""

    def __init__(
        self, per_s: int, fail: float, latency_s: tuple[float, float], seed: int = 7
    ) -> None:
        self.per_s, self.fail, self.latency_s = per_s, fail, latency_s
        self._rng = random.Random(seed)
        self._window: list[float] = []

    def __call__(self, i: int, d: Downstream) -> Answer:
        now = time.monotonic()
        self._window = [t for t in self._window if now - t < 1.0]
        delay = self._rng.uniform(*self.latency_s)
        if len(self._window) >= self.per_s:
            wait = 1.0 - (now - self._window[0])
            return Answer(429, {"retry-after": str(max(1, round(wait)))}, delay_s=0.01)
        self._window.append(now)
        if self._rng.random() < self.fail:
            return Answer(500, delay_s=delay, body=b'{"error": "boom"}')
        return Answer(200, delay_s=delay)


class Downstream:
    def __init__(self, script: Script = always_ok) -> None:
        self.script = script
        self.seen: list[Seen] = []
        self.port = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    def start(self) -> Downstream:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def delivered(self) -> list[Seen]:
        """Requests answered 2xx."""
        with self._lock:
            return [s for s in self.seen if s.status is not None and 200 <= s.status < 300]

    def delivered_rows(self) -> list[Any]:
        return [r for s in self.delivered() for r in s.rows()]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                with self._lock:
                    i = len(self.seen)
                    seen = Seen(
                        time.monotonic(), headers.get("idempotency-key"), headers, body, None
                    )
                    self.seen.append(seen)
                answer = self.script(i, self)
                if answer.delay_s:
                    await asyncio.sleep(answer.delay_s)
                if answer.reset:
                    writer.transport.abort()
                    return
                seen.status = answer.status
                extra = "".join(f"{k}: {v}\r\n" for k, v in answer.headers.items())
                writer.write(
                    f"HTTP/1.1 {answer.status} X\r\ncontent-length: {len(answer.body)}\r\n"
                    f"content-type: application/json\r\n{extra}\r\n".encode()
                    + answer.body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


# helpers of the sink tests and benchmark ------------------------------------------


def wait_until(check: Any, timeout_s: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = check()
        if out:
            return out
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def events(n: int, start: int = 0, poison: set[int] | None = None) -> list[dict[str, Any]]:
    return [
        {"device_id": f"d{i % 5}", "ts": "2026-01-01T00:00:00Z",
         "temperature": 13.5 if poison and i in poison else float(i % 40), "event_id": f"e{i}"}
        for i in range(start, start + n)
    ]  # fmt: skip


def sink_status(c: httpx.Client, name: str) -> dict[str, Any]:
    r = c.get(f"/v1/sinks/{name}")
    assert r.status_code == 200, r.text
    st: dict[str, Any] = r.json()
    assert st["produced"] == st["delivered"] + st["dead_lettered"] + st["pending"], st
    return st
