"""AWS IoT Core policy evaluation for tests: the policy documents of infra/ judged against MQTT operations.

The rules, as the AWS IoT Core developer guide gives them:

- A request is allowed when some attached policy has an ``Allow`` statement matching its action and resource (and
  whose ``Condition`` holds), and no statement ``Deny``s it: an explicit deny wins, no match is a deny
  (https://docs.aws.amazon.com/iot/latest/developerguide/iot-policies.html).
- The MQTT operations and what they are checked as
  (https://docs.aws.amazon.com/iot/latest/developerguide/iot-action-resources.html): CONNECT ``iot:Connect`` on
  ``client/<client id>``, and, for a last will, ``iot:Publish`` (plus ``iot:RetainPublish`` when the will is
  retained) on ``topic/<will topic>``; PUBLISH ``iot:Publish`` on ``topic/<topic>`` (plus ``iot:RetainPublish``
  for a retained message, https://docs.aws.amazon.com/iot/latest/developerguide/mqtt.html#mqtt-retain);
  SUBSCRIBE ``iot:Subscribe`` on ``topicfilter/<filter>``; each delivered message ``iot:Receive`` on
  ``topic/<topic>``.
- Resources: ``*`` matches any characters (``/`` included) and ``?`` one; MQTT's ``+`` and ``#`` are literal
  characters in a policy (https://docs.aws.amazon.com/iot/latest/developerguide/iot-policy-variables.html).
  Actions match case-insensitively, with the same wildcards.
- ``${iot:ClientId}`` is the connection's client id; ``${iot:Connection.Thing.ThingName}`` and
  ``iot:Connection.Thing.IsAttached`` come from the thing named by the client id, which must be a thing the
  certificate is attached to (non-exclusive thing association, the default); otherwise the thing variables are
  not resolved and a statement that uses them matches nothing
  (https://docs.aws.amazon.com/iot/latest/developerguide/thing-policy-variables.html).

Not modelled (the templates use none of it; :func:`evaluate` refuses what it does not know rather than guess):
condition operators other than ``Bool`` and ``StringEquals``, ``NotAction``/``NotResource``, other variables,
``$(*)``-style escapes, exclusive thing association (where the thing comes from the certificate alone).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

REGION, ACCOUNT, PARTITION = "eu-west-1", "123456789012", "aws"
PREFIX = f"arn:{PARTITION}:iot:{REGION}:{ACCOUNT}:"


@dataclass(frozen=True)
class Connection:
    """One MQTT connection: the client id it asked for and the things its certificate is attached to."""

    client_id: str
    certificate_things: frozenset[str] = field(default_factory=frozenset)

    @property
    def thing(self) -> str | None:
        return self.client_id if self.client_id in self.certificate_things else None

    def variables(self) -> dict[str, str | None]:
        return {"iot:ClientId": self.client_id, "iot:Connection.Thing.ThingName": self.thing,
                "iot:Connection.Thing.IsAttached": "true" if self.thing else "false"}


@dataclass(frozen=True)
class Check:
    """One authorization check: ``action`` on ``resource`` (an ARN)."""

    action: str
    resource: str


def connect(client_id: str, *, will_topic: str | None = None, will_retain: bool = False) -> list[Check]:
    checks = [Check("iot:Connect", PREFIX + f"client/{client_id}")]
    if will_topic is not None:
        checks += publish(will_topic, retain=will_retain)
    return checks


def publish(topic: str, *, retain: bool = False) -> list[Check]:
    checks = [Check("iot:Publish", PREFIX + f"topic/{topic}")]
    return checks + ([Check("iot:RetainPublish", PREFIX + f"topic/{topic}")] if retain else [])


def subscribe(topic_filter: str) -> list[Check]:
    return [Check("iot:Subscribe", PREFIX + f"topicfilter/{topic_filter}")]


def receive(topic: str) -> list[Check]:
    return [Check("iot:Receive", PREFIX + f"topic/{topic}")]


def _pattern(text: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text), re.DOTALL)


_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def _substitute(text: str, variables: Mapping[str, str | None]) -> str | None:
    """``text`` with its policy variables replaced; None when one cannot be resolved for this connection."""
    unresolved = False

    def one(m: re.Match[str]) -> str:
        nonlocal unresolved
        if m.group(1) not in variables:
            raise ValueError(f"policy variable ${{{m.group(1)}}} is not modelled here")
        value = variables[m.group(1)]
        if value is None:
            unresolved = True
            return ""
        return value

    out = _VARIABLE.sub(one, text)
    return None if unresolved else out


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _condition_holds(condition: Mapping[str, Any] | None, variables: Mapping[str, str | None]) -> bool:
    for operator, tests in (condition or {}).items():
        if operator not in ("Bool", "StringEquals"):
            raise ValueError(f"condition operator {operator} is not modelled here")
        for key, wanted in tests.items():
            if key not in variables:
                raise ValueError(f"condition key {key} is not modelled here")
            actual = variables[key]
            values = [str(v).lower() if operator == "Bool" else str(v) for v in _as_list(wanted)]
            if actual is None or (actual.lower() if operator == "Bool" else actual) not in values:
                return False
    return True


def _matches(statement: Mapping[str, Any], check: Check, variables: Mapping[str, str | None]) -> bool:
    unknown = set(statement) - {"Sid", "Effect", "Action", "Resource", "Condition"}
    if unknown:
        raise ValueError(f"statement keys {sorted(unknown)} are not modelled here")
    if not any(_pattern(a.lower()).fullmatch(check.action.lower()) for a in _as_list(statement["Action"])):
        return False
    resources = [_substitute(r, variables) for r in _as_list(statement["Resource"])]
    if not any(r is not None and _pattern(r).fullmatch(check.resource) for r in resources):
        return False
    return _condition_holds(statement.get("Condition"), variables)


def allowed(policies: Iterable[Mapping[str, Any]], connection: Connection, checks: Iterable[Check]) -> bool:
    """Whether every check is allowed for ``connection`` by ``policies`` (policy documents)."""
    statements = [st for doc in policies for st in _as_list(doc["Statement"])]
    variables = connection.variables()
    for check in checks:
        hits = [st["Effect"] for st in statements if _matches(st, check, variables)]
        if "Deny" in hits or "Allow" not in hits:
            return False
    return True


# -- the templates ---------------------------------------------------------------------------------------------------

def _render(value: Any, parameters: Mapping[str, str]) -> Any:
    """A template value with ``Fn::Sub`` and ``Fn::ImportValue`` done (``${!x}`` is the literal ``${x}``)."""
    if isinstance(value, list):
        return [_render(v, parameters) for v in value]
    if isinstance(value, dict):
        if set(value) == {"Fn::Sub"}:
            pseudo = {"AWS::Partition": PARTITION, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, **parameters}

            def one(m: re.Match[str]) -> str:
                name = m.group(1)
                if name.startswith("!"):
                    return "${" + name[1:] + "}"
                return pseudo[name]
            return re.sub(r"\$\{([^}]*)\}", one, value["Fn::Sub"])
        if set(value) == {"Fn::ImportValue"}:
            return f"arn:{PARTITION}:iot:{REGION}:{ACCOUNT}:rolealias/imported-{_render(value['Fn::ImportValue'], parameters)}"
        return {k: _render(v, parameters) for k, v in value.items()}
    return value


def policy_documents(template_path: Path, parameters: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """The ``AWS::IoT::Policy`` documents of a template by resource name, rendered for ``parameters``."""
    from cfnlint.decode import decode

    template, problems = decode(str(template_path))
    if problems:
        raise ValueError(f"{template_path}: {problems}")
    params = {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}
    params.update(parameters or {})
    return {name: _render(res["Properties"]["PolicyDocument"], params)
            for name, res in template["Resources"].items() if res["Type"] == "AWS::IoT::Policy"}
