"""``--tls-cert`` / ``--tls-key`` serve the API over HTTPS."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serverproc import ADMIN_KEY, Server


def trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


class TLSServer(Server):
    """A ``headwater serve --tls-cert C --tls-key K`` process, reached over https."""

    def __init__(self, data_dir: Path, cert: Path, key: Path) -> None:
        super().__init__(data_dir)
        self.cert, self.key = cert, key
        self.url = f"https://127.0.0.1:{self.port}"

    def _spawn(self, env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "headwater.cli.main", "serve", "--port", str(self.port),
             "--data-dir", str(self.data_dir), "--tls-cert", str(self.cert),
             "--tls-key", str(self.key)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def _wait_healthy(self, timeout_s: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        with httpx.Client(verify=trusting(self.cert)) as probe:
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    if probe.get(self.url + "/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    srv = TLSServer(where / "data", cert, key)
    try:
        yield srv.start()
    finally:
        srv.stop()


def test_the_api_answers_over_https(tls_server: TLSServer) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=tls_server.url, verify=trusting(tls_server.cert)) as c:
        assert c.get("/health").json() == {"status": "ok"}
        r = c.get("/v1/streams", headers=headers)
    assert r.status_code == 200, r.text


def test_plain_http_gets_no_answer_on_the_tls_port(tls_server: TLSServer) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{tls_server.port}/health", timeout=5)


def test_a_certificate_without_its_key_is_refused_at_start(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "headwater.cli.main", "serve", "--port", "1",
         "--data-dir", str(tmp_path / "data"), "--tls-cert", str(tmp_path / "cert.pem")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0
    assert "tls_key" in out.stderr
