"""Starting ``headwater serve``: the admin key, a taken port, a taken data dir, a clean exit."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from serverproc import ADMIN_KEY, READINGS, Server, free_port

KEY_RE = re.compile(r"│\s*(hw_[\w-]{20,})\s*│")


def headwater(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    return subprocess.run(
        [sys.executable, "-m", "headwater.cli.main", *args],
        env={**environ, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_a_taken_port_costs_one_line_and_creates_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = headwater("serve", "--port", str(port), "--data-dir", str(tmp_path / "data"))
    assert done.returncode != 0
    assert done.stdout == ""
    [line] = lines(done.stderr)
    assert f"port {port}" in line and "in use" in line
    assert "--port" in line and "HEADWATER_PORT" in line
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(("host", "port", "says"), [
    ("127.0.0.1", "99999", "out of range"),
    ("127.0.0.1", "0", "out of range"),
    ("192.0.2.1", "8000", "cannot listen on 192.0.2.1:8000"),
    ("no-such-host.invalid", "8000", "cannot listen on 'no-such-host.invalid'"),
])  # fmt: skip
def test_an_address_it_cannot_listen_on_costs_one_line(
    tmp_path: Path, host: str, port: str, says: str
) -> None:
    done = headwater("serve", "--host", host, "--port", port, "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 1
    [line] = lines(done.stdout + done.stderr)
    assert says in line
    assert not (tmp_path / "d").exists()


def test_a_second_server_on_the_same_data_dir_costs_one_line(tmp_path: Path) -> None:
    first = Server(tmp_path / "data").start()
    try:
        done = headwater("serve", "--port", str(free_port()), "--data-dir", str(first.data_dir))
        assert done.returncode != 0
        [line] = lines(done.stdout + done.stderr)
        assert str(first.data_dir) in line and "--data-dir" in line
        assert first.proc is not None and f"pid {first.proc.pid}" in line
        assert httpx.get(first.url + "/health").status_code == 200  # the first one serves on
    finally:
        first.stop()


def test_first_start_frames_the_key_and_keeps_it_in_an_owner_only_file(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", bootstrap_key=None).start()
    try:
        out = srv.log_path.read_text()
        [key] = KEY_RE.findall(out)
        key_file = srv.data_dir / "admin.key"
        assert key_file.read_text().strip() == key
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        # the key comes at the end of start-up, right before the line saying it listens
        *_, framed, saved, listening = lines(out)
        assert framed.startswith("╰") and listening.startswith("Headwater listening on")
        assert saved == f"Admin key: in {key_file.resolve()} (readable by you only)"
        with srv.client(key) as c:
            assert c.get("/v1/streams").status_code == 200
    finally:
        srv.stop()
    srv.log_path.write_text("")
    srv.start()  # a restart says where the key is, and does not print it again
    try:
        out = srv.log_path.read_text()
        assert f"Admin key: in {key_file.resolve()}" in out
        assert key not in out
        with srv.client(key) as c:
            assert c.get("/v1/streams").status_code == 200
    finally:
        srv.stop()


def test_keys_create_makes_keys_a_running_server_accepts(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data").start()
    try:
        keys = {}
        for role in ("admin", "writer", "reader"):
            done = headwater("keys", "create", "--role", role, "--data-dir", str(srv.data_dir))
            assert done.returncode == 0, done.stderr
            [keys[role]] = lines(done.stdout)
            assert role in done.stderr and "nanobind" not in done.stderr
        with srv.client(keys["admin"]) as c:
            assert c.post("/v1/streams", json=READINGS).status_code == 201
        row = {"device_id": "d1", "ts": "2026-11-21T10:00:00Z", "temperature": 21.5}
        with srv.client(keys["writer"]) as c:
            assert c.post("/v1/streams/readings/events", json=row).json()["accepted"] == 1
        with srv.client(keys["reader"]) as c:
            assert c.get("/v1/streams/readings").status_code == 200
            assert c.post("/v1/streams", json={**READINGS, "name": "x"}).status_code == 403
        with srv.client(ADMIN_KEY) as c:  # HEADWATER_BOOTSTRAP_KEY still works
            assert c.get("/v1/streams").status_code == 200
    finally:
        srv.stop()


def test_keys_create_says_what_is_wrong(tmp_path: Path) -> None:
    done = headwater("keys", "create", "--role", "admin", "--data-dir", str(tmp_path / "none"))
    assert done.returncode == 1 and done.stdout == ""
    assert "no catalog" in done.stderr and not (tmp_path / "none").exists()
    srv = Server(tmp_path / "data").start()
    srv.stop()
    done = headwater("keys", "create", "--role", "admin", "--tenant", "nope", "--data-dir",
                     str(srv.data_dir))  # fmt: skip
    assert done.returncode == 1 and "'nope'" in done.stderr and "default" in done.stderr
    done = headwater("keys", "create", "--role", "root", "--data-dir", str(srv.data_dir))
    assert done.returncode == 2 and "root" in done.stderr


def test_ctrl_c_shuts_down_quietly(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", command="demo").start()
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGINT)
    assert srv.proc.wait(30) == 130
    out = srv.log_path.read_text()
    assert "nanobind" not in out and "Traceback" not in out and "Aborted" not in out


def test_sigterm_shuts_down_quietly(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", command="demo").start()
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(30) == -signal.SIGTERM
    out = srv.log_path.read_text()
    assert "nanobind" not in out and "Traceback" not in out


def test_bad_settings_cost_one_line_each_and_create_nothing(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    bad_toml, unknown = tmp_path / "bad.toml", tmp_path / "unknown.toml"
    bad_toml.write_text("port = [\n")
    unknown.write_text("prot = 8000\n")
    cases = [
        (["serve", "--data-dir", data], {"HEADWATER_PORT": "abc"}, "HEADWATER_PORT"),
        (["serve", "--config", str(unknown), "--data-dir", data], {}, "unknown setting 'prot'"),
        (["serve", "--config", str(bad_toml), "--data-dir", data], {}, "not valid TOML"),
        (["demo", "--config", str(tmp_path / "none.toml")], {}, "cannot read the config file"),
        (["keys", "create", "--role", "admin"], {"HEADWATER_FSYNC": "maybe"}, "setting fsync"),
    ]
    for args, env, says in cases:
        done = headwater(*args, **env)
        assert done.returncode == 2, (args, done.stderr)
        [line] = lines(done.stdout + done.stderr)
        assert says in line, line
    assert not (tmp_path / "data").exists()
