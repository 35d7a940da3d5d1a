"""What a Greengrass nucleus does for a local deployment, done for real without one.

``greengrass-cli deployment create --recipeDir R --artifactDir A --merge name=version --update-config ...`` makes
the nucleus: pick the recipe's manifest for this platform, copy each artifact from ``A/<name>/<version>/`` into
``<root>/packages/artifacts/<name>/<version>/`` checking its Digest, unpack ``Unarchive: ZIP`` artifacts into
``<root>/packages/artifacts-unarchived/<name>/<version>/<zip name>/``, merge the configuration, substitute the
recipe variables, then run ``install`` and ``run`` in the component's work folder ``<root>/work/<name>`` with the
step's ``Setenv``. :class:`LocalNucleus` does exactly that, and refuses any variable Nucleus Lite would not
substitute, so a recipe that passes here uses only what both nuclei support.

:meth:`LocalNucleus.ipc_client` is a component's ``GreengrassCoreIPCClientV2`` (the methods the service uses,
the SDK's keyword names and model objects) that authorizes every call as the nuclei do, from the component's
``accessControl`` in its merged configuration:

- a policy applies when its ``operations`` name the operation or ``*``; the call is allowed when one of its
  ``resources`` matches, else the SDK's ``UnauthorizedError`` (classic nucleus ``AuthorizationHandler.isAuthorized``;
  Lite ``ggipcd/src/ipc_authz.c``);
- ``aws.greengrass.ipc.mqttproxy`` matches resources MQTT-style: ``+`` filling a level matches one level, a
  trailing ``/#`` the level above and everything below, and ``*`` any characters; ``aws.greengrass.ipc.pubsub``
  matches plain strings where only ``*`` is a wildcard (``+`` and ``#`` are characters); ``${c}`` escapes a
  character in both (nucleus ``WildcardTrie.matchesMQTT`` / ``matchesStandard``; Lite ``mqttproxy.c``
  ``match_topic_filter`` and ``ggl_ipc_default_policy_matcher``);
- recipe variables such as ``{iot:thingName}`` in the configuration are substituted only by a classic nucleus
  2.6.0 or later whose ``interpolateComponentConfiguration`` is true (nucleus ``KernelConfigResolver``; default
  false); Nucleus Lite's released versions (up to 2.6.0) never substitute them (``docs/RECIPE_SUPPORT_CHANGES.md``:
  "Recipe variable interpolation for component configuration is not supported"). Otherwise they stay literal.

What stays unproven here: the nuclei's own code (this is a reimplementation of the rules above, not the Java
trie or the C matcher), principals other than the component itself, and everything IoT Core decides (the core
device's IoT policy, which keeps the nucleus' connection to this thing's topics).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

MQTT_PROXY = "aws.greengrass.ipc.mqttproxy"
PUBSUB = "aws.greengrass.ipc.pubsub"
#: The first classic nucleus that can substitute recipe variables in component configuration.
INTERPOLATION_SINCE = (2, 6, 0)
GG_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "aarch64", "arm64": "aarch64"}.get(platform.machine(), "")
_VARIABLE = re.compile(r"\{([A-Za-z]+:[^{}\s]*)\}")


def _config_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _policy_pattern(resource: str, mqtt_style: bool) -> re.Pattern[str]:
    """The regular expression a policy resource stands for under the matching rules in the module docstring."""
    out: list[str] = []
    i, n = 0, len(resource)
    while i < n:
        c = resource[i]
        if c == "$" and resource[i + 1:i + 2] == "{" and resource[i + 3:i + 4] == "}":  # ${c}: c, literally
            out.append(re.escape(resource[i + 2]))
            i += 4
            continue
        at_level_start = i == 0 or resource[i - 1] == "/"
        if c == "*":
            out.append(".*")
        elif mqtt_style and c == "+" and at_level_start and (i == n - 1 or resource[i + 1] == "/"):
            out.append("[^/]*")
        elif mqtt_style and c == "#" and i == n - 1 and at_level_start:
            if i == 0:
                out.append(".*")
            else:  # "a/#" matches "a" and everything below it
                out[-1:] = ["(?:/.*)?"]
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def resource_matches(policy_resource: str, requested: str, *, mqtt_style: bool) -> bool:
    return _policy_pattern(policy_resource, mqtt_style).fullmatch(requested) is not None


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 section 4.7: does a subscription's filter match a published topic."""
    f, t = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(f) == len(t)


