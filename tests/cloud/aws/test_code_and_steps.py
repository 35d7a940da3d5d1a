"""What the SageMaker jobs run: the source bundle, sm_entry.py and the step runners, on local folders."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from tests.cloud.aws.conftest import REGION
from tests.conftest import REPO


def test_source_bundle_is_reproducible_and_self_contained(tmp_path):
    from cloud.aws.code import ENTRY_SCRIPT, collect_source

    a, b = collect_source(), collect_source()
    assert a.digest == b.digest and a.tarball() == b.tarball()
    names = set(a.files)
    assert {"cloud/aws/steps.py", "cloud/data.py", "edge_runtime/bundle.py", "gx/great_expectations.yml",
            "pipelines/params.json", "requirements.txt", ENTRY_SCRIPT} <= names
    assert not any("__pycache__" in n or n.endswith(".pyc") or "/uncommitted/" in n for n in names)
    assert a.entry_script == (REPO / "cloud" / "aws" / "entry.py").read_bytes()
    requirements = a.files["requirements.txt"].decode().split()
    assert any(r.startswith("onnxruntime") for r in requirements)
    assert not any(r.split("=")[0].split(">")[0] == "torch" for r in requirements)  # the image has torch
    # a different params file is a different code version
    params = json.loads((REPO / "pipelines" / "params.json").read_text())
    params["gate"]["min_macro_f1"] = 0.5
    (tmp_path / "p.json").write_text(json.dumps(params))
    assert collect_source(params_path=tmp_path / "p.json").digest != a.digest


@pytest.mark.parametrize("argv, expected", [
    (["prepare", "--data", "d"], ("prepare", ["--data", "d"])),
    (["--epochs", "3", "--step", "train", "--x", "1"], ("train", ["--epochs", "3", "--x", "1"])),
])
def test_entry_reads_the_step_both_ways(argv, expected):
    from cloud.aws.entry import split_step

    assert split_step(argv) == expected


def test_resolve_data_and_version_from_arn(tmp_path):
    from cloud.aws.steps import resolve_data, version_from_arn
    from cloud.errors import DataError

    (tmp_path / "snips" / "train").mkdir(parents=True)
    assert resolve_data(tmp_path / "snips") == tmp_path / "snips"
    assert resolve_data(tmp_path) == tmp_path / "snips"  # one level down, as s3 sync lays it out
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "intents.csv").write_text("text,intent\n")
    assert resolve_data(csv_dir) == csv_dir / "intents.csv"
    (csv_dir / "more.csv").write_text("text,intent\n")
    with pytest.raises(DataError, match="exactly one CSV"):
        resolve_data(csv_dir)
    arn = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/slm-intents-snips/12"
    assert version_from_arn(arn) == ("slm-intents-snips", 12)


def test_prepare_job_runs_from_the_unpacked_source_bundle(tmp_path, tiny_csv):
    # Given the source bundle laid out as the processing job sees it, When sm_entry.py runs "prepare",
    # Then cloud.data and cloud.validate run from the bundle and write processed/ and validation/
    from cloud.aws.code import ENTRY_SCRIPT, collect_source

    source = collect_source()
    (tmp_path / "input" / "source").mkdir(parents=True)
    (tmp_path / "input" / "source" / "sourcedir.tar.gz").write_bytes(source.tarball())
    (tmp_path / "input" / "code").mkdir()
    entry = tmp_path / "input" / "code" / ENTRY_SCRIPT
    entry.write_bytes(source.entry_script)
    (tmp_path / "input" / "data").mkdir()
    (tmp_path / "input" / "data" / "intents.csv").write_bytes(tiny_csv.read_bytes())
    env = {**os.environ, "SLM_SOURCE_TARBALL": str(tmp_path / "input/source/sourcedir.tar.gz"),
           "SLM_SOURCE_DIR": str(tmp_path / "source"), "SLM_SKIP_INSTALL": "1", "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, str(entry), "prepare", "--data", str(tmp_path / "input" / "data"),
                           "--out", str(tmp_path / "output")], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {p.name for p in (tmp_path / "output" / "processed").iterdir()} >= {"train.csv", "val.csv", "test.csv"}
    assert (tmp_path / "output" / "validation" / "validation.json").is_file()
    assert (tmp_path / "source" / "cloud" / "aws" / "steps.py").is_file()  # it ran from the bundle


def test_compile_edge_step_writes_the_bundle_and_records_it(moto_aws, candidate_bundle, tmp_path):
    from cloud.aws.steps import run_step
    from cloud.registry import open_registry
    from edge_runtime.bundle import Bundle

    with open_registry("sagemaker", region=REGION) as reg:
        pkg = reg.register("slm-intents-snips", {"int8": {"macro_f1": 0.98}}, {"run_id": "exec-1"}, {})
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps({
        "fp32": {"accuracy": 0.99, "macro_f1": 0.99}, "int8": {"accuracy": 0.98, "macro_f1": 0.98},
        "agreement": 0.995}))
    (evaluation / "reference.json").write_text(json.dumps({"label_distribution": {"PlayMusic": 1.0}}))
    arn = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/slm-intents-snips/{pkg.version}"
    rc = run_step("compile-edge", ["--candidate", str(candidate_bundle), "--onnx", str(tmp_path / "none"),
                                   "--evaluation", str(evaluation), "--out", str(tmp_path / "edge"),
                                   "--model-package-arn", arn, "--bucket", "b", "--role-arn", "r",
                                   "--region", REGION, "--neo", "false", "--run-id", "exec-1"])
    assert rc == 0
    bundle = Bundle.load(tmp_path / "edge" / str(pkg.version))
    assert bundle.manifest.metrics["int8"]["macro_f1"] == 0.98
    assert bundle.manifest.reference == {"label_distribution": {"PlayMusic": 1.0}}
    assert bundle.manifest.lineage["registry"]["version"] == pkg.version
    assert bundle.manifest.lineage["neo"]["status"] == "skipped"
    assert (tmp_path / "edge" / f"{pkg.version}.zip").is_file()
    with open_registry("sagemaker", region=REGION) as reg:
        assert reg.get("slm-intents-snips", pkg.version).artifacts == {
            "bundle": f"s3://b/slm-intents/edge/{pkg.version}", "bundle_zip": f"s3://b/slm-intents/edge/{pkg.version}.zip"}


def test_unknown_step_is_a_usage_error(capsys):
    from cloud.aws.steps import run_step

    assert run_step("deploy", []) == 2
    assert "expected one of: prepare, train, distill, evaluate, compile-edge" in capsys.readouterr().out


def test_model_tarball_is_unpacked_for_evaluation(tmp_path):
    from cloud.aws.steps import _extract_model

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("config.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.tar.gz").write_bytes(buf.getvalue())
    out = _extract_model(tmp_path / "model", tmp_path / "ckpt")
    assert (out / "config.json").read_text() == "{}"


def _model_tarball(model_dir, channel):
    """``model.tar.gz`` of a training job's ``SM_MODEL_DIR`` (its files at the root), in ``channel``, as SageMaker
    hands a model artifact to the next job."""
    channel.mkdir(parents=True)
    with tarfile.open(channel / "model.tar.gz", "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    return channel


def test_distill_and_evaluate_jobs_say_what_they_miss(tmp_path, tiny_base_model, capsys):
    # Given params that distill, When the distill job runs with --set distill.layers=0, Then it refuses (there is
    # no student); When evaluate runs without the teacher, Then it says the teacher is missing
    from cloud.aws.steps import run_step
    from tests.cloud.conftest import make_params

    params = make_params(tmp_path, tiny_base_model)
    rc = run_step("distill", ["--data", str(tmp_path / "none"), "--teacher", str(tmp_path / "none"),
                              "--out", str(tmp_path / "student"), "--params", str(params), "--threads", "1",
                              "--set", "distill.layers=0"])
    assert rc == 1 and "distill.layers is 0" in capsys.readouterr().out
    assert not (tmp_path / "student").exists()
    rc = run_step("evaluate", ["--model", str(tmp_path / "none"), "--teacher", str(tmp_path / "no-teacher"),
                               "--data", str(tmp_path / "none"), "--out", str(tmp_path / "out"),
                               "--work", str(tmp_path / "work"), "--params", str(params)])
    assert rc == 1 and "needs the teacher" in capsys.readouterr().out


@pytest.mark.slow
def test_train_distill_and_evaluate_jobs_chain_like_on_sagemaker(tmp_path, tiny_csv, tiny_base_model, monkeypatch):
    # Given prepared data, When the train job, the distill job (SageMaker's env vars, the teacher as the train
    # job's model.tar.gz in its "teacher" channel) and the evaluate job (the student's and the teacher's
    # model.tar.gz) run, Then the student is a 1-layer model that serves like the teacher (code/), and
    # evaluation/ holds metrics.json with the teacher's FP32 scores and the gate.json the pipeline's condition reads
    from cloud.aws.code import INFERENCE_SCRIPT, SERVING_CODE_DIR
    from cloud.aws.steps import run_step
    from tests.cloud.conftest import make_params

    params = make_params(tmp_path, tiny_base_model, **{"train.epochs": 2, "distill.epochs": 2})
    assert run_step("prepare", ["--data", str(tiny_csv), "--out", str(tmp_path / "prep"), "--params", str(params)]) == 0
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(tmp_path / "prep" / "processed"))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setenv("SM_OUTPUT_DATA_DIR", str(tmp_path / "train-output"))
    # a pipeline parameter as the training toolkit passes hyperparameter set.train.seed
    assert run_step("train", ["--params", str(params), "--threads", "2", "--set.train.seed", "7"]) == 0
    recorded = json.loads((tmp_path / "train-output" / "params.json").read_text())
    assert recorded["train"]["threads"] == 2 and recorded["train"]["seed"] == 7
    # the teacher's model.tar.gz serves too (cloud.endpoint deploy --serve teacher): the handler is in its code/
    assert (tmp_path / "model" / SERVING_CODE_DIR / INFERENCE_SCRIPT).is_file()
    teacher = _model_tarball(tmp_path / "model", tmp_path / "teacher-artifact")

    monkeypatch.setenv("SM_CHANNEL_TEACHER", str(teacher))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "student"))
    monkeypatch.setenv("SM_OUTPUT_DATA_DIR", str(tmp_path / "distill-output"))
    # as the training toolkit passes hyperparameters: --step distill among them, plus a --set override
    assert run_step("distill", ["--params", str(params), "--threads", "1", "--set", "distill.temperature=3.0",
                                "--work", str(tmp_path / "distill-work")]) == 0
    recorded = json.loads((tmp_path / "distill-output" / "params.json").read_text())
    assert recorded["distill"]["temperature"] == 3.0 and recorded["train"]["threads"] == 1
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["distilled_from_layers"] == [2]
    assert (tmp_path / "student" / SERVING_CODE_DIR / INFERENCE_SCRIPT).is_file()
    student = _model_tarball(tmp_path / "student", tmp_path / "student-artifact")

    rc = run_step("evaluate", ["--model", str(student), "--teacher", str(teacher),
                               "--data", str(tmp_path / "prep" / "processed"),
                               "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                               "--params", str(params)])
    assert rc == 0
    assert json.loads((tmp_path / "work" / "checkpoint" / "config.json").read_text())["num_hidden_layers"] == 1
    assert json.loads((tmp_path / "work" / "teacher" / "config.json").read_text())["num_hidden_layers"] == 2
    gate = json.loads((tmp_path / "out" / "evaluation" / "gate.json").read_text())
    metrics = json.loads((tmp_path / "out" / "evaluation" / "metrics.json").read_text())
    assert gate["int8_macro_f1"] == metrics["int8"]["macro_f1"]
    assert gate["int8_drop"] == pytest.approx(metrics["fp32"]["macro_f1"] - metrics["int8"]["macro_f1"])
    assert 0.0 <= metrics["teacher_fp32"]["macro_f1"] <= 1.0 and "accuracy" in metrics["teacher_fp32"]
    from edge_runtime.bundle import Bundle

    assert Bundle.load(tmp_path / "out" / "candidate").manifest.extra["architecture"]["layers"] == 1  # the student's
    assert (tmp_path / "out" / "onnx" / "model.fp32.onnx").is_file()  # what Neo compiles


def _toolkit_argv(hyperparameters: dict) -> list:
    """The argv the SageMaker training toolkit gives the entry script for a job's HyperParameters: every value
    JSON-decoded (sagemaker_training.environment.read_hyperparameters), the ``sagemaker_*`` ones taken out, the
    rest as ``--KEY str(value)`` in sorted key order (sagemaker_training.mapping.to_cmd_args)."""
    decoded = {k: json.loads(v) for k, v in hyperparameters.items()}
    argv = []
    for key in sorted(k for k in decoded if not k.startswith("sagemaker_")):
        argv += [f"--{key}", str(decoded[key])]
    return argv


def test_training_jobs_read_pipeline_parameters_passed_as_hyperparameters(tmp_path, tiny_base_model, capsys):
    # Given a training job whose HyperParameters carry an override as the pipeline sends it (set.KEY, a JSON
    # number as a string), When the toolkit's argv reaches the distill job, Then the override is applied: with
    # distill.layers 0 the job refuses before it reads any data
    from cloud.aws.steps import hyperparameter_overrides, run_step
    from tests.cloud.conftest import make_params

    hp = {"sagemaker_program": json.dumps("sm_entry.py"), "step": json.dumps("distill"), "set.distill.layers": "0",
          "set.distill.temperature": "3.5"}
    argv = _toolkit_argv(hp)
    assert argv == ["--set.distill.layers", "0", "--set.distill.temperature", "3.5", "--step", "distill"]
    assert hyperparameter_overrides(argv) == ["distill.layers=0", "distill.temperature=3.5"]
    assert hyperparameter_overrides(["--set.model_name=x", "--threads", "1"]) == ["model_name=x"]
    params = make_params(tmp_path, tiny_base_model)
    rc = run_step("distill", ["--data", str(tmp_path / "none"), "--teacher", str(tmp_path / "none"),
                              "--out", str(tmp_path / "student"), "--params", str(params), "--threads", "1",
                              *[a for a in argv if a not in ("--step", "distill")]])
    assert rc == 1 and "distill.layers is 0" in capsys.readouterr().out


def test_a_hyperparameter_override_without_a_value_is_an_error():
    from cloud.aws.steps import hyperparameter_overrides
    from cloud.errors import ParamsError

    with pytest.raises(ParamsError, match="no value"):
        hyperparameter_overrides(["--set.train.epochs"])


def test_the_bundle_carries_the_effective_params_the_jobs_read(tmp_path, monkeypatch):
    # Given overrides of a build (upsert --set), When the source bundle is made with the effective params and
    # unpacked as a job does, Then the jobs' params (the bundle's pipelines/params.json) are the overridden ones
    from cloud.aws import steps
    from cloud.aws.code import collect_source
    from cloud.aws.pipeline import PipelineConfig
    from cloud.aws.entry import extract_tar

    config = PipelineConfig(region="eu-west-1", role_arn="arn:aws:iam::123456789012:role/r", bucket="b",
                            overrides={"train.epochs": 2, "gate.min_macro_f1": 0.9})
    params = config.load_params()
    assert params.train.epochs == 2 and params.gate.min_macro_f1 == 0.9
    effective = (json.dumps(params.to_dict(), indent=2) + "\n").encode()
    bundle = collect_source(params_json=effective)
    assert bundle.digest != collect_source().digest  # another bundle, another code folder
    with tarfile.open(fileobj=io.BytesIO(bundle.tarball())) as tar:
        extract_tar(tar, tmp_path / "src")
    monkeypatch.setattr(steps, "_SOURCE_ROOT", tmp_path / "src")
    read = steps._params(None)
    assert read == params and read.train.epochs == 2 and read.gate.min_macro_f1 == 0.9
