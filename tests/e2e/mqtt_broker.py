"""A private Mosquitto broker on a free port, and a QoS 1 publisher, for source tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from paho.mqtt.client import Client, MQTTMessageInfo
from paho.mqtt.enums import CallbackAPIVersion

from serverproc import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Broker:
    """``mosquitto`` with no limit on in-flight or queued QoS 1 messages (the defaults, 20
    in flight and 1000 queued per client, would drop messages queued while the consumer
    is down and throttle a consumer that acks in batches)."""

    def __init__(self, workdir: Path, secure: bool = False) -> None:
        """``secure``: TLS with a CA made here (``ca_file``) and user ``ann``/``s3cret``."""
        self.port = free_port()
        self.url = f"{'mqtts' if secure else 'mqtt'}://127.0.0.1:{self.port}"
        conf = workdir / f"mosquitto-{self.port}.conf"
        text = (
            f"user root\nlistener {self.port} 127.0.0.1\n"
            "max_inflight_messages 0\nmax_queued_messages 0\npersistence false\n"
        )
        if secure:
            self.ca_file = str(_certificates(workdir))
            pw = workdir / "passwords"
            subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "ann", "s3cret"], check=True)
            text += (f"cafile {workdir / 'ca.crt'}\ncertfile {workdir / 'server.crt'}\n"
                     f"keyfile {workdir / 'server.key'}\nallow_anonymous false\n"
                     f"password_file {pw}\n")  # fmt: skip
        else:
            text += "allow_anonymous true\n"
        conf.write_text(text)
        self.conf = conf
        self.log = open(workdir / f"mosquitto-{self.port}.log", "wb")  # noqa: SIM115
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=self.log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        self.kill()
        self.log.close()


def _certificates(d: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "1", "-subj", "/CN=headwater-test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "san.ext")  # fmt: skip
    return d / "ca.crt"


def publish(port: int, messages: Iterable[tuple[str, bytes]], secure: Broker | None = None) -> int:
    """Publish with QoS 1 and wait until the broker has acknowledged every message."""
    c = Client(CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
    if secure is not None:
        c.tls_set(ca_certs=secure.ca_file)
        c.username_pw_set("ann", "s3cret")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    sent, infos = 0, []
    for topic, payload in messages:
        infos.append(c.publish(topic, payload, qos=1))
        if len(infos) == 20_000:  # message ids are 16 bits: wait before they wrap
            sent += _settle(infos)
    sent += _settle(infos)
    c.disconnect()
    c.loop_stop()
    return sent


def _settle(infos: list[MQTTMessageInfo]) -> int:
    for info in infos:
        info.wait_for_publish(30)
    n = len(infos)
    infos.clear()
    return n
