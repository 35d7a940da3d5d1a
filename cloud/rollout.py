"""Staged rollouts: canary thing group first, judged on its telemetry against gates, then the fleet groups.

::

    python -m cloud.rollout plan    --version 1.0.3 --component com.slmintents.IntentModel=1.0.3 --gates gates.json
    python -m cloud.rollout start   --region eu-west-1         # canary deployment (ROLLBACK, abort criteria)
    python -m cloud.rollout status  --telemetry telemetry/     # deployments + gate verdict so far
    python -m cloud.rollout promote --telemetry telemetry/     # gates pass: fleet groups; fail: roll back
    python -m cloud.rollout abort                              # cancel, canary back to what it ran

The state file holds the plan and everything that happened (deployments, verdicts); every command reads and
rewrites it. ``--telemetry`` names JSON-lines files or folders of the messages devices publish on
``dt/intents/<thing>/telemetry`` (an IoT rule to S3 writes them; ``python -m cloud.shadow collect`` gathers them
from a local broker). Gates (:class:`Gates`) judge the canary's windows of the new model version: server error
rate, latency p95, drift alerts, and, when the canary ran the version in shadow first, shadow agreement.

Deployments go through a :class:`DeploymentBackend`: :class:`cloud.aws.greengrass.GreengrassBackend`
(``greengrassv2.create_deployment`` with ``failureHandlingPolicy: ROLLBACK`` and IoT job abort criteria) or
:class:`LocalBackend` (service processes on one local broker, for the fleet simulation and demos). The state
file defaults to ``<store>/slm-intents/rollouts/rollout.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

from .clihelp import HelpFormatter
from .errors import CloudError, RolloutError
from .greengrass.names import MODEL_COMPONENT, THING_GROUPS
from .greengrass.recipe import component_pin
from .store import DEFAULT_STORE, Store

__all__ = ["Gates", "GateResult", "RolloutPlan", "Rollout", "RolloutError", "DeploymentBackend", "LocalBackend",
           "judge", "load_telemetry", "main", "build_parser"]

#: error codes that count against a model version (the others are the clients' fault)
SERVER_ERRORS = ("internal", "overloaded")


@dataclass(frozen=True)
class Gates:
    """What the canary's telemetry must show before the fleet gets a version.

    min_requests: answered requests of the new version across the canary before judging (else: wait).
    max_error_rate: server errors (internal, overloaded) per request.
    max_latency_p95_ms: the worst window's p95 reply latency.
    max_drift_alerts: drift alerts the canary may raise.
    min_shadow_agreement: agreement of the version, run in shadow before, with the serving model (None: not gated).
    """

    min_requests: int = 50
    max_error_rate: float = 0.01
    max_latency_p95_ms: float = 100.0
    max_drift_alerts: int = 0
    min_shadow_agreement: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Gates":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise RolloutError(f"unknown gate(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**data)


@dataclass(frozen=True)
class GateResult:
    verdict: str  # "pass", "fail" or "wait" (not enough data yet)
    checks: tuple[dict[str, Any], ...]
    requests: int
    things: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "checks": list(self.checks), "requests": self.requests,
                "things": list(self.things)}


def load_telemetry(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Telemetry messages from JSON-lines files or folders of them (unreadable lines are skipped)."""
    out: list[dict[str, Any]] = []
    for p in map(Path, paths):
        files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        for f in files:
            if not f.is_file():
                raise RolloutError(f"no telemetry at {f}")
            for line in f.read_text(encoding="utf-8").splitlines():
                try:
                    msg = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(msg, dict) and "type" in msg:
                    out.append(msg)
    return out