def _unauthorized(message: str) -> Exception:
    try:
        from awsiot.greengrasscoreipc.model import UnauthorizedError
    except ImportError:  # the greengrass extra is not installed: the same name and message
        class UnauthorizedError(Exception):  # type: ignore[no-redef]
            pass
        return UnauthorizedError(message)
    return UnauthorizedError(message=message)


@dataclass
class Deployed:
    name: str
    version: str
    manifest: Mapping[str, Any]
    config: Mapping[str, Any]
    variables: Mapping[str, str]
    work: Path

    def authorize(self, service: str, operation: str, resource: str) -> None:
        """Allow the call as the nucleus would, or raise the SDK's ``UnauthorizedError``."""
        policies = (self.config.get("accessControl") or {}).get(service) or {}
        for policy in policies.values():
            operations = policy.get("operations") or []
            if operation in operations or "*" in operations:
                if any(resource_matches(r, resource, mqtt_style=service == MQTT_PROXY)
                       for r in policy.get("resources") or []):
                    return
        raise _unauthorized(f"Principal {self.name} is not authorized to perform {service}:{operation} on "
                            f"resource {resource}")

    def substitute(self, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            var = match.group(1)
            if var in self.variables:
                return self.variables[var]
            if var.startswith("configuration:/"):
                node: Any = self.config
                for part in var[len("configuration:/"):].split("/"):
                    if not isinstance(node, Mapping) or part not in node:
                        raise KeyError(f"{self.name}: {{{var}}} is not in the configuration")
                    node = node[part]
                return _config_text(node)
            raise KeyError(f"{self.name}: recipe variable {{{var}}} is not one the nucleus substitutes")
        return _VARIABLE.sub(replace, text)

    def step(self, name: str) -> tuple[str, dict[str, str], float]:
        """``(script, environment, timeout)`` of a lifecycle step, variables substituted."""
        lifecycle = self.manifest.get("Lifecycle", {})
        body = lifecycle[name]
        if isinstance(body, str):
            body = {"Script": body}
        env = {k: self.substitute(v) for k, v in {**lifecycle.get("Setenv", {}), **body.get("Setenv", {})}.items()}
        return self.substitute(body["Script"]), env, float(body.get("Timeout", 120))


class LocalNucleus:
    """A Greengrass root folder (``<root>/packages``, ``<root>/work``) and the deployment steps above.

    ``version`` / ``lite`` / ``interpolate_component_configuration`` say which nucleus this is (the default: a
    current classic nucleus with its default configuration). :attr:`iot_core` and :attr:`local` record what
    components published over IPC, in order.
    """

    def __init__(self, root: Path, thing: str, *, version: str = "2.14.0", lite: bool = False,
                 interpolate_component_configuration: bool = False) -> None:
        self.root = Path(root)
        self.thing = thing
        self.version, self.lite = version, lite
        self.interpolate_component_configuration = interpolate_component_configuration
        self.iot_core: list[dict[str, Any]] = []
        self.local: list[dict[str, Any]] = []
        self.subscriptions: list[_Subscription] = []
        for sub in ("packages/artifacts", "packages/artifacts-unarchived", "work"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @property
    def interpolates_configuration(self) -> bool:
        version = tuple(int(x) for x in self.version.split("-")[0].split("."))
        return not self.lite and self.interpolate_component_configuration and version >= INTERPOLATION_SINCE

    def deploy(self, recipe_dir: Path, artifact_dir: Path, name: str, version: str,
               config: Mapping[str, Any] | None = None) -> Deployed:
        recipe = json.loads((Path(recipe_dir) / f"{name}-{version}.json").read_text())
        assert recipe["ComponentName"] == name and recipe["ComponentVersion"] == version
        manifest = next(m for m in recipe["Manifests"]
                        if m["Platform"].get("os") == "linux" and m["Platform"].get("architecture") == GG_ARCH
                        and m["Platform"].get("runtime") in ("*", "aws_nucleus_lite"))
        artifacts = self.root / "packages" / "artifacts" / name / version
        unarchived = self.root / "packages" / "artifacts-unarchived" / name / version
        artifacts.mkdir(parents=True, exist_ok=True)
        unarchived.mkdir(parents=True, exist_ok=True)
        for artifact in manifest.get("Artifacts", []):
            filename = artifact["Uri"].rsplit("/", 1)[-1]
            target = artifacts / filename
            shutil.copyfile(Path(artifact_dir) / name / version / filename, target)
            digest = base64.b64encode(hashlib.sha256(target.read_bytes()).digest()).decode()
            if artifact.get("Algorithm") != "SHA-256" or digest != artifact.get("Digest"):
                raise ValueError(f"{name}: integrity check of {filename} failed")
            if artifact.get("Unarchive") == "ZIP":
                with zipfile.ZipFile(target) as zf:
                    zf.extractall(unarchived / Path(filename).stem)
        merged = {**recipe.get("ComponentConfiguration", {}).get("DefaultConfiguration", {}), **(config or {})}
        work = self.root / "work" / name
        work.mkdir(parents=True, exist_ok=True)
        variables = {"artifacts:path": str(artifacts), "artifacts:decompressedPath": str(unarchived),
                     "work:path": str(work), "kernel:rootPath": str(self.root), "iot:thingName": self.thing}
        if self.interpolates_configuration:
            merged = _substitute_all(merged, variables)
        return Deployed(name, version, manifest, merged, variables, work)

    # -- IPC -------------------------------------------------------------------------------------------------
    def ipc_client(self, component: Deployed) -> "IpcClient":
        """``component``'s IPC client (what ``GreengrassCoreIPCClientV2()`` gives it on a device)."""
        return IpcClient(self, component)

    def deliver_from_iot_core(self, topic: str, payload: bytes, *, response_topic: str | None = None,
                              correlation_data: bytes | None = None) -> int:
        """A message AWS IoT Core sends the core device: handed to each matching IoT Core subscription."""
        from awsiot.greengrasscoreipc import model

        message = model.IoTCoreMessage(message=model.MQTTMessage(
            topic_name=topic, payload=payload, response_topic=response_topic, correlation_data=correlation_data))
        return self._deliver("iotcore", topic, message)

    def publish_locally(self, topic: str, payload: bytes) -> int:
        """A message another component publishes on local pub/sub (binary)."""
        from awsiot.greengrasscoreipc import model

        event = model.SubscriptionResponseMessage(binary_message=model.BinaryMessage(
            message=payload, context=model.MessageContext(topic=topic)))
        return self._deliver("local", topic, event)

    def _deliver(self, kind: str, topic: str, event: Any) -> int:
        targets = [s for s in self.subscriptions if s.kind == kind and not s.closed and topic_matches(s.topic, topic)]
        for sub in targets:
            sub.on_event(event)
        return len(targets)

    def environment(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_INTENTS_", "PYTEST", "VIRTUAL_ENV"))}
        env["AWS_IOT_THING_NAME"] = self.thing  # set by Greengrass for every component
        env.update(extra)
        return env

    def install(self, component: Deployed) -> subprocess.CompletedProcess[str]:
        script, env, timeout = component.step("install")
        proc = subprocess.run(["bash", "-c", script], cwd=component.work, env=self.environment(env),
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{component.name} install failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                               f"{proc.stderr[-4000:]}")
        return proc

    def start(self, component: Deployed, log_path: Path) -> subprocess.Popen[bytes]:
        script, env, _ = component.step("run")
        log = open(log_path, "wb")
        try:
            return subprocess.Popen(["bash", "-c", script], cwd=component.work, env=self.environment(env),
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()


def _substitute_all(value: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: variables.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_substitute_all(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _substitute_all(v, variables) for k, v in value.items()}
    return value


@dataclass
class _Subscription:
    kind: str
    topic: str
    on_event: Callable[[Any], None]
    closed: bool = False

    def close(self) -> None:
        self.closed = True


@dataclass
class IpcClient:
    """The ``GreengrassCoreIPCClientV2`` methods the service uses, each authorized as the nucleus does."""

    nucleus: LocalNucleus
    component: Deployed
    closed: bool = False
    calls: list[str] = field(default_factory=list)

    def subscribe_to_iot_core(self, *, topic_name: str, qos: Any = None, stream_handler: Any = None,
                              on_stream_event: Any = None, on_stream_error: Any = None,
                              on_stream_closed: Any = None) -> tuple[Any, _Subscription]:
        from awsiot.greengrasscoreipc import model

        self.calls.append("SubscribeToIoTCore")
        self.component.authorize(MQTT_PROXY, "aws.greengrass#SubscribeToIoTCore", topic_name)
        sub = _Subscription("iotcore", topic_name, on_stream_event)
        self.nucleus.subscriptions.append(sub)
        return model.SubscribeToIoTCoreResponse(), sub

    def publish_to_iot_core(self, *, topic_name: str, qos: Any = None, payload: bytes = b"", retain: Any = None,
                            user_properties: Any = None, message_expiry_interval_seconds: Any = None,
                            correlation_data: Any = None, response_topic: Any = None, payload_format: Any = None,
                            content_type: Any = None) -> Any:
        from awsiot.greengrasscoreipc import model

        self.calls.append("PublishToIoTCore")
        self.component.authorize(MQTT_PROXY, "aws.greengrass#PublishToIoTCore", topic_name)
        self.nucleus.iot_core.append({"topic": topic_name, "payload": bytes(payload), "retain": bool(retain),
                                      "correlation_data": correlation_data, "qos": qos})
        return model.PublishToIoTCoreResponse()

    def subscribe_to_topic(self, *, topic: str, receive_mode: Any = None, stream_handler: Any = None,
                           on_stream_event: Any = None, on_stream_error: Any = None,
                           on_stream_closed: Any = None) -> tuple[Any, _Subscription]:
        from awsiot.greengrasscoreipc import model

        self.calls.append("SubscribeToTopic")
        self.component.authorize(PUBSUB, "aws.greengrass#SubscribeToTopic", topic)
        sub = _Subscription("local", topic, on_stream_event)
        self.nucleus.subscriptions.append(sub)
        return model.SubscribeToTopicResponse(), sub

    def publish_to_topic(self, *, topic: str, publish_message: Any = None) -> Any:
        from awsiot.greengrasscoreipc import model

        self.calls.append("PublishToTopic")
        self.component.authorize(PUBSUB, "aws.greengrass#PublishToTopic", topic)
        message = publish_message.binary_message or publish_message.json_message
        self.nucleus.local.append({"topic": topic, "payload": message.message})
        return model.PublishToTopicResponse()

    def get_configuration(self, *, component_name: str | None = None, key_path: list[str] | None = None) -> Any:
        """A component's own configuration (reading it needs no policy); other components' are not modelled."""
        from awsiot.greengrasscoreipc import model

        assert component_name in (None, self.component.name), "reading another component's configuration"
        value: Any = self.component.config
        for key in key_path or []:
            value = value[key]
        return model.GetConfigurationResponse(component_name=self.component.name, value=json.loads(json.dumps(value)))

    def close(self, *, executor_wait: bool = True) -> None:
        self.closed = True
