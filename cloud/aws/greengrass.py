"""Greengrass v2: publish component versions from built recipes, deploy them to canary and fleet thing groups.

``publish`` reads a build folder in the GDK layout (``recipes/<recipe>.json|yaml`` and
``artifacts/<ComponentName>/<ComponentVersion>/<files>``), uploads each artifact to
``s3://<bucket>/slm-intents/greengrass/<ComponentName>/<ComponentVersion>/<file>``, points the recipe's artifact
URIs there (matched by file name) and calls ``greengrassv2.create_component_version``; it waits until each
version is ``DEPLOYABLE``.

Recipes and versions are checked by the one validator, :mod:`cloud.greengrass.recipe`, before anything is
uploaded. ``deploy`` calls ``greengrassv2.create_deployment`` on a thing group with ``deploymentPolicies``
(``failureHandlingPolicy: ROLLBACK``) and an ``iotJobConfiguration`` (exponential rollout rate, abort criteria,
timeout). A thing group has one active deployment, which replaces the previous one, so a staged rollout uses
two groups: ``slm-intents-canary`` first, then ``slm-intents-fleet``; deploying to the fleet is refused unless
the canary group's latest deployment has the same component versions and its IoT job reports every
device succeeded. Components of the group's current deployment that are not named are kept.
``deploy --dry-run`` prints the exact CreateDeployment request and creates nothing (it still reads the group's
ARN and current deployment unless ``--target-arn`` and ``--no-merge`` are given; it skips the canary check).

No deployment touches the nucleus: the app's ``accessControl`` needs no recipe-variable interpolation (see
greengrass/README.md, "IPC authorization"), so any nucleus 2.x and Nucleus Lite run it as deployed.
:class:`GreengrassBackend` is :mod:`cloud.rollout`'s deployment backend on AWS.

::

    python -m cloud.aws.greengrass publish --version 3 --bucket B --region R   # <store>/slm-intents/greengrass/3
    python -m cloud.aws.greengrass deploy --stage canary --component com.slmintents.IntentModel=1.0.3 \\
        --component com.slmintents.IntentService=1.0.3 --region R [--dry-run]
    python -m cloud.aws.greengrass deploy --stage fleet  --component ... --region R
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..clihelp import HelpFormatter
from ..errors import CloudError, RecipeError
from ..greengrass import recipe as gg_recipe
from ..greengrass.names import THING_GROUPS, deployment_name, deployment_tags
from ..greengrass.recipe import component_pin, load_recipe, recipe_bytes
from .clients import call, make_client, make_session
from .errors import AwsCallFailed, AwsError, DeploymentBlocked
from .s3store import S3Store

__all__ = ["Component", "PublishedComponent", "RolloutConfig", "GreengrassBackend", "THING_GROUPS", "load_recipe",
           "find_components", "publish", "deployment_request", "deploy", "check_canary", "thing_group_arn",
           "latest_deployment", "main"]


@dataclass(frozen=True)
class Component:
    """One built component: its recipe and the local files of its artifacts (file name -> path)."""

    name: str
    version: str
    recipe: Mapping[str, Any]
    artifacts: Mapping[str, Path] = field(default_factory=dict)
    source: Path | None = None


@dataclass(frozen=True)
class PublishedComponent:
    name: str
    version: str
    arn: str
    state: str
    artifacts: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "artifacts": list(self.artifacts)}


@dataclass(frozen=True)
class RolloutConfig:
    """How a deployment reaches the devices of a thing group (the ``iotJobConfiguration``) and what a failure does.

    base_rate_per_minute: devices notified per minute at first.
    increment_factor: the rate multiplier once ``rate_increase_after_succeeded`` devices succeeded.
    maximum_per_minute: the cap of the rate.
    abort_failed_percent: cancel the job when this share of devices failed, rejected or timed out ...
    abort_min_executed: ... once at least this many devices ran it.
    in_progress_timeout_minutes: a device that has not finished by then counts as timed out.
    component_update_timeout_s: how long running components get to reach a safe point before updating.
    failure_handling: ``ROLLBACK`` (a device that fails returns to its previous configuration) or ``DO_NOTHING``.
    """

    base_rate_per_minute: int = 5
    increment_factor: float = 2.0
    rate_increase_after_succeeded: int = 5
    maximum_per_minute: int = 50
    abort_failed_percent: float = 10.0
    abort_min_executed: int = 5
    in_progress_timeout_minutes: int = 30
    component_update_timeout_s: int = 60
    failure_handling: str = "ROLLBACK"

    @classmethod
    def canary(cls) -> "RolloutConfig":
        """A few devices, one at a time; the first failure cancels the job."""
        return cls(base_rate_per_minute=1, increment_factor=1.5, rate_increase_after_succeeded=1,
                   maximum_per_minute=5, abort_failed_percent=1.0, abort_min_executed=1)

    @classmethod
    def fleet(cls) -> "RolloutConfig":
        """The whole fleet, exponentially faster; cancelled when 5% of at least 10 devices fail."""
        return cls(base_rate_per_minute=10, increment_factor=2.0, rate_increase_after_succeeded=20,
                   maximum_per_minute=200, abort_failed_percent=5.0, abort_min_executed=10)

    @classmethod
    def for_stage(cls, stage: str) -> "RolloutConfig":
        presets = {"canary": cls.canary, "fleet": cls.fleet}
        if stage not in presets:
            raise AwsError(f"unknown stage {stage!r}; expected one of: {', '.join(presets)}")
        return presets[stage]()

    def deployment_policies(self) -> dict[str, Any]:
        return {"failureHandlingPolicy": self.failure_handling,
                "componentUpdatePolicy": {"timeoutInSeconds": self.component_update_timeout_s,
                                          "action": "NOTIFY_COMPONENTS"},
                "configurationValidationPolicy": {"timeoutInSeconds": 30}}

    def iot_job_configuration(self) -> dict[str, Any]:
        criteria = [{"failureType": kind, "action": "CANCEL", "thresholdPercentage": self.abort_failed_percent,
                     "minNumberOfExecutedThings": self.abort_min_executed}
                    for kind in ("FAILED", "REJECTED", "TIMED_OUT")]
        return {
            "jobExecutionsRolloutConfig": {
                "exponentialRate": {"baseRatePerMinute": self.base_rate_per_minute,
                                    "incrementFactor": self.increment_factor,
                                    "rateIncreaseCriteria": {"numberOfSucceededThings": self.rate_increase_after_succeeded}},
                "maximumPerMinute": self.maximum_per_minute},
            "abortConfig": {"criteriaList": criteria},
            "timeoutConfig": {"inProgressTimeoutInMinutes": self.in_progress_timeout_minutes},
        }


# --------------------------------------------------------------------------------------------------- recipes
def check_recipe(recipe: Mapping[str, Any], where: str) -> tuple[str, str]:
    """:func:`cloud.greengrass.recipe.check_recipe`, refusals as :class:`AwsError` (what publish raises)."""
    try:
        return gg_recipe.check_recipe(recipe, where)
    except RecipeError as exc:
        raise AwsError(str(exc)) from None


def check_version(version: str, where: str) -> str:
    try:
        return gg_recipe.check_version(version, where)
    except RecipeError as exc:
        raise AwsError(str(exc)) from None


def find_components(build_dir: Path) -> list[Component]:
    """The components of a GDK-style build folder (``recipes/`` and ``artifacts/<name>/<version>/``)."""
    build_dir = Path(build_dir)
    recipes = sorted(p for p in (build_dir / "recipes").glob("*") if p.suffix.lower() in (".json", ".yaml", ".yml"))
    if not recipes:
        raise AwsError(f"no recipes in {build_dir / 'recipes'} (run the Greengrass build step first)")
    components = []
    for path in recipes:
        recipe = load_recipe(path)
        name, version = check_recipe(recipe, str(path))
        folder = build_dir / "artifacts" / name / version
        files = {p.name: p for p in sorted(folder.glob("*")) if p.is_file()} if folder.is_dir() else {}
        components.append(Component(name, version, recipe, files, path))
    return components


def _rewrite_artifacts(recipe: Mapping[str, Any], uploaded: Mapping[str, str], where: str) -> dict[str, Any]:
    out = json.loads(json.dumps(recipe))
    for manifest in out.get("Manifests", []):
        for artifact in manifest.get("Artifacts", []) or []:
            uri = str(artifact.get("Uri", ""))
            name = uri.rstrip("/").rsplit("/", 1)[-1]
            if name in uploaded:
                artifact["Uri"] = uploaded[name]
            elif not uri.startswith(("s3://", "docker:")) or "{" in uri or "BUCKET_NAME" in uri:
                raise AwsError(f"{where}: artifact {uri!r} has no file {name!r} in the build's artifacts folder")
    return out


# --------------------------------------------------------------------------------------------------- publish
def publish(components: Sequence[Component], *, store: S3Store, greengrass: Any, skip_existing: bool = False,
            wait: bool = True, timeout_s: float = 300.0, poll_s: float = 5.0,
            sleep: Callable[[float], None] = time.sleep,
            progress: Callable[[str], None] | None = None) -> list[PublishedComponent]:
    """Upload artifacts, create the component versions, wait until they are DEPLOYABLE.

    ``progress`` gets one line per upload and per state the component reaches while it is waited for."""
    say = progress or (lambda line: None)
    published = []
    for comp in components:
        where = str(comp.source or comp.name)
        check_recipe(comp.recipe, where)
        uploaded = {}
        for file_name, path in comp.artifacts.items():
            uri = store.uri_of("greengrass", comp.name, comp.version, file_name)
            say(f"uploading {path} -> {uri}")
            store.upload_file(path, uri)
            uploaded[file_name] = uri
        recipe = _rewrite_artifacts(comp.recipe, uploaded, where)
        check_recipe(recipe, where)  # the S3 URIs may have made it longer
        body = recipe_bytes(recipe)
        try:
            response = call(greengrass.create_component_version, inlineRecipe=body)
            arn = response["arn"]
        except AwsCallFailed as exc:
            if exc.code != "ConflictException" or not skip_existing:
                if exc.code == "ConflictException":
                    raise AwsError(f"{comp.name} {comp.version} already exists; bump ComponentVersion "
                                   "(or pass --skip-existing)") from None
                raise
            arn = _component_arn(greengrass, comp.name, comp.version)
        state = _wait_deployable(greengrass, arn, wait=wait, timeout_s=timeout_s, poll_s=poll_s, sleep=sleep,
                                 say=say)
        published.append(PublishedComponent(comp.name, comp.version, arn, state, tuple(uploaded.values())))
    return published


def _component_arn(greengrass: Any, name: str, version: str) -> str:
    for rows in _pages(greengrass.list_components, "components", scope="PRIVATE"):
        for comp in rows:
            if comp.get("componentName") == name:
                return f"{comp['arn']}:versions:{version}"
    raise AwsError(f"{name} {version} exists but was not found in the private components")


def _pages(fn: Callable[..., Any], key: str, **kwargs: Any) -> Any:
    while True:
        page = call(fn, **kwargs)
        yield page.get(key, [])
        if not page.get("nextToken"):
            return
        kwargs["nextToken"] = page["nextToken"]


def _wait_deployable(greengrass: Any, arn: str, *, wait: bool, timeout_s: float, poll_s: float,
                     sleep: Callable[[float], None], say: Callable[[str], None] = lambda line: None) -> str:
    started = time.monotonic()
    last = None
    while True:
        status = call(greengrass.describe_component, arn=arn).get("status", {})
        state = status.get("componentState", "")
        if state != last:
            say(f"{arn}: {state or 'no state yet'} ({time.monotonic() - started:.0f}s)")
            last = state
        if state == "FAILED":
            errors = status.get("errors") or {}
            raise AwsError(f"{arn}: Greengrass refused the component: {status.get('message', '')} {errors}".strip())
        if state == "DEPLOYABLE" or not wait:
            return state
        if time.monotonic() - started > timeout_s:
            raise AwsError(f"{arn}: still {state} after {timeout_s:.0f}s")
        sleep(poll_s)


# --------------------------------------------------------------------------------------------------- deploy
def thing_group_arn(iot: Any, group: str) -> str:
    try:
        return str(call(iot.describe_thing_group, thingGroupName=group)["thingGroupArn"])
    except AwsCallFailed as exc:
        if exc.code == "ResourceNotFoundException":
            raise DeploymentBlocked(f"thing group {group!r} does not exist (infra/iot.yaml creates it)") from None
        raise


def latest_deployment(greengrass: Any, target_arn: str) -> dict[str, Any] | None:
    """The latest deployment on a target (``get_deployment``'s answer), or None when it has none."""
    rows = call(greengrass.list_deployments, targetArn=target_arn, historyFilter="LATEST_ONLY").get("deployments", [])
    if not rows:
        return None
    return call(greengrass.get_deployment, deploymentId=rows[0]["deploymentId"])


def check_canary(components: Mapping[str, str], *, greengrass: Any, iot: Any,
                 canary_group: str = THING_GROUPS["canary"]) -> dict[str, Any]:
    """Raise :class:`DeploymentBlocked` unless the canary group runs ``components`` and every device succeeded."""
    target = thing_group_arn(iot, canary_group)
    latest = latest_deployment(greengrass, target)
    if latest is None:
        raise DeploymentBlocked(f"the canary group {canary_group} has no deployment; deploy --stage canary first")
    running = {k: v.get("componentVersion") for k, v in (latest.get("components") or {}).items()}
    differ = {k: v for k, v in components.items() if running.get(k) != v}
    if differ:
        raise DeploymentBlocked(f"the canary group runs {running}, not {differ}; deploy these to the canary first")
    if latest.get("deploymentStatus") in ("FAILED", "CANCELED", "INACTIVE"):
        raise DeploymentBlocked(f"the canary deployment {latest.get('deploymentId')} is {latest['deploymentStatus']}")
    job = call(iot.describe_job, jobId=latest["iotJobId"])["job"]
    details = job.get("jobProcessDetails", {})
    bad = {k: details.get(k, 0) for k in ("numberOfFailedThings", "numberOfRejectedThings",
                                          "numberOfTimedOutThings", "numberOfCanceledThings")}
    pending = details.get("numberOfQueuedThings", 0) + details.get("numberOfInProgressThings", 0)
    if any(bad.values()):
        raise DeploymentBlocked(f"the canary job {latest['iotJobId']} has failures: {bad}")
    if pending or details.get("numberOfSucceededThings", 0) < 1:
        raise DeploymentBlocked(f"the canary job {latest['iotJobId']} is not done: "
                                f"{details.get('numberOfSucceededThings', 0)} succeeded, {pending} pending")
    return {"deployment_id": latest.get("deploymentId"), "iot_job_id": latest["iotJobId"],
            "succeeded": details.get("numberOfSucceededThings", 0)}


def _check_components(components: Mapping[str, str]) -> None:
    if not components:
        raise AwsError("name at least one component to deploy (NAME=VERSION)")
    for name, version in components.items():
        check_version(str(version), f"{name}: version")


def deployment_request(components: Mapping[str, str], *, stage: str, target_arn: str,
                       rollout: RolloutConfig | None = None, current: Mapping[str, Any] | None = None,
                       name: str | None = None,
                       configuration: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The keyword arguments of ``greengrassv2.create_deployment`` for ``components`` (name -> version).

    ``current`` is the target's latest deployment whose other components are kept (None: only the named ones);
    ``name`` the deployment's name (default: ``slm-intents-<stage>``).
    """
    _check_components(components)
    rollout = rollout or RolloutConfig.for_stage(stage)
    wanted: dict[str, dict[str, Any]] = {}
    for component, spec in ((current or {}).get("components") or {}).items():
        wanted[component] = {"componentVersion": spec["componentVersion"]}
    for component, version in components.items():
        wanted[component] = {"componentVersion": str(version)}
        if configuration and component in configuration:
            wanted[component]["configurationUpdate"] = {"merge": json.dumps(configuration[component])}
    return {"targetArn": target_arn, "deploymentName": name or deployment_name(stage),
            "components": wanted, "deploymentPolicies": rollout.deployment_policies(),
            "iotJobConfiguration": rollout.iot_job_configuration(), "tags": deployment_tags(stage)}


def deploy(components: Mapping[str, str], *, stage: str, greengrass: Any, iot: Any, thing_group: str | None = None,
           rollout: RolloutConfig | None = None, merge_current: bool = True, require_canary: bool = True,
           deployment_name: str | None = None, configuration: Mapping[str, Mapping[str, Any]] | None = None,
           target_arn: str | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Create a deployment of ``components`` (name -> version) to the stage's thing group.

    ``merge_current`` keeps the components of the group's current deployment that are not named (a new
    deployment replaces the old one on every device of the group). For ``stage="fleet"`` the canary group must
    have run these versions successfully, unless ``require_canary`` is false. ``dry_run``: return the request
    (``"request"``) and create nothing; the canary check is skipped.
    """
    group = thing_group or THING_GROUPS.get(stage)
    if not group:
        raise AwsError(f"unknown stage {stage!r}; expected one of: {', '.join(THING_GROUPS)}")
    _check_components(components)  # before any call
    canary = None
    if stage == "fleet" and require_canary and not dry_run:
        canary = check_canary(components, greengrass=greengrass, iot=iot)
    target = target_arn or thing_group_arn(iot, group)
    current = latest_deployment(greengrass, target) if merge_current else None
    request = deployment_request(components, stage=stage, target_arn=target, rollout=rollout, current=current,
                                 name=deployment_name, configuration=configuration)
    summary = {"target_arn": target, "thing_group": group, "stage": stage,
               "components": {k: v["componentVersion"] for k, v in request["components"].items()}}
    if dry_run:
        return {"dry_run": True, "request": request, **summary, "canary": "not checked (dry run)"}
    response = call(greengrass.create_deployment, **request)
    return {"deployment_id": response.get("deploymentId"), "iot_job_id": response.get("iotJobId"),
            "iot_job_arn": response.get("iotJobArn"), **summary, "canary": canary}


class GreengrassBackend:
    """:class:`cloud.rollout.DeploymentBackend` on AWS: thing groups of AWS IoT, deployments of Greengrass v2."""

    def __init__(self, greengrass: Any, iot: Any) -> None:
        self.greengrass, self.iot = greengrass, iot

    @classmethod
    def for_region(cls, region: str | None) -> "GreengrassBackend":
        session = make_session(region)
        return cls(make_client("greengrassv2", region=region, session=session),
                   make_client("iot", region=region, session=session))

    def current(self, group: str) -> dict[str, str]:
        latest = latest_deployment(self.greengrass, thing_group_arn(self.iot, group))
        return {k: v["componentVersion"] for k, v in ((latest or {}).get("components") or {}).items()}

    def deploy(self, group: str, components: Mapping[str, str], *, stage: str) -> dict[str, Any]:
        # merge_current=False: ``components`` is the whole wanted set (the plan's, or the previous one on rollback);
        # fleet stages also need Greengrass' own verdict that every canary device took the deployment.
        return deploy(dict(components), stage=stage, greengrass=self.greengrass, iot=self.iot, thing_group=group,
                      rollout=RolloutConfig.for_stage(stage), merge_current=False, require_canary=stage == "fleet",
                      deployment_name=deployment_name(group))

    def status(self, deployment: Mapping[str, Any]) -> dict[str, Any]:
        d = call(self.greengrass.get_deployment, deploymentId=deployment["deployment_id"])
        out = {"state": d.get("deploymentStatus")}
        if d.get("iotJobId"):
            out["job"] = call(self.iot.describe_job, jobId=d["iotJobId"])["job"].get("jobProcessDetails", {})
        return out

    def cancel(self, deployment: Mapping[str, Any]) -> None:
        call(self.greengrass.cancel_deployment, deploymentId=deployment["deployment_id"])

    def things(self, group: str) -> list[str] | None:
        return [name for page in _pages(self.iot.list_things_in_thing_group, "things", thingGroupName=group)
                for name in page]


# --------------------------------------------------------------------------------------------------- CLI
def _config_merge(text: str) -> tuple[str, dict[str, Any]]:
    """One ``--config NAME=JSON`` (an argparse ``type``): a configuration merge for one component."""
    name, sep, body = text.partition("=")
    try:
        value = json.loads(body) if sep else None
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{name}: not JSON ({exc})") from None
    if not name or not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"wants NAME=JSON-OBJECT, got {text!r}")
    return name, value


def _progress(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def _build_dir(version: int, given: str | None, target: S3Store) -> Path:
    """Where ``cloud.greengrass build`` put version N: under a local store, or the local mirror of an S3 store."""
    from ..store import DEFAULT_STORE, Store

    def mirror(remote: S3Store) -> Path:
        return Store(Path(DEFAULT_STORE) / "s3" / remote.bucket / remote.prefix).greengrass(str(version))

    if given is None:
        own = mirror(target)
        return own if own.is_dir() else Store(Path(DEFAULT_STORE)).greengrass(str(version))
    store = Store.at(given)
    return store.greengrass(str(version)) if isinstance(store, Store) else mirror(store)


def build_parser() -> argparse.ArgumentParser:
    from ..store import DEFAULT_STORE


    parser = argparse.ArgumentParser(prog="python -m cloud.aws.greengrass", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("publish", help="create component versions from a build folder (artifacts to S3)",
                       formatter_class=HelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--version", type=int, help="registry version: the build in <store>/slm-intents/greengrass/N")
    where.add_argument("--build-dir", type=Path, help="a build folder (recipes/ and artifacts/)")
    p.add_argument("--store", default=None,
                   help="with --version: the store the build was made from - a local store (default "
                        f"{DEFAULT_STORE}), or s3://BUCKET[/PREFIX] for a build from the SageMaker registry "
                        "(its local mirror .store/s3/BUCKET/PREFIX; the default when that build exists for --bucket)")
    p.add_argument("--bucket", required=True, help="S3 bucket for the artifacts")
    p.add_argument("--store-prefix", default="", help="key prefix in the bucket")
    p.add_argument("--region", default=None, help="AWS region (default: AWS_REGION, then AWS_DEFAULT_REGION)")
    p.add_argument("--skip-existing", action="store_true", help="a version that already exists is not an error")
    p = sub.add_parser("deploy", help="deploy component versions to the canary or the fleet thing group",
                       formatter_class=HelpFormatter)
    p.add_argument("--stage", choices=tuple(THING_GROUPS), required=True, help="which thing group")
    p.add_argument("--component", action="append", type=component_pin, default=[], metavar="NAME=VERSION",
                   required=True, help="a component version to deploy (repeat)")
    p.add_argument("--config", action="append", type=_config_merge, default=[], metavar="NAME=JSON",
                   help="configuration to merge into a component, e.g. the app's BundlePublicKey (repeat)")
    p.add_argument("--thing-group", default=None, help="override the stage's thing group")
    p.add_argument("--target-arn", default=None, help="the thing group's ARN (saves looking it up)")
    p.add_argument("--no-merge", action="store_true", help="deploy only the named components (others are removed)")
    p.add_argument("--skip-canary-check", action="store_true", help="fleet: do not require a healthy canary")
    p.add_argument("--dry-run", action="store_true", help="print the CreateDeployment request; create nothing")
    p.add_argument("--region", default=None, help="AWS region (default: AWS_REGION, then AWS_DEFAULT_REGION)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        session = make_session(args.region)
        greengrass = make_client("greengrassv2", region=args.region, session=session)
        if args.command == "publish":
            store = S3Store(bucket=args.bucket, prefix=args.store_prefix.strip("/"),
                            client=make_client("s3", region=args.region, session=session))
            if args.build_dir is None:
                args.build_dir = _build_dir(args.version, args.store, store)
            result: Any = [c.to_dict() for c in publish(find_components(args.build_dir), store=store,
                                                         greengrass=greengrass, skip_existing=args.skip_existing,
                                                         progress=_progress)]
        else:
            result = deploy(dict(args.component), stage=args.stage, greengrass=greengrass,
                            iot=make_client("iot", region=args.region, session=session),
                            thing_group=args.thing_group, merge_current=not args.no_merge,
                            require_canary=not args.skip_canary_check, configuration=dict(args.config) or None,
                            target_arn=args.target_arn, dry_run=args.dry_run)
    except CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
