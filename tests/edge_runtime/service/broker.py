"""Test (and benchmark) helpers: a real Mosquitto on a free loopback port, an MQTT 5 client, TLS files.

Everything binds to 127.0.0.1 only and is stopped by PID. The broker keeps Mosquitto's default limits (no
``max_inflight_messages`` or ``max_queued_messages`` line): at most 20 QoS 1 messages in flight to a client
unacknowledged, 1000 more queued (mosquitto.conf(5): "max_inflight_messages ... Defaults to 20",
"max_queued_messages ... Defaults to 1000"), so a message the service never acknowledges stalls delivery and fails
a test, as it would on a real gateway. ``extra`` adds config lines (a smaller window, debug logging).
"""

from __future__ import annotations

import getpass
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
OPENSSL = shutil.which("openssl")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


@dataclass(frozen=True)
class TlsFiles:
    """A test CA, a broker certificate for 127.0.0.1/localhost and a client certificate, all PEM."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(root: Path) -> TlsFiles:
    """Make the CA and the two certificates with the openssl command line (EC P-256, valid 2 days)."""
    if OPENSSL is None:
        raise RuntimeError("openssl is not installed")
    root.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([OPENSSL, *args], cwd=root, check=True, capture_output=True, timeout=60)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=edge-intents test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, cn, ext in (("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
                          ("client", "edge-intents-test-device", "extendedKeyUsage=clientAuth")):
        (root / f"{name}.ext").write_text(ext + "\nbasicConstraints=CA:FALSE\n")
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    return TlsFiles(root / "ca.crt", root / "server.crt", root / "server.key", root / "client.crt", root / "client.key")


class Mosquitto:
    """``mosquitto -c conf`` on a free 127.0.0.1 port; ``tls`` makes it require client certificates."""

    def __init__(self, workdir: Path, *, tls: TlsFiles | None = None, extra: str = "") -> None:
        """``extra``: more mosquitto.conf lines, e.g. ``"max_inflight_messages 2\n"`` or ``"log_type all\n"``."""
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.workdir = Path(workdir)
        self.tls = tls
        self.extra = extra
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "mosquitto.log"

    def delivery_counts(self, client_id: str) -> tuple[int, int]:
        """``(PUBLISH sent to, PUBACK received from)`` ``client_id``, from a log written with ``log_type all``."""
        text = self.log.read_text(errors="replace")
        return text.count(f"Sending PUBLISH to {client_id} ("), text.count(f"Received PUBACK from {client_id} (")

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            self.port = free_port()
            # as root, mosquitto would switch to the "mosquitto" user, who cannot read the test's files
            lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1", "allow_anonymous true",
                     "persistence false", "set_tcp_nodelay true", f"log_dest file {self.workdir / 'mosquitto.log'}",
                     "log_type error", "log_type warning"]
            if self.tls:
                lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.server_cert}", f"keyfile {self.tls.server_key}",
                          "require_certificate true"]
            conf = self.workdir / "mosquitto.conf"
            conf.write_text("\n".join(lines) + "\n" + self.extra)
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
            if wait_port(self.port, timeout, self.proc) and self.proc.poll() is None:
                return self
            self.stop()
        raise RuntimeError(f"mosquitto did not start; see {self.workdir / 'mosquitto.log'}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    correlation_data: bytes | None
    retain: bool
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


class Client:
    """A paho MQTT 5 client that subscribes to ``topics`` and queues everything it receives."""

    def __init__(self, url: str, client_id: str, topics: list[str], *, tls: TlsFiles | None = None,
                 with_cert: bool = True, timeout: float = 10.0) -> None:
        import paho.mqtt.client as mqtt

        self.inbox: queue.Queue[Received] = queue.Queue()
        self._kept: list[Received] = []
        self._subscribed = threading.Event()
        self._connected = threading.Event()
        self.refused: Any = None
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if tls is not None:
            import ssl

            c.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert) if with_cert else None,
                      keyfile=str(tls.client_key) if with_cert else None, cert_reqs=ssl.CERT_REQUIRED,
                      tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_connect = self._on_connect
        c.on_message = lambda client, userdata, msg: self.inbox.put(Received(
            msg.topic, bytes(msg.payload), getattr(msg.properties, "CorrelationData", None), bool(msg.retain),
            time.perf_counter()))
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_socket_open = lambda client, userdata, sock: sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._topics = topics
        self.client = c
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        c.connect(host, int(port), keepalive=30)
        c.loop_start()
        if not self._connected.wait(timeout):
            c.loop_stop()
            raise TimeoutError(f"client {client_id} could not connect to {url} ({self.refused})")
        if topics and not self._subscribed.wait(timeout):
            raise TimeoutError(f"client {client_id} got no SUBACK")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.refused = reason_code
            return
        if self._topics:
            client.subscribe([(t, 1) for t in self._topics])
        self._connected.set()

    def publish(self, topic: str, payload: bytes | str | dict, *, response_topic: str | None = None,
                correlation_data: bytes | None = None, qos: int = 1, wait: bool = False) -> float:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        if isinstance(payload, dict):
            payload = json.dumps(payload)
        props = None
        if response_topic is not None or correlation_data is not None:
            props = Properties(PacketTypes.PUBLISH)
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if correlation_data is not None:
                props.CorrelationData = correlation_data
        sent = time.perf_counter()
        info = self.client.publish(topic, payload, qos=qos, properties=props)
        if wait:
            info.wait_for_publish(10)
        return sent

    def get(self, timeout: float = 10.0, *, topic: str | None = None) -> Received:
        """The next message (on ``topic``, if given); messages on other topics are kept for later calls."""
        for i, kept in enumerate(self._kept):
            if topic is None or kept.topic == topic:
                return self._kept.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"nothing received on {topic or 'any topic'}")
            try:
                msg = self.inbox.get(timeout=left)
            except queue.Empty:
                raise TimeoutError(f"nothing received on {topic or 'any topic'}") from None
            if topic is None or msg.topic == topic:
                return msg
            self._kept.append(msg)

    def collect(self, count: int, timeout: float = 10.0, *, topic: str | None = None) -> list[Received]:
        return [self.get(timeout, topic=topic) for _ in range(count)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
