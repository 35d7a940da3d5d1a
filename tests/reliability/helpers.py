"""Helpers of the reliability tests: device certificates with a thing name as CN, a service over a real broker."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

from tests.edge_runtime.service.broker import OPENSSL, TlsFiles

#: A device may only take its own requests and answer / report on its own topics; an app identity
#: ``app-<thing>`` may send requests to that one thing and read its replies and status.
ACL_TEMPLATE = """\
pattern read cmd/intents/%u/request
pattern write cmd/intents/%u/response
pattern write cmd/intents/%u/response/#
pattern write dt/intents/%u/#
{apps}"""

APP_ACL = """\
user app-{thing}
topic write cmd/intents/{thing}/request
topic read cmd/intents/{thing}/response
topic read cmd/intents/{thing}/response/#
topic read dt/intents/{thing}/status
"""


def client_cert(tls: TlsFiles, cn: str) -> TlsFiles:
    """A client certificate with common name ``cn`` signed by the test CA of ``tls`` (same CA, same server)."""
    root = tls.ca.parent
    ext = root / "client.ext"

    def run(*args: str) -> None:
        subprocess.run([str(OPENSSL), *args], cwd=root, check=True, capture_output=True, timeout=60)

    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{cn}.key",
        "-out", f"{cn}.csr", "-subj", f"/CN={cn}")
    run("x509", "-req", "-in", f"{cn}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", f"{cn}.crt", "-days", "2", "-extfile", str(ext))
    return dataclasses.replace(tls, client_cert=root / f"{cn}.crt", client_key=root / f"{cn}.key")


def acl_config(workdir: Path, things: list[str]) -> str:
    """Mosquitto config lines: the certificate's CN is the user name, and the ACL file above applies."""
    workdir.mkdir(parents=True, exist_ok=True)
    acl = workdir / "acl"
    acl.write_text(ACL_TEMPLATE.format(apps="".join(APP_ACL.format(thing=t) for t in things)))
    return f"use_identity_as_username true\nacl_file {acl}\n"


def serve(cfg: Any, clf: Any) -> Any:
    from edge_runtime.service import IntentService
    from edge_runtime.service.runner import make_transport

    transport = make_transport(cfg)
    service = IntentService(cfg, clf, transport).start()
    assert transport.wait_connected(10), "the service did not connect"
    return service


class PersistentBroker:
    """Mosquitto on a fixed 127.0.0.1 port with on-disk persistence, so sessions and queued QoS 1 messages
    survive a stop and start (what a broker restart on a gateway looks like). Mosquitto's default limits (20 in
    flight, 1000 queued per client), as in :class:`tests.edge_runtime.service.broker.Mosquitto`."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        from tests.edge_runtime.service.broker import free_port

        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.proc: Any = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "PersistentBroker":
        import getpass
        import time

        from tests.edge_runtime.service.broker import MOSQUITTO, wait_port

        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\nallow_anonymous true\n"
                        f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 60\n"
                        "set_tcp_nodelay true\n"
                        f"log_dest file {self.workdir / 'mosquitto.log'}\nlog_type error\nlog_type warning\n")
        for _ in range(50):  # the port may linger a moment after a stop
            self.proc = subprocess.Popen([str(MOSQUITTO), "-c", str(conf)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
            if wait_port(self.port, 2, self.proc) and self.proc.poll() is None:
                self.starts += 1
                return self
            self._end(9)
            time.sleep(0.1)
        raise RuntimeError(f"mosquitto did not start on {self.port}")

    def stop(self, sig: int = 15) -> None:
        self._end(sig)

    def _end(self, sig: int) -> None:
        import os

        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, 9)
            proc.wait(5)


class PersistentClient:
    """An MQTT 5 requester with a persistent session (clean_start False, session expiry), QoS 1 both ways, so
    replies published while it is reconnecting wait for it in the broker. Records every reply by id."""

    def __init__(self, url: str, client_id: str, reply_topic: str) -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.replies: dict[str, int] = {}
        self.reply_times: dict[str, float] = {}
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.connections = 0
        self.reply_topic = reply_topic
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(0.2, 1)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a: self.connected.clear()
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self.subscribed.set()
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.connect(host, int(port), keepalive=10, clean_start=False, properties=props)
        c.loop_start()
        self.client = c
        if not self.connected.wait(10) or not self.subscribed.wait(10):
            raise TimeoutError("the requester could not connect and subscribe")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            return
        self.connections += 1
        if not getattr(flags, "session_present", False):
            client.subscribe(self.reply_topic, qos=1)
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        import json
        import time

        try:
            rid = str(json.loads(msg.payload)["id"])
        except (ValueError, KeyError, TypeError):
            rid = "?"
        with self.lock:
            self.replies[rid] = self.replies.get(rid, 0) + 1
            self.reply_times.setdefault(rid, time.perf_counter())

    def request(self, topic: str, rid: str, text: str) -> float:
        import json
        import time

        sent = time.perf_counter()
        self.client.publish(topic, json.dumps({"id": rid, "text": text}), qos=1)
        return sent

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
