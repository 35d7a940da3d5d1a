"""The two GDK projects and their recipe templates, checked against the recipe format and Nucleus Lite's rules."""

from __future__ import annotations

import copy
import dataclasses
import json
import re

import pytest

from cloud.greengrass import PROJECTS_DIR, load_project, recipe_variables, validate_recipe
from edge_runtime.service.config import ServiceConfig, component_key, env_name, from_sources
from edge_runtime.service.protocol import Topics
from tests.conftest import REPO

MODEL = load_project(PROJECTS_DIR / "model")
APP = load_project(PROJECTS_DIR / "app")


@pytest.mark.parametrize("project", [MODEL, APP], ids=["model", "app"])
def test_each_project_is_a_gdk_zip_build_with_next_patch(project):
    spec = project.gdk_config["component"][project.name]
    assert spec["version"] == "NEXT_PATCH" and spec["build"]["build_system"] == "zip"
    assert set(spec["publish"]) >= {"bucket", "region"} and re.match(r"^\d+\.\d+\.\d+$", project.gdk_config["gdk_version"])
    # GDK's zip build names the artifact after the folder: the template must point at that zip
    uris = {a["Uri"] for m in project.template["Manifests"] for a in m["Artifacts"]}
    assert uris == {f"s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/{project.root.name}.zip"}
    assert all(a["Unarchive"] == "ZIP" for m in project.template["Manifests"] for a in m["Artifacts"])


@pytest.mark.parametrize("project", [MODEL, APP], ids=["model", "app"])
def test_templates_pass_the_recipe_checks_and_stay_small(project):
    assert validate_recipe(project.template, template=True) == []
    assert len(json.dumps(project.template).encode()) < 16_000
    for manifest in project.template["Manifests"]:
        assert manifest["Platform"]["runtime"] == "*" and manifest["Platform"]["os"] == "linux"
        assert set(manifest["Lifecycle"]) <= {"install", "run"}
        for step in manifest["Lifecycle"].values():
            assert "RequiresPrivilege" not in step


def test_the_app_depends_hard_on_the_model_and_reads_the_bundle_the_model_links():
    dep = APP.template["ComponentDependencies"][MODEL.name]
    assert dep == {"VersionRequirement": ">=1.0.0 <2.0.0", "DependencyType": "HARD"}
    for app_m, model_m in zip(APP.template["Manifests"], MODEL.template["Manifests"]):
        assert app_m["Platform"] == model_m["Platform"]
        link = model_m["Lifecycle"]["install"]["Script"]
        assert '"{work:path}/bundle"' in link and '"{artifacts:decompressedPath}/model"' in link
        # Nucleus Lite has no {Other.Component:...} variables: the app finds the model's work folder by the layout
        env = app_m["Lifecycle"]["run"]["Setenv"]
        assert env["EDGE_INTENTS_BUNDLE"] == f"{{kernel:rootPath}}/work/{MODEL.name}/bundle"
        assert env["EDGE_INTENTS_THING"] == "{iot:thingName}"


def test_the_app_runs_the_service_from_its_venv_with_the_pinned_requirements():
    for manifest in APP.template["Manifests"]:
        install = manifest["Lifecycle"]["install"]["Script"]
        # one pin file per interpreter: the step installs the one of the venv's Python (requirements-py310.txt ...)
        assert "-m venv" in install and '"$app/requirements-py$v.txt"' in install and "--no-deps" in install
        assert "--quiet" not in install  # an install of minutes on a Pi shows its progress in the component log
        run = manifest["Lifecycle"]["run"]["Script"]
        assert run.rstrip().splitlines()[-1] == 'exec "{work:path}/venv/bin/python" -m edge_runtime serve'
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    needed = project["dependencies"] + extras["mqtt"] + extras["greengrass"] + extras["signing"]
    pin_files = sorted(APP.root.glob("requirements-py3*.txt"))
    assert pin_files
    for pin_file in pin_files:
        pins = [line for line in pin_file.read_text().splitlines() if line and not line.startswith("#")]
        assert all(re.match(r"^[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*$", line) for line in pins), "every requirement is pinned"
        pinned = {line.split("==")[0].lower().replace("_", "-") for line in pins}
        for requirement in needed:
            assert re.split(r"[<>=!~ \[]", requirement)[0].lower() in pinned, (pin_file.name, requirement)


