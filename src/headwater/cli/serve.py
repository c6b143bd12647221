"""Starting the server from the command line: the port, the data dir, the admin key.

The order matters. The port is bound first, before anything is created, so a taken port
costs one line and leaves no data dir or key behind. The data dir is locked next, so a
second server on the same directory stops with one line instead of failing deep inside
the store. Only then is the runtime built; it starts before the server answers and
stops after it stopped answering. The admin key is shown at the very end, once the
server answers.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from rich.console import Console
from rich.panel import Panel

from headwater.settings import Settings

if TYPE_CHECKING:
    from headwater.runtime import Runtime

KEY_FILE = "admin.key"
LOCK_FILE = "headwater.lock"


class StartupError(Exception):
    """The server cannot start; the message says why and what to do, in one line."""

    exit_code = 1


class DataDirError(StartupError):
    """The data dir is damaged or inconsistent: nothing was changed; exit code 2."""

    exit_code = 2


def bind_port(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to ``host:port`` (each address a name has, as uvicorn would bind them),
    or a StartupError saying how to pick another port."""
    if not 1 <= port <= 65535:  # getaddrinfo would quietly wrap it around
        raise StartupError(f"port {port} is out of range; pick one from 1 to 65535 with --port")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {host!r}: {exc.strerror}; check --host") from None
    addresses = list(dict.fromkeys((family, address) for family, _, _, _, address in found))
    sockets: list[socket.socket] = []
    try:
        for family, address in addresses:
            sockets.append(_bound(family, address, host, port, dual=len(addresses) == 1))
    except StartupError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bound(
    family: socket.AddressFamily, address: tuple[Any, ...], host: str, port: int, dual: bool
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and not dual:  # its IPv4 twin gets its own socket
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {host} is already in use by another program; "
                f"pick another with --port or HEADWATER_PORT"
            ) from None
        raise StartupError(
            f"cannot listen on {host}:{port}: {exc.strerror}; pick another --host or --port"
        ) from None
    return sock


def lock_data_dir(data_dir: Path) -> int:
    """Create the data dir if needed and lock it for this process; returns the lock's fd.

    The lock (``flock`` on ``headwater.lock``) is held until the process exits, and the
    operating system drops it even after ``kill -9``.
    """
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StartupError(
            f"cannot use data dir {data_dir}: {exc.strerror}; pick another with --data-dir"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StartupError(
            f"another Headwater server (pid {holder}) is using data dir {data_dir}; "
            f"stop it, or give this one its own --data-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def write_key_file(data_dir: Path, secret: str) -> Path:
    """Keep the admin key in the data dir, readable by its owner only (mode 0600)."""
    path = data_dir / KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also when the file was there before with wider rights
        os.write(fd, (secret + "\n").encode())
    finally:
        os.close(fd)
    return path


def key_notice(settings: Settings, new_secret: str | None) -> list[Panel | str]:
    """What start-up says about the admin key: the new key framed, and where it is kept."""
    path = (settings.data_dir / KEY_FILE).resolve()
    if settings.bootstrap_key:
        return ["Admin key: the one in HEADWATER_BOOTSTRAP_KEY"]
    if new_secret:
        write_key_file(settings.data_dir, new_secret)
        frame = Panel.fit(
            f"[bold]{new_secret}[/]\n\nSend it as 'Authorization: Bearer <key>'; "
            "the dashboard asks for it too.",
            title="[bold green]Admin API key[/]",
            border_style="green",
        )
        return [frame, f"Admin key: in {path} (readable by you only)"]
    if path.exists():
        return [f"Admin key: in {path}"]
    return [
        f"Admin key: no key file in {settings.data_dir}; make a key with: "
        f"headwater keys create --role admin --data-dir {settings.data_dir}"
    ]


class _Server(uvicorn.Server):
    """uvicorn's server around a runtime: the runtime starts before the server answers,
    stops after it stopped answering, and the server says so once it answers."""

    def __init__(self, config: uvicorn.Config, ready: list[Panel | str], runtime: Runtime) -> None:
        super().__init__(config)
        self._ready = ready
        self._runtime = runtime

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self._runtime.start()
        # Everything started so far lives as long as the server: keep it out of the
        # collector's full passes, which otherwise pause the event loop for tens of ms.
        gc.freeze()
        await super().startup(sockets)
        if self.should_exit:
            await self._runtime.stop()
            return
        console = Console(stderr=True, soft_wrap=True)
        for part in self._ready:
            console.print(part)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Inside uvicorn's signal capture: a SIGTERM is re-raised only after this returns.
        try:
            await super().shutdown(sockets)
        finally:
            await self._runtime.stop()


def run_server(settings: Settings, profile: str = "serve", intro: str = "") -> None:
    """Bind, lock, build the runtime and serve until a signal; StartupError when it cannot
    start. The runtime starts before the server answers and stops after it stopped."""
    from headwater.api.connections import server_options

    try:
        edge = server_options(settings)  # checked before anything starts
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    sockets = bind_port(settings.host, settings.port)
    lock_data_dir(settings.data_dir)  # held, with its fd, until the process exits

    from headwater.api.app import create_app, front_door
    from headwater.errors import HeadwaterError
    from headwater.observability.logging import configure
    from headwater.runtime import build_runtime

    configure(settings.log_level, settings.log_format)
    from headwater.engine.udfs import load_modules

    try:  # before the pipelines are built: their SQL may call the functions
        load_modules(settings.udf_modules)
    except Exception as exc:
        raise StartupError(f"cannot import udf_modules: {type(exc).__name__}: {exc}") from None

    try:
        runtime = build_runtime(settings, demo=profile == "demo")
    except HeadwaterError as exc:  # damaged or locked data: say what and why, no traceback
        raise DataDirError(f"cannot start: {exc.message}") from None
    fastapi_app = create_app(runtime, profile)
    scheme = "https" if settings.tls_cert else "http"
    listening = (
        f"Headwater listening on {scheme}://{settings.host}:{settings.port}  (API docs at /docs)"
    )
    ready = [
        *([intro] if intro else []),
        *key_notice(settings, runtime.bootstrap_secret),
        listening,
    ]
    config = uvicorn.Config(
        front_door(fastapi_app), log_level="warning", loop="uvloop", access_log=False,
        timeout_graceful_shutdown=5, **edge,
    )  # fmt: skip
    try:
        _Server(config, ready, runtime).run(sockets=sockets)
    finally:
        # Frozen objects are never collected, not even at exit: DuckDB's and Arrow's native
        # objects would outlive their modules, and nanobind reports each one as leaked.
        gc.unfreeze()
