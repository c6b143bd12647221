"""A real ``headwater serve`` process for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ADMIN_KEY = "hw_test_admin_key_0123456789abcdef"

# httpx builds a fresh TLS context (and reads the CA bundle) for every client it makes:
# ~20 ms of CPU, spent again on each poll of a wait loop, even for plain-http URLs. Tests
# make thousands of clients; they share this one (a test that needs other trust passes
# its own ``verify``).
TRUST = ssl.create_default_context()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a server's worker processes; Linux /proc)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                found.append(int(d.name))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        command: str = "serve",
        bootstrap_key: str | None = ADMIN_KEY,
        **env: str,
    ) -> None:
        """``bootstrap_key=None`` lets the server make its own admin key, as a first start does."""
        self.data_dir = data_dir
        self.bootstrap_key = bootstrap_key
        self.port = port or free_port()
        self.command = command
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    def start(self, timeout_s: float = 30.0) -> Server:
        env = {**os.environ, "HEADWATER_LOG_LEVEL": "warning", **self.env}
        env.pop("HEADWATER_BOOTSTRAP_KEY", None)
        if self.bootstrap_key is not None:
            env["HEADWATER_BOOTSTRAP_KEY"] = self.bootstrap_key
        with open(self.log_path, "ab") as log:
            self.proc = self._spawn(env, log)
        self._wait_healthy(timeout_s)
        return self

    def _spawn(self, env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "headwater.cli.main", self.command, "--port", str(self.port),
             "--data-dir", str(self.data_dir)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def _wait_healthy(self, timeout_s: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        with httpx.Client(verify=TRUST, timeout=1.0) as probe:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"server exited with {self.proc.returncode}: "
                        f"{self.log_path.read_text()[-3000:]}"
                    )
                try:
                    if probe.get(self.url + "/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        self.kill()  # not left running behind the error
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, key: str = ADMIN_KEY, **kw: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30.0,
            **{"verify": TRUST, **kw},
        )


READINGS = {
    "name": "readings",
    "fields": [
        {"name": "device_id", "type": "string", "required": True},
        {"name": "ts", "type": "timestamp", "required": True},
        {"name": "temperature", "type": "float", "min": -50, "max": 150},
        {"name": "status", "type": "string", "enum": ["ok", "warn", "error"]},
        {"name": "event_id", "type": "string"},
    ],
    "event_time": "ts",
    "key": ["device_id"],
    "id": "event_id",
}
