"""The service's configuration: one frozen :class:`ServiceConfig`, assembled by :func:`from_sources`.

Sources, lowest precedence first (a later source overrides an earlier one, field by field):

1. the defaults of :class:`ServiceConfig`;
2. the Greengrass component configuration (``DefaultConfiguration`` merged with the deployment's), read
   through IPC only when the transport is ``ipc``; keys in CamelCase (``MaxTextChars``); ``accessControl``
   and unknown keys are ignored (a newer deployment may carry keys this version does not know);
3. a JSON file (``--config FILE``): an object whose keys are field names (``max_text_chars``) or CamelCase;
   unknown keys are errors there (a typo must not pass silently);
4. environment variables ``EDGE_INTENTS_<FIELD>`` (``EDGE_INTENTS_MAX_TEXT_CHARS=256``); the thing name also
   from ``AWS_IOT_THING_NAME``, which Greengrass sets for every component;
5. command-line flags (``--max-text-chars 256``).

Every outside name is derived from the field name (flag ``--max-text-chars``, environment
``EDGE_INTENTS_MAX_TEXT_CHARS``, component key ``MaxTextChars``), so a field is declared once, here.
Environment variables are read only inside :func:`from_sources`.

Example::

    cfg = from_sources({"bundle": "edge/3", "thing": "kitchen-pi"}, env={})
    cfg.max_batch            # 32
    cfg.with_changes(max_batch=1).max_batch
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from .errors import ConfigError
from .protocol import RESPONSE_TOPIC, valid_thing_name

__all__ = ["TransportKind", "IpcTarget", "ServiceConfig", "from_sources", "add_arguments", "flags_from_namespace",
           "ENV_PREFIX", "component_key", "env_name"]

ENV_PREFIX = "EDGE_INTENTS_"
_GREENGRASS_THING_ENV = "AWS_IOT_THING_NAME"


class TransportKind(str, enum.Enum):
    """How requests arrive: an MQTT broker, or Greengrass IPC."""

    MQTT = "mqtt"
    IPC = "ipc"


class IpcTarget(str, enum.Enum):
    """Under IPC: AWS IoT Core through the nucleus' MQTT proxy, or Greengrass local publish/subscribe."""

    IOTCORE = "iotcore"
    LOCAL = "local"


# --- value parsers: each takes a raw value (a JSON value or a string) and returns the typed one -----------------

def _str(v: Any) -> str:
    if not isinstance(v, (str, int, float)) or isinstance(v, bool):
        raise ValueError(f"expected a string, got {type(v).__name__}")
    return str(v).strip()


def _opt_str(v: Any) -> str | None:
    s = _str(v) if v is not None else ""
    return s or None


def _int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(v, float):
        if not v.is_integer():
            raise ValueError(f"expected an integer, got {v}")
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            # Greengrass may render a configuration number as "512.0" in a recipe variable
            return _int(float(v.strip()))
    raise ValueError(f"expected an integer, got {type(v).__name__}")


