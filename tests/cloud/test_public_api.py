"""What each cloud package exports, and the error trees: pinned, so a change to either is a decision, not an accident."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import cloud
from cloud.errors import CloudError

EXPORTS = {
    "cloud": [],
    "cloud.inference": [],
    "cloud.aws": ["AwsCallFailed", "AwsError", "DependencyMissing", "DeploymentBlocked", "NeoCompileFailed",
                  "NeoConfig", "NeoResult", "NeoTarget", "PipelineConfig", "RolloutConfig", "S3Store",
                  "build_pipeline", "definition", "start", "status", "upsert"],
    "cloud.greengrass": ["APP_COMPONENT", "BuildResult", "ComponentBuildError", "GreengrassError",
                         "GreengrassProject", "MAX_RECIPE_BYTES", "MODEL_COMPONENT", "PROJECTS_DIR", "RecipeError",
                         "SUPPORTED_ARCHITECTURES", "THING_GROUPS", "build_components", "build_wheel",
                         "check_recipe", "check_version", "component_pin", "digest_b64", "load_project",
                         "load_recipe", "main", "recipe_bytes", "recipe_variables", "render_recipe",
                         "validate_recipe"],
    "cloud.registry": ["Action", "ApprovalStatus", "BACKENDS", "HistoryEvent", "ModelPackage", "ModelPackageGroup",
                       "ModelRegistry", "SqliteRegistry", "Stage", "open_registry"],
}


def _packages() -> list[str]:
    return ["cloud"] + sorted(m.name for m in pkgutil.walk_packages(cloud.__path__, "cloud.") if m.ispkg)


def test_every_cloud_package_is_pinned():
    assert _packages() == sorted(EXPORTS)


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_exports_are_pinned_and_exist(name):
    module = importlib.import_module(name)
    assert sorted(module.__all__) == sorted(EXPORTS[name])
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert missing == []


def _modules() -> list[str]:
    return ["cloud"] + sorted(m.name for m in pkgutil.walk_packages(cloud.__path__, "cloud.")
                              if m.name.split(".")[-1] not in ("__main__", "entry"))


def test_every_exception_of_the_cloud_side_is_in_the_tree_the_errors_modules_draw():
    # Given every exception class the cloud modules define (entry.py is uploaded alone and has none of its own)
    import cloud.aws.errors
    import cloud.errors

    drawn = cloud.errors.__doc__ + cloud.aws.errors.__doc__
    defined = {}
    for name in _modules():
        module = importlib.import_module(name)
        for cls_name, cls in vars(module).items():
            if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == name:
                defined[f"{name}.{cls_name}"] = cls
    # Then each joins CloudError's tree, lives in an errors module, and the tree's drawing names it
    assert defined, "no exception classes found"
    outside = [n for n, c in defined.items() if not issubclass(c, CloudError)]
    assert outside == []
    assert sorted(n for n in defined if not n.rsplit(".", 1)[0].endswith("errors")) == []
    assert [n for n in defined if n.rsplit(".", 1)[1] not in drawn] == []


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))  # __version__ is public


def test_no_module_imports_a_private_name_of_another():
    import ast

    from tests.conftest import REPO

    offenders = []
    for path in sorted((REPO / "cloud").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                parts = (node.module or "").split(".")
                names = [a.name for a in node.names]
                if any(_private(p) for p in parts) or any(_private(n) for n in names):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
