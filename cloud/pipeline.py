"""The main job: every step of the pipeline, locally, with embedded defaults and step caching.

    python -m cloud.pipeline run [--params F] [--data PATH] [--store DIR] [--summary-json F]
    python -m cloud.pipeline definition | upsert | start | status ...   (the same pipeline on SageMaker)

Steps (each also runs alone as ``python -m cloud.<module>``, reading and writing paths like a SageMaker job):

    prepare -> validate (Great Expectations) -> train (the teacher) -> distill (the student that ships; skipped
      with distill.layers 0) -> compile (ONNX, static INT8, candidate bundle)
      -> evaluate (FP32 + INT8 through edge_runtime) -> gate (F1) -> register (Staging)
      -> package (edge/<version>/ bundle + zip, linux_arm64)

A step whose inputs, parameters and code are unchanged is skipped and its earlier outputs are reused
(like SageMaker step caching). Nothing is registered unless validation, evaluation and the gate pass.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import CloudError
from .params import Params, load_params
from .store import Store

__all__ = ["LocalPipeline", "StepRecord", "main"]

log = logging.getLogger(__name__)
_CLOUD = Path(__file__).resolve().parent
_REPO = _CLOUD.parent
STEPS = ("prepare", "validate", "train", "distill", "compile", "evaluate", "gate", "register", "package")


def _hash(*parts: Any) -> str:
    """Step caching key: the typed inputs (parameter sections as their JSON form), hashes and code versions."""
    h = hashlib.sha256()
    for part in parts:
        if dataclasses.is_dataclass(part):
            part = dataclasses.asdict(part)
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def _files_hash(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.relative_to(_REPO).as_posix().encode() if p.is_relative_to(_REPO) else p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _code_hash(*relative: str) -> str:
    """Hash of the source a step runs (files or whole directories under the repository)."""
    files: list[Path] = []
    for rel in relative:
        p = _REPO / rel
        files.extend(sorted(q for q in p.rglob("*") if q.is_file() and "__pycache__" not in q.parts)
                     if p.is_dir() else [p])
    return _files_hash(files)


def _input_hash(data: Path) -> str:
    files = [data] if data.is_file() else sorted(q for q in data.rglob("*") if q.is_file())
    return _files_hash(files)


def code_version() -> str:
    """The git commit of the code (``+dirty`` with uncommitted changes), or ``unknown`` outside a checkout."""
    try:
        # git from PATH, like a developer's shell; the argv is fixed and the result is only a provenance label
        head = subprocess.run(  # nosec B603 B607 # fixed git argv
            ["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True, text=True, timeout=10, check=True)
        changes = subprocess.run(  # nosec B603 B607 # fixed git argv
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=_REPO, capture_output=True, text=True,
            timeout=10)
        return head.stdout.strip() + ("+dirty" if changes.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass
class StepRecord:
    name: str
    status: str = "pending"  # ran | cached | failed | skipped
    seconds: float = 0.0
    detail: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 2), "detail": self.detail,
                "outputs": self.outputs}


#: the key of a cache record listing its outputs that are paths relative to the store's root
_IN_STORE = "_store_relative"


class LocalPipeline:
    """Runs the steps in order against a local store; ``run()`` returns the summary dict (contract 3)."""

    def __init__(self, params: Params, data: Path, store: Store, *, run_id: str | None = None,
                 progress: bool = True, out: Callable[[str], None] | None = None) -> None:
        self.params = params
        self.data = Path(data)
        self.store = store
        self.run_id = run_id or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
        self.progress = progress
        self.out = out or (lambda line: print(line, flush=True))
        self.records = {name: StepRecord(name) for name in STEPS}
        self.state: dict[str, Any] = {}

    # caching ---------------------------------------------------------------------------------------------
    def _cache_file(self, step: str, key: str) -> Path:
        return self.store.cache() / step / f"{key}.json"

    def _cached(self, step: str, key: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        path = self._cache_file(step, key)
        if not path.is_file():
            return None
        outputs = json.loads(path.read_text())
        # paths inside the store were recorded relative to it: rebase them on the store as it is reached now
        for name in outputs.pop(_IN_STORE, []):
            outputs[name] = str(self.store.root / outputs[name])
        return outputs if check(outputs) else None

    def _remember(self, step: str, key: str, outputs: dict[str, Any]) -> None:
        path = self._cache_file(step, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        record, root = dict(outputs), self.store.root.resolve()
        # A path inside the store is kept relative to the store's root, so a store that was moved, or is named
        # from another working directory (a relative --store), still finds its cached steps.
        for name, value in outputs.items():
            if not (isinstance(value, str) and "/" in value and Path(value).exists()):
                continue
            inside = Path(value).resolve()
            if inside.is_relative_to(root):
                record[name] = inside.relative_to(root).as_posix()
                record.setdefault(_IN_STORE, []).append(name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, default=str))
        os.replace(tmp, path)

    def _step(self, index: int, name: str, key: str | None, body: Callable[[], dict[str, Any]],
              check: Callable[[dict[str, Any]], bool] = lambda o: True, describe: Callable[[dict[str, Any]], str] = lambda o: "") -> dict[str, Any]:
        record = self.records[name]
        started = time.perf_counter()
        cached = self._cached(name, key, check) if key else None
        if cached is not None:
            record.status, outputs = "cached", cached
        else:
            try:
                outputs = body()
            except BaseException as exc:
                record.status, record.seconds = "failed", time.perf_counter() - started
                record.detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                self.out(f"[{index}/{len(STEPS)}] {name:<9} FAILED  {record.seconds:7.1f}s  {record.detail}")
                raise
            record.status = "ran"
            if key:
                self._remember(name, key, outputs)
        record.seconds = time.perf_counter() - started
        record.outputs = outputs
        record.detail = describe(outputs)
        self.out(f"[{index}/{len(STEPS)}] {name:<9} {record.status:<7} {record.seconds:7.1f}s  {record.detail}")
        return outputs

    # the steps -------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Every step in order (:mod:`cloud.steps`); each is skipped when its typed inputs and code are unchanged."""
        from . import steps
        from .data import data_hash
        from .registry import open_registry

        p = self.params
        if not self.data.exists():
            raise CloudError(f"data not found: {self.data}")
        processed = self.store.processed()

        # 1. prepare
        prep_key = _hash("prepare", _input_hash(self.data), p.data, p.labels, _code_hash("cloud/data.py"))
        prep = self._step(1, "prepare", prep_key, lambda: steps.prepare_step(self.data, self.store.base, p).to_dict(),
                          check=lambda o: (processed / "train.csv").is_file() and data_hash(processed) == o["data_hash"],
                          describe=lambda o: " / ".join(f"{k} {v}" for k, v in o["counts"].items()) + f" ({o['source']})")
        data_hash_ = prep["data_hash"]

        # 2. validate
        val_key = _hash("validate", data_hash_, p.data, p.labels, _code_hash("cloud/validate.py", "gx"))
        val_dir = self.store.validation(self.run_id)
        self._step(2, "validate", val_key,
                   lambda: steps.validate_step(processed, val_dir, p, source=prep["source"]).to_dict(),
                   describe=lambda o: f"{o.get('expectations', '?')} expectations passed")

        # 3. train
        train_key = _hash("train", data_hash_, p.train, p.labels, _code_hash("cloud/train.py", "cloud/modeling.py"))
        model_dir = self.store.models(self.run_id) / "checkpoint"
        trained = self._step(3, "train", train_key,
                             lambda: steps.train_step(processed, model_dir, p, progress=self.progress).to_dict(),
                             check=lambda o: (Path(o["model_dir"]) / "config.json").is_file(),
                             describe=lambda o: f"best epoch {o['best_epoch']}, val macro-F1 {o['best_val_macro_f1']:.4f}")
        teacher_dir = model_dir = Path(trained["model_dir"])

        # 4. distill: the shallower student that ships, taught by the trained model
        model_key = train_key
        if p.distill.layers:
            model_key = _hash("distill", train_key, p.distill, _code_hash("cloud/train.py", "cloud/modeling.py"))
            student_dir = self.store.models(self.run_id) / "student"
            distilled = self._step(4, "distill", model_key,
                                   lambda: steps.distill_step(teacher_dir, processed, student_dir, p,
                                                              progress=self.progress).to_dict(),
                                   check=lambda o: (Path(o["model_dir"]) / "config.json").is_file(),
                                   describe=lambda o: f"{p.distill.layers}-layer student, best epoch "
                                                      f"{o['best_epoch']}, val macro-F1 {o['best_val_macro_f1']:.4f}")
            model_dir = Path(distilled["model_dir"])
        else:
            self.records["distill"].status, self.records["distill"].detail = "skipped", "distill.layers 0"
            self.out(f"[4/{len(STEPS)}] distill   skipped           distill.layers 0: the trained model ships")

        # 5. compile (candidate bundle: the device path evaluation scores)
        compile_key = _hash("compile", model_key, p.compile, p.model_name, p.train.max_length,
                            _code_hash("cloud/compile.py", "edge_runtime/bundle.py", "edge_runtime/tokenizer.py"))
        work = self.store.models(self.run_id)
        compiled = self._step(5, "compile", compile_key,
                              lambda: steps.compile_step(model_dir, processed, work / "candidate", p,
                                                         version=f"candidate-{self.run_id}",
                                                         work_dir=work / "onnx").to_dict(),
                              check=lambda o: (Path(o["bundle_dir"]) / "manifest.json").is_file(),
                              describe=lambda o: f"INT8 {o['int8_mb']:.1f} MB (FP32 {o['fp32_mb']:.1f} MB), "
                                                 f"val agreement {o['agreement_val']:.2%}" + _class_agreement(o))
        candidate = Path(compiled["bundle_dir"])

        # 6. evaluate
        eval_key = _hash("evaluate", compile_key, data_hash_, p.evaluate,
                         _code_hash("cloud/evaluate.py", "cloud/metrics.py", "edge_runtime"))
        eval_dir = self.store.evaluation(self.run_id)
        evaluated = self._step(6, "evaluate", eval_key,
                               lambda: steps.evaluate_step(model_dir, candidate, processed, eval_dir, p,
                                                           teacher=teacher_dir if p.distill.layers else None).to_dict(),
                               check=lambda o: (Path(o["dir"]) / "metrics.json").is_file(),
                               describe=lambda o: f"INT8 acc {o['metrics']['int8']['accuracy']:.2%} macro-F1 "
                                                  f"{o['metrics']['int8']['macro_f1']:.2%} | FP32 acc "
                                                  f"{o['metrics']['fp32']['accuracy']:.2%} | agreement {o['metrics']['agreement']:.2%}"
                                                  + _teacher_text(o["metrics"])
                                                  + _oos_text(o["metrics"]))
        metrics = evaluated["metrics"]
        eval_dir = Path(evaluated["dir"])
        self.state["metrics"] = metrics

        # 7. gate
        self._step(7, "gate", None, lambda: steps.gate_step(metrics, p.gate).to_dict(),
                   describe=lambda o: f"INT8 macro-F1 {o['int8_macro_f1']:.4f} >= {o['min_macro_f1']}, "
                                      f"accuracy {o['int8_accuracy']:.4f} >= {o['min_accuracy']}, "
                                      f"drop {o['int8_drop']:+.4f} <= {o['max_int8_drop']}")

        # 8. register (once per evaluated model: a re-run with everything cached reuses the version)
        lineage = {"run_id": self.run_id, "data_hash": data_hash_, "data_source": prep["source"],
                   "data_input": str(self.data), "code_version": code_version(), "base_model": p.train.base_model,
                   "parameters": p.to_dict(), "train_key": train_key}
        if p.distill.layers:  # the device model is the student; the teacher stays the cloud's reference model
            lineage["distilled_from"] = {"train_key": train_key, "model": teacher_dir.resolve().as_uri(),
                                         "distill_key": model_key}
        registry = open_registry("local", store=self.store.root)
        self.state["registry"] = registry

        def _still_registered(o: dict[str, Any]) -> bool:
            try:
                return registry.get(o["group"], o["version"]).approval_status.value != "Rejected"
            except CloudError:
                return False

        reg = self._step(8, "register", _hash("register", eval_key),
                         lambda: steps.register_step(
                             registry, p, metrics=metrics, lineage=lineage,
                             artifacts={"model": model_dir.resolve().as_uri(),
                                        **({"teacher_model": teacher_dir.resolve().as_uri()} if p.distill.layers
                                           else {}),
                                        "candidate_bundle": candidate.resolve().as_uri(),
                                        "evaluation": eval_dir.resolve().as_uri()},
                             description=f"{p.model_name} run {self.run_id}").to_dict(),
                         check=_still_registered, describe=lambda o: f"{o['group']} version {o['version']}")
        version = str(reg["version"])

        # 9. package: the edge bundle of the registered version, and its zip (the Greengrass artifact)
        def _package() -> dict[str, Any]:
            reference_file = eval_dir / "reference.json"
            try:
                res = steps.package_step(
                    candidate, self.store.edge(version).parent, version,
                    metrics={**steps.registry_metrics(metrics), "test_rows": metrics["test_rows"],
                             "batch_consistency": metrics["batch_consistency"]},
                    lineage={**lineage, "registry": {"backend": "local", "group": reg["group"],
                                                     "version": reg["version"]}},
                    reference=json.loads(reference_file.read_text()) if reference_file.is_file() else {})
            except BaseException as exc:
                registry.reject(reg["group"], reg["version"], "pipeline", f"packaging the edge bundle failed: {exc}")
                raise
            registry.add_artifacts(reg["group"], reg["version"], {"bundle": res.bundle.resolve().as_uri(),
                                                                  "bundle_zip": res.zip.resolve().as_uri()})
            return res.to_dict()

        def _bundle_ok(o: dict[str, Any]) -> bool:
            from edge_runtime.bundle import Bundle
            from edge_runtime.errors import BundleError

            try:
                return Bundle.load(o["bundle"]).manifest.version == version
            except BundleError:
                return False

        packaged = self._step(9, "package", _hash("package", eval_key, version,
                                                  _code_hash("cloud/steps.py", "edge_runtime/bundle.py")),
                              _package, check=_bundle_ok,
                              describe=lambda o: f"{o['bundle']} (+ zip {o['zip_mb']:.1f} MB), target {p.compile.target}")
        pkg = registry.get(reg["group"], reg["version"])
        registry.close()
        return self._summary("succeeded", bundle=packaged["bundle"], package=pkg.to_dict())

    def _summary(self, status: str, *, bundle: str | None = None, package: dict[str, Any] | None = None,
                 error: str | None = None, report: str | None = None) -> dict[str, Any]:
        metrics = self.state.get("metrics")
        summary: dict[str, Any] = {
            "run_id": self.run_id,
            "status": status,
            "metrics": {
                "fp32": {k: metrics["fp32"][k] for k in ("accuracy", "macro_f1")},
                "int8": {k: metrics["int8"][k] for k in ("accuracy", "macro_f1")},
                **({"teacher_fp32": {k: metrics["teacher_fp32"][k] for k in ("accuracy", "macro_f1")}}
                   if "teacher_fp32" in metrics else {}),
                "agreement": metrics["agreement"],
                "batch_consistency": metrics["batch_consistency"]["rate"],
                "test_rows": metrics["test_rows"],
            } if metrics else None,
            "registry": {"backend": "local", "group": package["group"], "version": package["version"],
                         "approval_status": package["approval_status"], "stage": package["stage"]} if package else None,
            "bundle": bundle,
            "store": str(self.store.root),
            "params": self.params.to_dict(),
            "steps": [r.to_dict() for r in self.records.values()],
            "seconds": round(sum(r.seconds for r in self.records.values()), 1),
        }
        if error:
            summary["error"] = error
        if report:
            summary["report"] = report
        return summary

    def fail(self, exc: BaseException) -> dict[str, Any]:
        for r in self.records.values():
            if r.status == "pending":
                r.status = "skipped"
        registry = self.state.get("registry")
        if registry is not None:
            registry.close()
        return self._summary("failed", error=str(exc), report=getattr(exc, "report", None) or None)

    def table(self) -> str:
        lines = [f"{'step':<10}{'status':<9}{'seconds':>9}  detail"]
        lines += [f"{r.name:<10}{r.status:<9}{r.seconds:>9.1f}  {r.detail}" for r in self.records.values()]
        return "\n".join(lines)