def judge(messages: Iterable[Mapping[str, Any]], gates: Gates, *, version: str,
          things: Sequence[str] | None = None, since: float = 0.0) -> GateResult:
    """The verdict of ``gates`` on the telemetry of ``version`` (from ``things``, after ``since``)."""
    msgs = [m for m in messages if (things is None or m.get("thing") in things) and float(m.get("ts", 0)) >= since]
    windows = [m for m in msgs if m.get("type") == "telemetry" and (m.get("model") or {}).get("version") == version]
    alerts = [m for m in msgs if m.get("type") == "drift_alert" and (m.get("model") or {}).get("version") == version]
    shadows = [m for m in msgs if m.get("type") == "shadow" and (m.get("candidate") or {}).get("version") == version]
    requests = sum(int(w["window"]["requests"]) for w in windows)
    errors = sum(int(n) for w in windows for code, n in (w["window"].get("errors") or {}).items()
                 if code in SERVER_ERRORS)
    p95 = max((float(w["latency_ms"]["p95"]) for w in windows if w.get("latency_ms")), default=0.0)
    checks: list[dict[str, Any]] = [
        {"gate": "max_error_rate", "value": round(errors / max(requests + errors, 1), 4),
         "limit": gates.max_error_rate},
        {"gate": "max_latency_p95_ms", "value": round(p95, 3), "limit": gates.max_latency_p95_ms},
        {"gate": "max_drift_alerts", "value": len(alerts), "limit": gates.max_drift_alerts},
    ]
    for c in checks:
        c["passed"] = c["value"] <= c["limit"]
    if gates.min_shadow_agreement is not None:
        compared = sum(int(s.get("compared", 0)) for s in shadows)
        agreed = sum(int(s.get("agreed", 0)) for s in shadows)
        value = round(agreed / compared, 4) if compared else None
        checks.append({"gate": "min_shadow_agreement", "value": value, "limit": gates.min_shadow_agreement,
                       "passed": value is not None and value >= gates.min_shadow_agreement})
    seen = tuple(sorted({str(w.get("thing")) for w in windows}))
    # A window too small for the drift monitor says nothing about drift: wait for one it judged.
    judged = sum(1 for w in windows if (w.get("drift") or {}).get("judged", True))
    if any(not c["passed"] for c in checks if c["value"] is not None):
        verdict = "fail"
    elif requests < gates.min_requests or any(c["value"] is None for c in checks) or not judged:
        verdict = "wait"
    else:
        verdict = "pass"
    return GateResult(verdict, tuple(checks), requests, seen)


@dataclass(frozen=True)
class RolloutPlan:
    """A version, what to deploy for it, where, in which order, and its gates."""

    version: str
    components: Mapping[str, str]
    canary_group: str = THING_GROUPS["canary"]
    fleet_groups: tuple[str, ...] = (THING_GROUPS["fleet"],)
    gates: Gates = field(default_factory=Gates)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "components": dict(self.components), "canary_group": self.canary_group,
                "fleet_groups": list(self.fleet_groups), "gates": asdict(self.gates)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RolloutPlan":
        return cls(version=str(d["version"]), components=dict(d["components"]), canary_group=d["canary_group"],
                   fleet_groups=tuple(d["fleet_groups"]), gates=Gates.from_dict(d.get("gates") or {}))


class DeploymentBackend(Protocol):
    """Where deployments go: a thing group gets component versions; the previous ones come back on rollback."""

    def current(self, group: str) -> dict[str, str]:
        """The component versions the group runs now (empty when none)."""

    def deploy(self, group: str, components: Mapping[str, str], *, stage: str) -> dict[str, Any]:
        """Deploy ``components`` to ``group``; returns at least ``deployment_id``."""

    def status(self, deployment: Mapping[str, Any]) -> dict[str, Any]:
        """The deployment's state (``state`` and backend details)."""

    def cancel(self, deployment: Mapping[str, Any]) -> None:
        """Stop a deployment that is still rolling out."""

    def things(self, group: str) -> list[str] | None:
        """The thing names of ``group`` (None: unknown, judge every thing's telemetry)."""


