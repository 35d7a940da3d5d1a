"""The device install stays small: the base dependencies carry nothing from the training or AWS side."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import REPO

HEAVY = {"torch", "transformers", "optimum", "boto3", "botocore", "sagemaker", "great-expectations", "pandas"}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_base_and_device_extras_pull_no_heavy_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert _names(project["dependencies"]) == {"numpy", "tokenizers", "onnxruntime", "psutil"}
    for extra in ("edge", "mqtt", "greengrass", "dlr"):
        assert not _names(project["optional-dependencies"].get(extra, [])) & HEAVY, extra


def test_torch_is_pinned_to_the_cpu_wheel_on_disk():
    cloud = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["cloud"]
    assert "torch==2.13.0" in cloud


def test_the_wheel_ships_the_type_marker_and_the_budgets(tmp_path):
    import zipfile

    import pytest

    wheel = pytest.importorskip("hatchling.builders.wheel", reason="hatchling (the build backend) is not installed")
    # Given the wheel built by the project's build backend from this checkout
    built = list(wheel.WheelBuilder(str(REPO)).build(directory=str(tmp_path), versions=["standard"]))
    names = set(zipfile.ZipFile(built[0]).namelist())
    # Then it carries the PEP 561 marker (type checkers read edge_runtime's hints) and the bench budgets
    assert {"edge_runtime/py.typed", "edge_runtime/bench/budgets.json"} <= names
    assert not any(n.startswith("tests/") for n in names)
