"""What ``IntentClassifier.predict`` (one text) spends outside ``InferenceSession.run``, stage by stage.

    python bench/predict_overhead.py --bundle DIR [--bundle DIR2 ...] [--baseline OLD/edge_runtime] [--calls 3000]

Each stage is timed alone (``time.perf_counter_ns``, median over ``--calls`` calls, on the texts of
:data:`edge_runtime.bench.UTTERANCES` in turn): tokenize, the feeds, ``InferenceSession.run`` itself, the backend's
wrapper around it, the finite check, the out-of-scope decision (numpy path or the in-graph score's comparison),
softmax, decode; then ``predict`` end to end, ``predict - session.run`` (as noisy as the model run), and ``predict``
with the backend's run replaced by its answer (everything but the model, without the model's noise). ``--baseline`` is another
revision's ``edge_runtime`` package folder (``git archive``), imported beside this one: every configuration (code x
bundle) then runs in the same process, in ``--rounds`` alternating turns, so a noisy machine affects them alike; the
spread of the per-round medians says how noisy it was.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model", "CPU part")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def load_package(folder: Path, name: str) -> Any:
    """Import the package in ``folder`` under ``name`` (its imports are relative, so it runs beside this one)."""
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def median_ns(fn: Callable[[int], object], calls: int) -> float:
    times = []
    for i in range(calls):
        t = time.perf_counter_ns()
        fn(i)
        times.append(time.perf_counter_ns() - t)
    return float(statistics.median(times))


def stages(pkg: Any, clf: Any, texts: list[str], calls: int) -> dict[str, float]:
    """Median microseconds of each stage of ``clf.predict`` for one text (``pkg``: the classifier's package)."""
    import numpy as np

    classifier_mod = sys.modules[pkg.__name__ + ".classifier"]
    backend, k = clf.backend, len(clf.labels)
    session = backend._session
    fetch = [getattr(backend, "output_name", None) or backend._output]
    encs = [clf.tokenizer.encode([t]) for t in texts]
    feeds = [e.feeds(backend.input_names) for e in encs]
    outs = [np.asarray(backend.run(f), dtype=np.float32) for f in feeds]
    in_graph = bool(getattr(clf, "score_in_graph", False))
    n = len(texts)
    out: dict[str, float] = {}
    out["tokenize"] = median_ns(lambda i: clf.tokenizer.encode([texts[i % n]]), calls)
    out["feeds"] = median_ns(lambda i: encs[i % n].feeds(backend.input_names), calls)
    out["session.run"] = median_ns(lambda i: session.run(fetch, feeds[i % n]), calls)
    out["backend.run"] = median_ns(lambda i: backend.run(feeds[i % n]), calls)
    out["finite check"] = median_ns(lambda i: np.isfinite(outs[i % n]).all(), calls)
    if clf.detector is not None and clf.out_of_scope:
        det = clf.detector
        out["oos"] = median_ns((lambda i: outs[i % n][:, k] > det.threshold) if in_graph
                               else (lambda i: det.flags(outs[i % n][:, k:])), calls)
    probs = [classifier_mod._softmax(o[:, :k]) for o in outs]
    out["softmax"] = median_ns(lambda i: classifier_mod._softmax(outs[i % n][:, :k]), calls)
    out["decode"] = median_ns(lambda i: clf._decode(probs[i % n], None), calls)
    out["predict"] = median_ns(lambda i: clf.predict(texts[i % n]), calls)
    out["predict - run"] = out["predict"] - out["session.run"]
    # The same predict calls with the model run replaced by its answer (the instance attribute shadows the method):
    # all of predict but InferenceSession.run, without the model's noise.
    answers = iter(range(10**12))
    backend.run = lambda feeds: outs[next(answers) % n]
    try:
        out["predict, run stubbed"] = median_ns(lambda i: clf.predict(texts[i % n]), calls)
    finally:
        del backend.run
    return {key: value / 1000 for key, value in out.items()}


def graph_oos_cost(bundle_dir: Path, calls: int) -> dict[str, float] | None:
    """Batch 1: the in-graph score's nodes alone (extracted from the model, run by ONNX Runtime on one thread) and
    the numpy path on the same vector, median microseconds."""
    import tempfile

    import numpy as np
    import onnx.utils
    import onnxruntime as ort

    from edge_runtime import Bundle
    from edge_runtime.oos import OutOfScope

    bundle = Bundle.load(bundle_dir)
    detector = OutOfScope.from_bundle(bundle)
    if detector is None or detector.graph is None:
        return None
    model = bundle.path_of(bundle.manifest.backends["onnxruntime"]["file"])
    first = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_outputs()[0].name
    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / "oos.onnx"
        onnx.utils.extract_model(str(model), str(part), [first], [detector.graph.output])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(str(part), opts, providers=["CPUExecutionProvider"])
        # ONNX Runtime's fixed cost of one run, to subtract: a graph of one Identity on the same input
        from onnx import TensorProto, helper

        width = len(bundle.manifest.labels) + detector.features
        identity = helper.make_model(helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])], "identity",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])]),
            opset_imports=[helper.make_opsetid("", 17)])
        empty = ort.InferenceSession(identity.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(1, len(bundle.manifest.labels) + detector.features)).astype(np.float32)
    k = len(bundle.manifest.labels)
    fetch, feed = [detector.graph.output], {first: x}
    nodes = median_ns(lambda i: session.run(fetch, feed), calls) / 1000
    fixed = median_ns(lambda i: empty.run(["y"], {"x": x}), calls) / 1000
    return {"graph nodes (session.run of them alone)": nodes, "session.run of one Identity": fixed,
            "graph nodes, less the fixed run cost": nodes - fixed,
            "numpy path (flags)": median_ns(lambda i: detector.flags(x[:, k:]), calls) / 1000,
            "in-graph decision (compare)": median_ns(lambda i: x[:, k] > detector.threshold, calls) / 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, action="append", required=True)
    parser.add_argument("--baseline", type=Path, default=None, help="another revision's edge_runtime package folder")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import edge_runtime
    from edge_runtime.bench import UTTERANCES

    packages = {"this": edge_runtime}
    if args.baseline:
        packages["baseline"] = load_package(args.baseline.resolve(), "edge_runtime_baseline")
    configs = {}
    for code, pkg in packages.items():
        for bundle in args.bundle:
            configs[f"{code} code, bundle {bundle.name}"] = (pkg, pkg.IntentClassifier.from_bundle(bundle, threads=args.threads))
    texts = list(UTTERANCES)
    print(f"CPU: {cpu_model()}; {args.calls} calls per stage, {args.rounds} rounds; microseconds, medians")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, (pkg, clf) in configs.items():
            results[name].append(stages(pkg, clf, texts, args.calls))
    summary = {}
    for name, rounds in results.items():
        keys = rounds[0].keys()
        summary[name] = {key: {"median": statistics.median(r[key] for r in rounds),
                               "min": min(r[key] for r in rounds), "max": max(r[key] for r in rounds)} for key in keys}
        print(f"\n{name}  (median of rounds [min..max])")
        for key, v in summary[name].items():
            print(f"  {key:<21} {v['median']:8.1f}  [{v['min']:.1f}..{v['max']:.1f}]")
    for _, clf in configs.values():
        clf.close()
    for bundle in args.bundle:
        cost = graph_oos_cost(bundle, args.calls)
        if cost:
            summary[f"out-of-scope cost, bundle {bundle.name}"] = cost
            print(f"\nout-of-scope cost at batch 1, bundle {bundle.name}")
            for key, value in cost.items():
                print(f"  {key:<40} {value:8.1f}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_model(), "calls": args.calls, "results": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