class Rollout:
    """The state machine: planned -> canary -> promoted, or -> rolled_back / aborted. Persisted at ``state_path``."""

    def __init__(self, state_path: str | Path, backend: DeploymentBackend) -> None:
        self.path = Path(state_path)
        self.backend = backend
        if not self.path.is_file():
            raise RolloutError(f"no rollout state at {self.path}; run 'plan' first")
        self.state: dict[str, Any] = json.loads(self.path.read_text())
        self.plan = RolloutPlan.from_dict(self.state["plan"])

    @staticmethod
    def create(plan: RolloutPlan, state_path: str | Path) -> dict[str, Any]:
        state = {"plan": plan.to_dict(), "status": "planned", "history": [], "deployments": {}}
        Path(state_path).parent.mkdir(parents=True, exist_ok=True)
        Path(state_path).write_text(json.dumps(state, indent=2) + "\n")
        return state

    def _save(self, event: str, **details: Any) -> None:
        self.state["history"].append({"ts": round(time.time(), 3), "event": event, **details})
        self.path.write_text(json.dumps(self.state, indent=2) + "\n")

    def _expect(self, *statuses: str) -> None:
        if self.state["status"] not in statuses:
            raise RolloutError(f"the rollout is {self.state['status']}; this needs it {' or '.join(statuses)}")

    def start(self) -> dict[str, Any]:
        """Deploy to the canary group, remembering what it ran for a rollback."""
        self._expect("planned")
        group = self.plan.canary_group
        self.state["previous"] = self.backend.current(group)
        dep = self.backend.deploy(group, self.plan.components, stage="canary")
        self.state["deployments"][group] = dep
        self.state["canary_since"] = time.time()
        self.state["status"] = "canary"
        self._save("canary_deployed", group=group, deployment=dep)
        return dep

    def verdict(self, telemetry: Iterable[Mapping[str, Any]]) -> GateResult:
        return judge(telemetry, self.plan.gates, version=self.plan.version,
                     things=self.backend.things(self.plan.canary_group), since=self.state.get("canary_since", 0.0))

    def status(self, telemetry: Iterable[Mapping[str, Any]] | None = None) -> dict[str, Any]:
        out = {"status": self.state["status"], "version": self.plan.version,
               "deployments": {g: {**d, "live": self.backend.status(d)} for g, d in self.state["deployments"].items()}}
        if telemetry is not None and self.state["status"] == "canary":
            out["gates"] = self.verdict(telemetry).to_dict()
        return out

    def promote(self, telemetry: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Judge the canary: pass -> deploy to each fleet group in order; fail -> roll the canary back."""
        self._expect("canary")
        result = self.verdict(telemetry)
        if result.verdict == "wait":
            self._save("gates_wait", gates=result.to_dict())
            return {"status": "canary", "gates": result.to_dict()}
        if result.verdict == "fail":
            self._rollback("gates_failed", result.to_dict())
            return {"status": self.state["status"], "gates": result.to_dict()}
        for group in self.plan.fleet_groups:
            dep = self.backend.deploy(group, self.plan.components, stage="fleet")
            self.state["deployments"][group] = dep
            self._save("fleet_deployed", group=group, deployment=dep)
        self.state["status"] = "promoted"
        self._save("promoted", gates=result.to_dict())
        return {"status": "promoted", "gates": result.to_dict()}

    def abort(self, reason: str = "aborted by operator") -> dict[str, Any]:
        self._expect("canary", "planned")
        if self.state["status"] == "planned":
            self.state["status"] = "aborted"
            self._save("aborted", reason=reason)
            return {"status": "aborted"}
        dep = self.state["deployments"].get(self.plan.canary_group)
        if dep is not None:
            self.backend.cancel(dep)
        self._rollback("aborted", {"reason": reason}, status="aborted")
        return {"status": "aborted"}

    def _rollback(self, event: str, details: Mapping[str, Any], status: str = "rolled_back") -> None:
        group, previous = self.plan.canary_group, self.state.get("previous") or {}
        back = self.backend.deploy(group, previous, stage="canary") if previous else None
        self.state["status"] = status
        self.state["rollback"] = {"group": group, "components": previous, "deployment": back}
        self._save(event, details=dict(details), rollback=self.state["rollback"])


# ------------------------------------------------------------------------------------------------ backends
class LocalBackend:
    """Devices as ``python -m edge_runtime serve`` processes on one local broker (the fleet simulation).

    ``groups`` maps a group to its thing names; ``bundles`` maps a version to its bundle folder. A deployment
    restarts each thing of the group on the version's bundle (SIGTERM: the service drains), one after the other.
    ``env`` adds environment (telemetry interval, drift thresholds ...) to every device.
    """

    COMPONENT = MODEL_COMPONENT

    def __init__(self, broker: str, groups: Mapping[str, Sequence[str]], bundles: Mapping[str, str | Path], *,
                 workdir: str | Path, env: Mapping[str, str] | None = None) -> None:
        self.broker = broker
        self.groups = {g: list(t) for g, t in groups.items()}
        self.bundles = {str(v): str(p) for v, p in bundles.items()}
        self.workdir = Path(workdir)
        self.env = dict(env or {})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.running: dict[str, str] = {}
        self._n = 0

    def _start(self, thing: str, version: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        log = (self.workdir / f"{thing}.log").open("ab")
        self.procs[thing] = subprocess.Popen(  # nosec B603 # this interpreter, fixed argv, no shell
            [sys.executable, "-m", "edge_runtime", "serve", "--bundle", self.bundles[version], "--thing", thing,
             "--broker", self.broker, "--threads", "1", "--spool-path", str(self.workdir / f"{thing}.sqlite")],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.running[thing] = version

    def _stop(self, thing: str, timeout: float = 10.0) -> None:
        proc = self.procs.pop(thing, None)
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)

    def current(self, group: str) -> dict[str, str]:
        versions = {self.running.get(t) for t in self.groups[group]}
        version = versions.pop() if len(versions) == 1 else None
        return {self.COMPONENT: version} if version else {}

    def deploy(self, group: str, components: Mapping[str, str], *, stage: str) -> dict[str, Any]:
        version = components.get(self.COMPONENT)
        if version not in self.bundles:
            raise RolloutError(f"no bundle for {self.COMPONENT} {version}")
        for thing in self.groups[group]:
            self._stop(thing)
            self._start(thing, version)
        self._n += 1
        return {"deployment_id": f"local-{self._n}", "group": group, "components": dict(components), "stage": stage}

    def status(self, deployment: Mapping[str, Any]) -> dict[str, Any]:
        group = deployment["group"]
        alive = {t: (t in self.procs and self.procs[t].poll() is None) for t in self.groups[group]}
        return {"state": "ACTIVE" if all(alive.values()) else "DEGRADED", "things": alive,
                "versions": {t: self.running.get(t) for t in self.groups[group]}}

    def cancel(self, deployment: Mapping[str, Any]) -> None:
        return None  # a local deployment is done when deploy() returns

    def things(self, group: str) -> list[str] | None:
        return list(self.groups[group])

    def close(self) -> None:
        for thing in list(self.procs):
            self._stop(thing)

    def __enter__(self) -> "LocalBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------ CLI
def _state_path(args: argparse.Namespace, flag: str) -> Path:
    """``--out`` / ``--state`` when given, else the store's default state file."""
    given = getattr(args, flag)
    return Path(given) if given else Store(Path(args.store)).rollouts() / "rollout.json"


def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(prog="python -m cloud.rollout", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="write the rollout state file: version, components, groups, gates",
                       formatter_class=HelpFormatter)
    p.add_argument("--version", required=True, help="the model version the gates judge (telemetry model.version)")
    p.add_argument("--component", action="append", type=component_pin, required=True, metavar="NAME=VERSION",
                   help="a component version to deploy (repeat)")
    p.add_argument("--canary-group", default=THING_GROUPS["canary"], help="the canary thing group")
    p.add_argument("--fleet-group", action="append", default=None,
                   help=f"fleet thing groups, in order (repeat; default: {THING_GROUPS['fleet']})")
    p.add_argument("--gates", default=None, help="JSON file of gates (see cloud.rollout.Gates; default: its defaults)")
    p.add_argument("--store", default=DEFAULT_STORE, help="store whose rollouts/ holds the state file")
    p.add_argument("--out", default=None, help="state file (default: <store>/slm-intents/rollouts/rollout.json)")
    for name, helptext in (("start", "deploy to the canary group"),
                           ("status", "deployments and, with --telemetry, the gate verdict so far"),
                           ("promote", "judge the canary; pass: deploy to the fleet groups; fail: roll back"),
                           ("abort", "cancel the canary deployment and roll it back")):
        p = sub.add_parser(name, help=helptext, formatter_class=HelpFormatter)
        p.add_argument("--store", default=DEFAULT_STORE, help="store whose rollouts/ holds the state file")
        p.add_argument("--state", default=None, help="state file (default: <store>/slm-intents/rollouts/rollout.json)")
        p.add_argument("--region", default=None, help="AWS region (default: AWS_REGION, then AWS_DEFAULT_REGION)")
        if name in ("status", "promote"):
            source = p.add_mutually_exclusive_group(required=name == "promote")
            source.add_argument("--telemetry", nargs="+", help="JSON-lines files or folders of telemetry messages")
            source.add_argument("--telemetry-s3", metavar="S3_URI", help="where infra/telemetry.yaml's rule writes: "
                                "s3://<bucket>/slm-intents/telemetry/ (the canary's things, since it started)")
    return parser


def main(argv: Sequence[str] | None = None, *, backend: DeploymentBackend | None = None) -> int:
    """Exit 0 on success, 1 when a gate failed (the canary was rolled back), 2 on errors."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "plan":
            gates = Gates.from_dict(json.loads(Path(args.gates).read_text())) if args.gates else Gates()
            plan = RolloutPlan(args.version, dict(args.component), args.canary_group,
                               tuple(args.fleet_group or (THING_GROUPS["fleet"],)), gates)
            print(json.dumps(Rollout.create(plan, _state_path(args, "out")), indent=2))
            return 0
        if backend is None:
            from .aws.greengrass import GreengrassBackend

            backend = GreengrassBackend.for_region(args.region)
        rollout = Rollout(_state_path(args, "state"), backend)
        telemetry = load_telemetry(args.telemetry) if getattr(args, "telemetry", None) else None
        if getattr(args, "telemetry_s3", None):
            from .aws.telemetry import load_s3_telemetry

            telemetry = load_s3_telemetry(args.telemetry_s3, things=rollout.backend.things(rollout.plan.canary_group),
                                          since=rollout.state.get("canary_since"), region=args.region)
        if args.command == "start":
            result: Any = rollout.start()
        elif args.command == "status":
            result = rollout.status(telemetry)
        elif args.command == "promote":
            result = rollout.promote(telemetry or [])
        else:
            result = rollout.abort()
    except CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 1 if args.command == "promote" and result["status"] == "rolled_back" else 0


if __name__ == "__main__":
    raise SystemExit(main())