def _float(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        return float(v.strip())
    raise ValueError(f"expected a number, got {type(v).__name__}")


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
        return v.strip().lower() in ("1", "true", "yes", "on")
    raise ValueError(f"expected true or false, got {v!r}")


def _opt_threads(v: Any) -> int | None:
    n = _int(v) if v not in (None, "") else 0
    if n < 0:
        raise ValueError("must be >= 0 (0: one per physical core)")
    return n or None


def _opt_threshold(v: Any) -> float | None:
    if v in (None, ""):
        return None
    x = _float(v)
    if not 0.0 <= x <= 1.0:
        raise ValueError("must be between 0 and 1")
    return x or None


def _str_tuple(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        items = [s.strip() for s in v.split(",")]
    elif isinstance(v, (list, tuple)):
        items = [_str(s) for s in v]
    else:
        raise ValueError(f"expected a list of strings or a comma-separated string, got {type(v).__name__}")
    return tuple(s for s in items if s)


def _enum(cls: type[enum.Enum]) -> Callable[[Any], Any]:
    def parse(v: Any) -> Any:
        try:
            return cls(_str(v).lower())
        except ValueError:
            raise ValueError(f"expected one of {[m.value for m in cls]}, got {v!r}") from None
    return parse


def _opt(help: str, default: Any, parse: Callable[[Any], Any], *, metavar: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "parse": parse, "metavar": metavar})


@dataclass(frozen=True)
class ServiceConfig:
    """Everything ``python -m edge_runtime serve`` needs; see the module docstring for where values come from."""

    bundle: str = _opt("edge bundle directory (required)", "", _str, metavar="DIR")
    thing: str = _opt("AWS IoT thing name of this device; fills <thing> in the topics (required)", "", _str,
                      metavar="NAME")
    transport: TransportKind = _opt("mqtt (a broker) or ipc (Greengrass IPC)", TransportKind.MQTT, _enum(TransportKind))
    broker: str = _opt("broker URL: mqtt://HOST[:PORT] (plain TCP) or mqtts://HOST[:PORT] (TLS, mutual with --cert/--key)",
                       "mqtt://127.0.0.1:1883", _str, metavar="URL")
    ca: str | None = _opt("CA certificate (PEM) that signed the broker's certificate (mqtts://)", None, _opt_str,
                          metavar="FILE")
    cert: str | None = _opt("client certificate (PEM) for mutual TLS", None, _opt_str, metavar="FILE")
    key: str | None = _opt("client private key (PEM) for mutual TLS", None, _opt_str, metavar="FILE")
    require_mtls: bool = _opt("production: refuse an mqtt broker unless it is mqtts:// with --ca, --cert and --key",
                              False, _bool)
    bundle_public_key: str | None = _opt("Ed25519 public key (PEM) the bundle must be signed with; unsigned or "
                                         "badly signed bundles are refused (needs the 'signing' extra)", None,
                                         _opt_str, metavar="FILE")
    client_id: str | None = _opt("MQTT client id (default: the thing name, which AWS IoT thing policy variables "
                                 "need); stable, so the session persists", None, _opt_str)
    keepalive_s: int = _opt("MQTT keep-alive in seconds", 30, _int)
    session_expiry_s: int = _opt("MQTT 5 session expiry in seconds: requests published while the service is away "
                                 "are kept by the broker this long", 3600, _int)
    reconnect_min_s: int = _opt("first reconnect delay in seconds (doubles up to --reconnect-max-s)", 1, _int)
    reconnect_max_s: int = _opt("longest reconnect delay in seconds", 30, _int)
    ipc_target: IpcTarget = _opt("under IPC: iotcore (MQTT proxy to AWS IoT Core) or local (Greengrass pub/sub)",
                                 IpcTarget.IOTCORE, _enum(IpcTarget))
    backend: str = _opt("inference backend: auto, onnxruntime, dlr or fake", "auto", _str)
    threads: int | None = _opt("intra-op threads (0: one per physical core)", None, _opt_threads)
    threshold: float | None = _opt("answer 'unknown' below this confidence (0: never)", None, _opt_threshold)
    top_k: int = _opt("labels listed in 'top'", 3, _int)
    max_text_chars: int = _opt("longest text accepted, in characters (text_too_long above)", 512, _int)
    max_texts: int = _opt("most texts in one request (too_many_texts above)", 32, _int)
    max_payload_bytes: int = _opt("largest request payload in bytes (payload_too_large above)", 65536, _int)
    queue_size: int = _opt("requests waiting for the model at most (overloaded above)", 256, _int)
    batch_window_ms: float = _opt("under load, how long a batch waits for more requests, in ms", 5.0, _float)
    max_batch: int = _opt("most texts per model call", 32, _int)
    workers: int = _opt("batches run through the model at the same time (replies still go out in order of arrival); "
                        "more than 1 can pay on a device with more cores than the model's threads use", 1, _int)
    reply_prefixes: tuple[str, ...] = _opt(
        "topics a request's MQTT 5 response topic may lie under (comma-separated; {thing} is filled in)",
        (RESPONSE_TOPIC,), _str_tuple)
    status_interval_s: float = _opt("seconds between status messages", 60.0, _float)
    bundle_poll_s: float = _opt("seconds between looks at the bundle directory: a changed bundle (files or the "
                                "target of a symlink) is verified and swapped in without a restart (0: only on "
                                "SIGHUP)", 0.0, _float)
    drain_timeout_s: float = _opt("on SIGTERM, how long to wait for in-flight requests, in seconds", 5.0, _float)
    max_request_age_s: float = _opt("a request whose 'ts' is older than this many seconds is not answered (counted as "
                                    "expired; 0: any age)", 0.0, _float)
    telemetry_interval: float = _opt("seconds between telemetry messages on dt/intents/<thing>/telemetry "
                                     "(0: no telemetry)", 60.0, _float, metavar="SECONDS")
    spool_path: str | None = _opt("SQLite file that holds telemetry while the broker is unreachable (default: "
                                  "<tmp>/edge-intents/<thing>/telemetry-spool.sqlite; on a device use persistent storage)",
                                  None, _opt_str, metavar="FILE")
    spool_max_messages: int = _opt("most telemetry messages kept while offline; the oldest are dropped (and counted) "
                                   "beyond it", 10000, _int)
    sample_rate: float = _opt("fraction of requests whose raw texts are published with the outputs, for shadow "
                              "comparison in the cloud (0: raw texts never leave the device)", 0.0, _float)
    max_samples: int = _opt("most sampled texts per telemetry window", 100, _int)
    drift_psi: float = _opt("drift alert when a signal's population stability index exceeds this", 0.25, _float)
    drift_js: float = _opt("drift alert when a signal's Jensen-Shannon distance exceeds this", 0.3, _float)
    drift_unknown_rate_delta: float = _opt("drift alert when the [UNK] token rate exceeds the reference's by this",
                                           0.05, _float)
    drift_min_requests: int = _opt("telemetry windows with fewer requests are not judged for drift", 50, _int)
    shadow_bundle: str | None = _opt("candidate bundle run in shadow on the same requests, off the reply path; its "
                                     "disagreements are published on the telemetry topic", None, _opt_str,
                                     metavar="DIR")
    shadow_queue_size: int = _opt("requests waiting for the shadow model at most (beyond: skipped, counted)", 256,
                                  _int)
    log_level: str = _opt("logging level", "INFO", _str)

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ConfigError("invalid service configuration: " + "; ".join(problems))

    def _problems(self):  # type: ignore[no-untyped-def]
        if not self.bundle:
            yield "bundle is required (--bundle, EDGE_INTENTS_BUNDLE)"
        if not self.thing:
            yield "thing is required (--thing, EDGE_INTENTS_THING or AWS_IOT_THING_NAME)"
        elif not valid_thing_name(self.thing):
            yield f"thing {self.thing!r} is not a valid thing name (letters, digits, ':', '_', '-'; at most 128)"
        for name in ("keepalive_s", "top_k", "max_text_chars", "max_texts", "max_payload_bytes", "queue_size",
                     "max_batch", "workers", "reconnect_min_s", "reconnect_max_s"):
            if getattr(self, name) < 1:
                yield f"{name} must be >= 1, got {getattr(self, name)}"
        for name in ("session_expiry_s", "batch_window_ms", "drain_timeout_s", "bundle_poll_s", "max_request_age_s"):
            if getattr(self, name) < 0:
                yield f"{name} must be >= 0, got {getattr(self, name)}"
        if self.telemetry_interval < 0:
            yield f"telemetry_interval must be >= 0, got {self.telemetry_interval}"
        if not 0.0 <= self.sample_rate <= 1.0:
            yield f"sample_rate must be between 0 and 1, got {self.sample_rate}"
        for name in ("spool_max_messages", "max_samples", "drift_min_requests", "shadow_queue_size"):
            if getattr(self, name) < 1:
                yield f"{name} must be >= 1, got {getattr(self, name)}"
        if self.status_interval_s <= 0:
            yield f"status_interval_s must be > 0, got {self.status_interval_s}"
        if self.reconnect_max_s < self.reconnect_min_s:
            yield "reconnect_max_s must be >= reconnect_min_s"
        if self.transport is TransportKind.MQTT:
            yield from _broker_problems(self.broker, self.ca, self.cert, self.key)
            if self.require_mtls and not (self.broker.startswith("mqtts://") and self.ca and self.cert and self.key):
                yield "require_mtls: the broker must be mqtts:// with ca, cert and key (mutual TLS)"
        if self.bundle_public_key and not Path(self.bundle_public_key).is_file():
            yield f"bundle_public_key file {self.bundle_public_key} does not exist"
        if not self.reply_prefixes:
            yield "reply_prefixes must name at least one topic prefix"
        for p in self.reply_prefixes:
            if any(c in p for c in "+#") or p.startswith("$"):
                yield f"reply prefix {p!r} must not contain wildcards or start with '$'"

    # -- derived values -------------------------------------------------------------------------------------
    @property
    def mqtt_client_id(self) -> str:
        # AWS IoT resolves ${iot:Connection.Thing.ThingName} only for a client id equal to the thing name
        # (infra/iot.yaml); https://docs.aws.amazon.com/iot/latest/developerguide/thing-policy-variables.html
        return self.client_id or self.thing

    @property
    def allowed_reply_prefixes(self) -> tuple[str, ...]:
        return tuple(p.replace("{thing}", self.thing) for p in self.reply_prefixes)

    @property
    def broker_address(self) -> tuple[str, str, int]:
        """``(scheme, host, port)`` of :attr:`broker`."""
        parts = urlsplit(self.broker)
        return parts.scheme, parts.hostname or "", parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def batch_window_s(self) -> float:
        return self.batch_window_ms / 1000.0

    def with_changes(self, **changes: Any) -> "ServiceConfig":
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.value if isinstance(v, enum.Enum) else list(v) if isinstance(v, tuple) else v
        return out


def _broker_problems(url: str, ca: str | None, cert: str | None, key: str | None):  # type: ignore[no-untyped-def]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        yield f"broker {url!r} is not a URL ({exc})"
        return
    if parts.scheme not in ("mqtt", "mqtts"):
        yield f"broker {url!r} must start with mqtt:// or mqtts://"
    if not parts.hostname:
        yield f"broker {url!r} has no host"
    if port is not None and not 0 < port < 65536:
        yield f"broker port {port} is out of range"
    if (cert is None) != (key is None):
        yield "mutual TLS needs both cert and key"
    if (cert or key or ca) and parts.scheme != "mqtts":
        yield "ca / cert / key are for mqtts:// brokers"
    for name, path in (("ca", ca), ("cert", cert), ("key", key)):
        if path and not Path(path).is_file():
            yield f"{name} file {path} does not exist"


_FIELDS = {f.name: f for f in dataclasses.fields(ServiceConfig)}


def component_key(name: str) -> str:
    """``max_text_chars`` -> ``MaxTextChars`` (Greengrass configuration keys)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def env_name(name: str) -> str:
    """``max_text_chars`` -> ``EDGE_INTENTS_MAX_TEXT_CHARS``."""
    return ENV_PREFIX + name.upper()


_BY_COMPONENT_KEY = {component_key(n): n for n in _FIELDS}


def _parse(name: str, raw: Any, source: str) -> Any:
    try:
        return _FIELDS[name].metadata["parse"](raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: {name} = {raw!r}: {exc}") from None


def _from_mapping(data: Mapping[str, Any], source: str, *, strict: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in data.items():
        name = key if key in _FIELDS else _BY_COMPONENT_KEY.get(key)
        if name is None:
            if strict:
                raise ConfigError(f"{source}: unknown key {key!r} (known: {', '.join(sorted(_FIELDS))})")
            continue
        out[name] = _parse(name, raw, source)
    return out


def from_sources(flags: Mapping[str, Any] | None = None, *, file: str | os.PathLike[str] | None = None,
                 env: Mapping[str, str] | None = None,
                 component: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None) -> ServiceConfig:
    """Merge the sources (see the module docstring) into one validated :class:`ServiceConfig`.

    ``flags`` maps field names to values given on the command line (absent: not given). ``env`` defaults to
    ``os.environ``. ``component`` is the Greengrass component configuration, or a function returning it, which
    is called only when the merged transport is ``ipc``. Raises :class:`ConfigError` naming the field and source.
    """
    environ = os.environ if env is None else env
    layers: list[dict[str, Any]] = []
    if file is not None:
        path = Path(file)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"config file {path} is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a JSON object")
        layers.append(_from_mapping(data, f"config file {path}", strict=True))
    env_values: dict[str, Any] = {}
    if environ.get(_GREENGRASS_THING_ENV):
        env_values["thing"] = _parse("thing", environ[_GREENGRASS_THING_ENV], _GREENGRASS_THING_ENV)
    for name in _FIELDS:
        if env_name(name) in environ:
            env_values[name] = _parse(name, environ[env_name(name)], env_name(name))
    layers.append(env_values)
    layers.append(_from_mapping(dict(flags or {}), "command line", strict=True))

    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    if component is not None and merged.get("transport") is TransportKind.IPC:
        values = component() if callable(component) else component
        from_component = _from_mapping(dict(values or {}), "component configuration", strict=False)
        merged = {**from_component, **merged}
    return ServiceConfig(**merged)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` and one ``--<field>`` flag per field; values stay strings until :func:`from_sources`."""
    parser.add_argument("--config", dest="config_file", default=None, metavar="FILE",
                        help="JSON file of settings (keys: the long option names with underscores)")
    for f in dataclasses.fields(ServiceConfig):
        default = f.default.value if isinstance(f.default, enum.Enum) else f.default
        shown = ",".join(default) if isinstance(default, tuple) else default
        help_text = f.metadata["help"] + (f" (default: {shown})" if shown not in (None, "") else "")
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=argparse.SUPPRESS,
                            metavar=f.metadata.get("metavar") or f.name.upper(), help=help_text.replace("%", "%%"))


def flags_from_namespace(ns: argparse.Namespace) -> dict[str, Any]:
    """The fields given on the command line (flags left out are absent, not defaults)."""
    return {name: getattr(ns, name) for name in _FIELDS if getattr(ns, name, None) is not None}