def _class_agreement(compiled: dict[str, Any]) -> str:
    per_class = compiled.get("agreement_per_class") or {}
    if not per_class:
        return ""
    label, worst = min(per_class.items(), key=lambda kv: kv[1]["agreement"])
    return f" (lowest class {label} {worst['agreement']:.2%})"


def _teacher_text(metrics: dict[str, Any]) -> str:
    teacher = metrics.get("teacher_fp32")
    return f" | teacher FP32 acc {teacher['accuracy']:.2%}" if teacher else ""


def _oos_text(metrics: dict[str, Any]) -> str:
    oos = metrics.get("out_of_scope") or {}
    if not oos.get("enabled"):
        return ""
    return (f" | out-of-scope on: {oos['test_unknown_rate']:.2%} of test answered unknown, "
            f"INT8 acc {oos['int8_accuracy_with_decision']:.2%}")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _run(args: argparse.Namespace) -> int:
    from .data import with_columns

    try:
        params = with_columns(load_params(args.params), args)
    except CloudError as exc:  # before any step: nothing ran, nothing to summarize
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store = Store.at(args.store)
    pipeline = LocalPipeline(params, Path(args.data), store, progress=not args.no_progress)
    print(f"run {pipeline.run_id}: data {args.data}, store {store.root}, params {args.params or 'pipelines/params.json'}", flush=True)
    try:
        summary = pipeline.run()
        rc = 0
    except CloudError as exc:
        summary = pipeline.fail(exc)
        print(f"\npipeline stopped: {exc}", file=sys.stderr)
        if getattr(exc, "report", ""):
            print(exc.report, file=sys.stderr)  # type: ignore[attr-defined]
        rc = 1
    except Exception as exc:  # a bug or an environment problem: still leave a failed summary behind
        import traceback

        traceback.print_exc()
        summary = pipeline.fail(exc)
        rc = 1
    print("\n" + pipeline.table())
    if summary.get("metrics"):
        m = summary["metrics"]
        print(f"\nINT8 (device path): accuracy {m['int8']['accuracy']:.2%}, macro-F1 {m['int8']['macro_f1']:.2%} | "
              f"FP32: accuracy {m['fp32']['accuracy']:.2%}, macro-F1 {m['fp32']['macro_f1']:.2%} | agreement {m['agreement']:.2%}")
    if summary.get("registry"):
        r = summary["registry"]
        print(f"registered {r['group']} v{r['version']} ({r['approval_status']}, {r['stage']}); bundle {summary['bundle']}")
    _write_json(store.last_run, summary)
    if args.summary_json:
        _write_json(Path(args.summary_json), summary)
    print(f"status: {summary['status']} ({summary['seconds']}s); summary in {args.summary_json or store.last_run}")
    return rc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloud.pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run every step locally", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run.add_argument("--params", default=None, help="params JSON (default: pipelines/params.json)")
    run.add_argument("--data", default=str(_REPO.parent / "shared" / "data" / "snips"),
                     help="SNIPS directory (train/valid/test with seq.in + label), a directory of train/val/test CSV "
                          "or JSONL files, or one CSV / JSONL file")
    from .data import add_column_arguments

    add_column_arguments(run)
    run.add_argument("--store", default=None, help="store directory (default: .store)")
    run.add_argument("--summary-json", default=None, help="also write the run summary here")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(func=_run)
    from .aws.cli import add_pipeline_commands  # definition / upsert / start / status (SageMaker)

    add_pipeline_commands(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "run" and str(args.store or "").startswith("s3://"):
        from .aws.cli import run_with_s3_store

        return int(run_with_s3_store(args, _run))
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
