"""The HTTP side of the client commands: connection options, errors that say what to do.

``status``, ``send``, ``sql`` and ``tail`` talk to a running server over its public API,
exactly as any other client would. This module turns transport failures and error
answers into :class:`ApiError` with a message a person can act on, and exits with it.
"""

from __future__ import annotations

import email.utils
import random
import time
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.markup import escape

DEFAULT_URL = "http://127.0.0.1:8000"

UrlOpt = Annotated[
    str,
    typer.Option("--url", envvar="HEADWATER_URL", help="Server address.", show_default=True),
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar=["HEADWATER_KEY", "HEADWATER_BOOTSTRAP_KEY"],
        help="API key (HEADWATER_KEY first, else HEADWATER_BOOTSTRAP_KEY) \\[default: none]",
        show_default=False,
    ),
]

err_console = Console(stderr=True, soft_wrap=True)


def out_console() -> Console:
    """Standard output; when it is not a terminal, wide enough that tables never wrap."""
    console = Console()
    return console if console.is_terminal else Console(width=1000)


class ApiError(Exception):
    """A request that did not get the answer it needed; ``message`` says what to do."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "error") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


def connect(url: str, key: str | None, timeout_s: float = 30.0) -> httpx.Client:
    headers = {"User-Agent": "headwater-cli"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)


def unreachable(url: str, exc: Exception) -> ApiError:
    why = "connection refused" if isinstance(exc, httpx.ConnectError) else type(exc).__name__
    return ApiError(
        f"cannot reach the Headwater server at {url} ({why}). Start one with "
        "`headwater serve` (or `headwater demo`), or point --url / HEADWATER_URL at it.",
        code="unreachable",
    )


def error_of(resp: httpx.Response) -> ApiError:
    """The server's error answer (``{"error": {"code", "message"}}``) as an ApiError."""
    code, message = _error_fields(resp)
    if resp.status_code == 401:
        hint = (
            "set HEADWATER_KEY (or pass --key) to an API key of this server"
            if code == "missing_key"
            else "check the key in HEADWATER_KEY / --key"
        )
        message = (
            f"{message} — {hint}; the admin key is printed once when the server first "
            "starts, or is the server's HEADWATER_BOOTSTRAP_KEY"
        )
    elif resp.status_code == 403:
        message = f"{message} — this key's role may not do this; use a key with the right role"
    return ApiError(message, status=resp.status_code, code=code)


def _error_fields(resp: httpx.Response) -> tuple[str, str]:
    try:
        body = resp.json()
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("code", "error")), str(err.get("message", ""))
    text = resp.text.strip()[:300] or resp.reason_phrase
    return f"http_{resp.status_code}", text


def request(client: httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response:
    """One request; a transport failure becomes an ApiError that says how to start a server."""
    try:
        return client.request(method, path, **kw)
    except httpx.TransportError as exc:
        raise unreachable(str(client.base_url), exc) from exc


def call(client: httpx.Client, method: str, path: str, **kw: Any) -> Any:
    """A request whose answer must be 2xx JSON; anything else raises ApiError."""
    resp = request(client, method, path, **kw)
    if not resp.is_success:
        raise error_of(resp)
    return resp.json()


def fail(exc: ApiError, console: Console = err_console) -> NoReturn:
    where = f" (HTTP {exc.status})" if exc.status else ""
    console.print(f"[bold red]error[/] {escape(f'[{exc.code}]')}{where}: {escape(exc.message)}")
    raise typer.Exit(1)


# retries -------------------------------------------------------------------------------

MAX_RETRY_AFTER_S = 300.0


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay seconds or an HTTP date).

    >>> parse_retry_after("3")
    3.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:05 GMT", now_s=1445412480.0)
    5.0
    >>> parse_retry_after("soon") is None
    True
    """
    if value is None or not value.strip():
        return None
    v = value.strip()
    try:
        seconds = float(v)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(v)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now_s is None else now_s)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def backoff_s(
    attempt: int, base_s: float = 0.25, cap_s: float = 10.0, rng: random.Random | None = None
) -> float:
    """Exponential backoff with jitter for attempt 0, 1, 2...: in [d/2, d], d = base·2^attempt ≤ cap."""
    d = min(cap_s, base_s * 2.0 ** min(attempt, 30))
    return d * (0.5 + 0.5 * (rng or random.Random()).random())