def test_default_configuration_keys_are_service_settings_passed_through_the_environment():
    defaults = APP.template["ComponentConfiguration"]["DefaultConfiguration"]
    fields = {component_key(f.name): f.name for f in dataclasses.fields(ServiceConfig)}
    recipe_only = {"accessControl", "Python", "PipArgs"}   # used by the install step, not by the service
    assert set(defaults) - recipe_only <= set(fields)
    for manifest in APP.template["Manifests"]:
        env = manifest["Lifecycle"]["run"]["Setenv"]
        for key in set(defaults) - recipe_only:
            assert env[env_name(fields[key])] == f"{{configuration:/{key}}}", key
    # the defaults are valid settings once they arrive as the strings Setenv makes of them
    as_env = {env_name(fields[k]): json.dumps(v) if not isinstance(v, str) else v
              for k, v in defaults.items() if k not in recipe_only}
    cfg = from_sources(env={**as_env, "EDGE_INTENTS_BUNDLE": "b", "EDGE_INTENTS_THING": "t"})
    assert cfg.transport.value == "ipc" and cfg.max_batch == 32 and cfg.threads is None and cfg.threshold is None


def test_access_control_grants_exactly_the_service_topics_with_the_thing_level_as_a_wildcard():
    # Not {iot:thingName}: a default nucleus (interpolateComponentConfiguration false) and Nucleus Lite leave it
    # literal in accessControl, and the subscribe is refused (tests/greengrass/test_ipc_authorization.py shows it).
    # The thing level is '+' for the IoT Core MQTT proxy (topic-filter matching) and '*' for local pub/sub (string
    # globs, where '+' is a plain character); the core device's IoT policy keeps IoT Core to this thing's topics.
    acl = APP.template["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]
    assert set(acl) == {"aws.greengrass.ipc.mqttproxy", "aws.greengrass.ipc.pubsub"}
    subscribe = {"aws.greengrass#SubscribeToIoTCore", "aws.greengrass#SubscribeToTopic"}
    publish = {"aws.greengrass#PublishToIoTCore", "aws.greengrass#PublishToTopic"}
    for service, policies in acl.items():
        thing = Topics.for_thing("+" if service == "aws.greengrass.ipc.mqttproxy" else "*")
        for policy in policies.values():
            ops, resources = set(policy["operations"]), policy["resources"]
            assert "*" not in resources and not any("{" in r for r in resources)
            if ops <= subscribe:
                assert resources == [thing.request]
            else:
                assert ops <= publish
                replies = [thing.response, thing.response + "/#"] if service == "aws.greengrass.ipc.mqttproxy" \
                    else [thing.response]  # local messages carry no MQTT 5 response topic
                assert resources == replies + [thing.status, thing.telemetry]


def _broken(change):  # type: ignore[no-untyped-def]
    recipe = copy.deepcopy(APP.template)
    change(recipe)
    return validate_recipe(recipe, template=True)


@pytest.mark.parametrize("change, fragment", [
    (lambda r: r.__setitem__("componentName", "x"), "unknown top-level key 'componentName'"),
    (lambda r: r.__setitem__("RecipeFormatVersion", "2021-01-01"), "RecipeFormatVersion"),
    (lambda r: r.__setitem__("ComponentVersion", "1.0"), "not a semantic version"),
    (lambda r: r["Manifests"][0]["Lifecycle"].__setitem__("shutdown", {"Script": "true"}), "step 'shutdown'"),
    (lambda r: r["Manifests"][0]["Lifecycle"].__setitem__("Run", "true"), "step 'Run'"),
    (lambda r: r["Manifests"][0]["Lifecycle"]["install"].__setitem__("Skipif", "onpath x"), "'Skipif'"),
    (lambda r: r["Manifests"][0]["Lifecycle"]["install"].__setitem__("RequiresPrivilege", True), "RequiresPrivilege"),
    (lambda r: r["Manifests"][0]["Platform"].pop("runtime"), "runtime must be"),
    (lambda r: r["Manifests"].pop(1), "no manifest for linux amd64"),
    (lambda r: r["Manifests"][0]["Artifacts"][0].__setitem__("URI", "s3://b/x.zip"), "unknown key 'URI'"),
    (lambda r: r["Manifests"][0]["Artifacts"][0].__setitem__("Digest", "abc"), "Digest must be"),
    (lambda r: r["Manifests"][0]["Lifecycle"]["run"].__setitem__("Script", "{artifacts:pth}/x"), "{artifacts:pth}"),
    (lambda r: r["Manifests"][0]["Lifecycle"]["run"].__setitem__(
        "Script", "{com.slmintents.IntentModel:artifacts:decompressedPath}"), "no component-name prefixes"),
    (lambda r: r["Manifests"][0]["Lifecycle"]["run"].__setitem__("Script", "{configuration:/Nope}"), "'Nope' is not in"),
    (lambda r: r["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]["aws.greengrass.ipc.pubsub"]
     ["com.slmintents.IntentService:pubsub:replies"].__setitem__("resources", ["*"]), "never '*'"),
    (lambda r: r["ComponentDependencies"][MODEL.name].__setitem__("DependencyType", "HARDER"), "HARD or SOFT"),
    (lambda r: r["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]["aws.greengrass.ipc.mqttproxy"]
     ["com.slmintents.IntentService:mqttproxy:requests"].__setitem__("resources", ["cmd/intents/{iot:thingName}/request"]),
     "recipe variables are not substituted in accessControl"),
    (lambda r: r["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]["aws.greengrass.ipc.pubsub"]
     ["com.slmintents.IntentService:pubsub:requests"].__setitem__("resources", ["cmd/intents/+/request"]),
     "matches '+' and '#' literally"),
    (lambda r: r["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]["aws.greengrass.ipc.mqttproxy"]
     ["com.slmintents.IntentService:mqttproxy:replies"].__setitem__("resources", ["dt/#/status"]), "whole level"),
    (lambda r: r["ComponentConfiguration"]["DefaultConfiguration"].__setitem__("Padding", "x" * 16_000), "16000"),
])
def test_the_checker_catches_what_greengrass_or_nucleus_lite_would_refuse(change, fragment):
    problems = _broken(change)
    assert any(fragment in p for p in problems), problems


def test_only_substitutable_variables_are_used():
    used = set(recipe_variables(APP.template)) | set(recipe_variables(MODEL.template))
    assert {v for v in used if not v.startswith("configuration:/")} == {
        "artifacts:decompressedPath", "work:path", "kernel:rootPath", "iot:thingName"}


def test_component_names_are_defined_once_and_match_the_gdk_projects():
    from cloud.greengrass.names import APP_COMPONENT, MODEL_COMPONENT

    assert (MODEL.name, APP.name) == (MODEL_COMPONENT, APP_COMPONENT)


def test_one_size_limit_and_one_version_rule_for_building_and_publishing():
    # The limit is GDK's (16,000 bytes of the recipe file, inclusive) on the exact bytes written and published.
    from cloud.greengrass.recipe import MAX_RECIPE_BYTES, greengrass_problems, is_version, recipe_bytes

    base = {"RecipeFormatVersion": "2020-01-25", "ComponentName": "a.b", "ComponentVersion": "1.0.0",
            "Manifests": [{}], "ComponentDescription": ""}
    pad = MAX_RECIPE_BYTES - len(recipe_bytes(base))
    at_limit = {**base, "ComponentDescription": "x" * pad}
    assert len(recipe_bytes(at_limit)) == MAX_RECIPE_BYTES and greengrass_problems(at_limit) == []
    over = {**base, "ComponentDescription": "x" * (pad + 1)}
    assert any("16001 bytes" in p for p in greengrass_problems(over))
    assert [v for v in ("1.0.3", "0.1.0-rc.1+build.7", "10.20.30") if not is_version(v)] == []
    assert [v for v in ("1.0", "01.0.0", "1.0.0.0", "NEXT_PATCH", "1." + "1" * 62 + ".0", 103) if is_version(v)] == []
