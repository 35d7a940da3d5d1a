"""The AWS code is imported lazily: the local path and the device never load boto3 or the SageMaker SDK."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

HEAVY = ("boto3", "botocore", "sagemaker", "moto")


def _loaded_after(code: str) -> list[str]:
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=True).stdout
    return [m for m in json.loads(out.splitlines()[-1]) if m in HEAVY]


def test_local_pipeline_store_and_registry_imports_stay_light():
    assert _loaded_after("import cloud, cloud.pipeline, cloud.store, cloud.registry, cloud.registry.cli") == []


def test_importing_cloud_aws_and_parsing_the_cli_stays_light():
    code = ("import cloud.aws, cloud.aws.greengrass, cloud.aws.neo, cloud.registry.sagemaker\n"
            "from cloud.store import Store\nStore.at('s3://bucket').edge('1')\n"
            "from cloud.pipeline import main\n"
            "try:\n    main(['definition', '--help'])\nexcept SystemExit:\n    pass")
    assert _loaded_after(code) == []


def test_edge_runtime_never_imports_the_aws_side():
    loaded = _loaded_after("import edge_runtime, edge_runtime.bundle, edge_runtime.cli")
    assert loaded == []
    out = subprocess.run([sys.executable, "-c", "import edge_runtime, sys; print('cloud' in sys.modules)"],
                         cwd=REPO, capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "False"


def test_public_api_of_cloud_aws_is_pinned():
    import cloud.aws

    assert sorted(cloud.aws.__all__) == [
        "AwsCallFailed", "AwsError", "DependencyMissing", "DeploymentBlocked", "NeoCompileFailed", "NeoConfig",
        "NeoResult", "NeoTarget", "PipelineConfig", "RolloutConfig", "S3Store", "build_pipeline", "definition",
        "start", "status", "upsert"]
    from cloud.errors import CloudError

    assert issubclass(cloud.aws.AwsError, CloudError)
    assert all(issubclass(getattr(cloud.aws, n), cloud.aws.AwsError)
               for n in ("AwsCallFailed", "DependencyMissing", "DeploymentBlocked", "NeoCompileFailed"))


def test_importing_cloud_aws_loads_no_submodule_and_its_names_load_on_use():
    # Given the package imported alone, Then only cloud.aws.errors is loaded with it (runpy warns when a module
    # run with -m is already in sys.modules), and each public name still resolves to its module's object
    out = subprocess.run([sys.executable, "-c", "import cloud.aws, sys, json; print(json.dumps(sorted("
                          "m for m in sys.modules if m.startswith('cloud.aws.'))))"],
                         cwd=REPO, capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out) == ["cloud.aws.errors"]
    import cloud.aws
    from cloud.aws import greengrass, neo, pipeline, s3store

    assert cloud.aws.PipelineConfig is pipeline.PipelineConfig and cloud.aws.upsert is pipeline.upsert
    assert cloud.aws.S3Store is s3store.S3Store and cloud.aws.RolloutConfig is greengrass.RolloutConfig
    assert cloud.aws.NeoTarget is neo.NeoTarget
    assert set(cloud.aws.__all__) <= set(dir(cloud.aws))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        cloud.aws.nothing  # noqa: B018


def test_running_the_aws_modules_with_python_m_gives_no_runpy_warning():
    for module in ("cloud.aws.greengrass", "cloud.aws.neo", "cloud.aws.telemetry"):
        done = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", module, "--help"], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "RuntimeWarning" not in done.stderr, (module, done.stderr[-500:])
        assert done.stdout.startswith("usage: "), (module, done.stdout[:200])
