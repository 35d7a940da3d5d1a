"""The documented commands run as written on a fresh ``make demo`` (issue 13, "First contact").

Every fenced shell block (``bash``, ``sh``, ``shell``, ``console`` or no language) of README.md, docs/*.md and
greengrass/README.md is split into commands. The cheap ones (``--help``, ``predict``, the local registry, bundle
signing) run block by block, in order, with ``bash -c`` in a temporary checkout whose ``.store/`` is laid out like
a fresh ``make demo``'s: a tiny bundle from the fixtures of tests/conftest.py at ``.store/slm-intents/edge/1``,
its zip, registry version 1 in the SQLite registry, ``last-run.json``; ``pytest tests/test_docs.py -rP`` prints
each command a block ran. The others are not run: one skipped test per reason lists them (``-rs``, on by
default). Besides, every ``.store/slm-intents/edge/...`` path the docs name must exist in that layout, every
relative link must lead to a file of the repository, and no file names a path of one particular machine.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, build_tiny_bundle

DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "greengrass" / "README.md")
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
PYTHON = re.compile(r"(^|/)python[0-9.]*(-qemu)?$")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
#: First words that make a line of a shell block a command (any other line is output, a diagram or a path list).
PROGRAMS = {"make", "pip", "pip3", "aws", "mosquitto", "mosquitto_pub", "mosquitto_sub", "sudo", "scp", "ssh",
            "journalctl", "gdk", "git", "curl", "export", "for", "out()", "source", ".", "cd", "echo", "cat", "kill",
            "apt-get", "apt", ".venv/bin/pip"}

#: What runs: each rule is (what it is, test on the words with a python interpreter spelled "python").
CHEAP = (
    ("--help", lambda w: w[0] == "python" and w[-1] in ("--help", "-h")),
    ("predict", lambda w: w[:4] == ["python", "-m", "edge_runtime", "predict"]),
    ("local registry", lambda w: w[:3] == ["python", "-m", "cloud.registry"] and "sagemaker" not in w),
    ("bundle signing", lambda w: w[:3] == ["python", "-m", "cloud.signing"]),
)
#: Why the rest does not run, first match wins (tested on the command as written).
EXPENSIVE = (
    ("is a make target (creates .venv and installs everything; demo trains for minutes)", r"^make\b"),
    ("installs packages", r"(^|\s)(pip3?|\.venv/bin/pip|apt-get|apt)\s|-m (pip|venv)\b"),
    ("runs a test suite", r"\bpytest\b"),
    ("builds the project wheel and the Greengrass components", r"cloud\.greengrass build"),
    ("needs an AWS account", r"^(aws|export|out\(\)|for)\b|\baws |sagemaker|cloud\.aws|cloud\.rollout|--region|"
                             r"--bucket|\$BUCKET|cloud\.pipeline (definition|upsert|start|status)"),
    ("trains a model (minutes)", r"cloud\.pipeline run"),
    ("needs a running broker or service", r"\b(serve|ask)\b|mosquitto|service_load|soak\.py"),
    ("runs on a Greengrass core device", r"^(sudo|scp|ssh|journalctl|gdk)\b|greengrass-cli|ggl-cli"),
    ("needs the aarch64 (QEMU) environment", r"arm64|QEMU"),
    ("is a benchmark (tens of seconds to minutes)", r"edge_runtime\.bench|\bbench/"),
    ("needs the network", r"^(git|curl)\b"),
    ("needs sampled telemetry and the FP32 model", r"cloud\.shadow"),
    ("changes the calling shell", r"^(source|\.|cd)\s"),
)


@dataclass(frozen=True)
class Command:
    doc: str      # path relative to the repository
    block: int    # line of the block's opening fence
    line: int     # line where the command starts
    text: str     # as written, continuation lines joined
    words: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    def verdict(self) -> tuple[bool, str]:
        """(runs, why): the cheap rule it matches, or the reason it is not run."""
        if not re.search(r"[&;`]|\$\(|\$\w|[<>]", self.text):
            words = ["python" if PYTHON.search(w) else w for w in self.words[:1]] + list(self.words[1:])
            for what, rule in CHEAP:
                if rule(words):
                    return True, what
        for why, pattern in EXPENSIVE:
            if re.search(pattern, self.text):
                return False, why
        return False, "is not on the cheap list"


def _split(text: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(text, comments=True))
    except ValueError:  # an unbalanced quote: still listed, and it fails the run if it is a cheap one
        return tuple(text.split())


def extract(doc: Path) -> list[Command]:
    """The commands of the shell blocks of ``doc``."""
    rel = doc.relative_to(REPO).as_posix()
    commands: list[Command] = []
    block = None  # line of the open fence, or None outside a block
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        fence = FENCE.match(raw)
        if fence:
            if block is None:
                block = number if fence.group(2).lower() in SHELL_BLOCKS else -number
            else:
                block = None
            pending = []
            continue
        if block is None or block < 0:
            continue
        if not pending:
            start = number
        pending.append(raw.strip())
        if raw.rstrip().endswith("\\"):
            pending[-1] = pending[-1][:-1].rstrip()
            continue
        text = " ".join(p for p in pending if p)
        pending = []
        words = _split(text)
        if not words:
            continue
        program = next((w for w in words if not ASSIGNMENT.match(w)), "")
        if program in PROGRAMS or PYTHON.search(program):
            commands.append(Command(rel, block, start, text, words))
    return commands


COMMANDS = [c for doc in DOCS for c in extract(doc)]
RUN = [c for c in COMMANDS if c.verdict()[0]]
SKIPPED: dict[str, list[Command]] = defaultdict(list)   # reason -> commands
BLOCKS: dict[str, list[Command]] = defaultdict(list)    # "doc:fence line" -> its cheap commands, in order
for _command in COMMANDS:
    _runs, _why = _command.verdict()
    if _runs:
        BLOCKS[f"{_command.doc}:{_command.block}"].append(_command)
    else:
        SKIPPED[_why].append(_command)


def fresh_demo_checkout(root: Path) -> Path:
    """A checkout as a new user has it after ``make demo``: the repository's files (linked) and a real ``.store/``."""
    from cloud.registry import open_registry
    from edge_runtime.bundle import zip_bundle

    root.mkdir(parents=True, exist_ok=True)
    for entry in REPO.iterdir():
        if not entry.name.startswith("."):
            (root / entry.name).symlink_to(entry)
    (root / ".venv").symlink_to(Path(sys.prefix))  # the documented `.venv/bin/python` is this interpreter
    params = json.loads((REPO / "pipelines" / "params.json").read_text(encoding="utf-8"))
    store = root / ".store"
    edge = store / "slm-intents" / "edge"
    bundle, _ = build_tiny_bundle(root / "scratch" / "bundle", version="1")
    shutil.copytree(bundle.root, edge / "1")
    shutil.rmtree(root / "scratch")
    zip_bundle(edge / "1", edge / "1.zip")
    metrics = {k: {"accuracy": 0.5, "macro_f1": 0.5} for k in ("fp32", "int8")}
    with open_registry("local", store=store) as registry:
        artifacts = {"bundle": (edge / "1").resolve().as_uri(), "bundle_zip": (edge / "1.zip").resolve().as_uri()}
        pkg = registry.register(params["model_package_group"], {**metrics, "agreement": 1.0}, {"run_id": "fresh-demo"},
                                artifacts)
    summary = {"run_id": "fresh-demo", "status": "succeeded", "metrics": metrics,
               "registry": {"group": pkg.group, "version": pkg.version, "approval_status": pkg.approval_status.value,
                            "stage": pkg.stage.value},
               "bundle": ".store/slm-intents/edge/1"}
    (store / "last-run.json").write_text(json.dumps(summary), encoding="utf-8")
    return root


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_INTENTS_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `python` is this interpreter
    env.setdefault("USER", "docs-test")  # a login shell has it; `registry approve` records it as the approver
    return env


def test_the_docs_hold_commands_and_cheap_ones_among_them():
    assert COMMANDS, "no command found in the docs' shell blocks"
    assert RUN, "no cheap command found: nothing documented would be checked"
    readme = {c.verdict()[1] for c in RUN if c.doc == "README.md"}
    assert {"predict", "local registry"} <= readme, readme


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_documented_cheap_commands_run_on_a_fresh_demo(block: str, tmp_path: Path):
    root = fresh_demo_checkout(tmp_path / "checkout")
    env = _env()
    for command in BLOCKS[block]:
        out = subprocess.run(["bash", "-c", command.text], cwd=root, env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, (f"{command.where}: `{command.text}` exited {out.returncode}\n"
                                     f"stdout: {out.stdout[-2000:]}\nstderr: {out.stderr[-2000:]}")
        print(f"ran {command.where} ({command.verdict()[1]}): {command.text}")


@pytest.mark.parametrize("why", sorted(SKIPPED))
def test_expensive_documented_commands_are_listed_not_run(why: str):
    listed = SKIPPED[why]
    assert listed
    pytest.skip(f"{len(listed)} documented command(s) not run, each {why}: "
                + "; ".join(f"{c.where} `{' '.join(c.words[:4])}`" for c in listed))


def test_store_paths_the_docs_name_exist_after_a_fresh_demo(tmp_path: Path):
    root = fresh_demo_checkout(tmp_path / "checkout")
    missing = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for path in re.findall(r"\.store/slm-intents/edge/[^\s`'\"()\[\],;|]*", line):
                if not (root / path.rstrip(".:")).exists():
                    missing.append(f"{doc.relative_to(REPO)}:{number} {path}")
    assert not missing, "a fresh `make demo` has only .store/slm-intents/edge/1 (and 1.zip): " + ", ".join(missing)


#: The one path outside the checkout the docs may name: where `make demo` looks for SNIPS (the Makefile's default).
OUTSIDE_ALLOWED = {"../shared/data/snips"}


def test_docs_link_only_to_files_in_the_repository():
    wrong = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                    continue  # a web address or an anchor of the same page
                path = (doc.parent / target.split("#", 1)[0]).resolve()
                if not path.is_relative_to(REPO) or not path.exists():
                    wrong.append(f"{doc.relative_to(REPO)}:{number} link {target}")
            for named in re.findall(r"(?<![\w./-])\.\./[^\s`'\"()\[\]]+", line):
                if named not in OUTSIDE_ALLOWED and not (doc.parent / named).resolve().is_relative_to(REPO):
                    wrong.append(f"{doc.relative_to(REPO)}:{number} path {named}")
    assert not wrong, "links to paths outside the repository, or to nothing: " + ", ".join(wrong)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("budget, code, verdict", [
    ({"max": {"latency_p50_ms": 1e-6}}, 1, "edge bench: BUDGET FAILED (profile x86-ci): latency_p50_ms "),
    ({"max": {"latency_p50_ms": 1e6}}, 0, "edge bench: budget passed"),
])
def test_make_demo_reports_the_bench_verdict_after_predict_and_fails_on_a_missed_budget(
        tmp_path: Path, budget: dict, code: int, verdict: str):
    root = fresh_demo_checkout(tmp_path / "checkout")
    budgets = tmp_path / "budgets.json"
    budgets.write_text(json.dumps({"x86-ci": budget}), encoding="utf-8")
    # `-o install`: the recipe runs with this interpreter instead of creating .venv (the shared steps of `demo`);
    # no MAKEFLAGS, so options of a `make test` around this test do not reach it.
    env = {k: v for k, v in _env().items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    out = subprocess.run(
        ["make", "--no-print-directory", "-o", "install", "demo-edge", f"PY={sys.executable}", "STORE=.store",
         f"BENCH_ARGS=--profile x86-ci --budgets {budgets} --iterations 5 --batches 1 --cold-runs 0"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300)
    lines = out.stdout.strip().splitlines()
    predictions = [json.loads(x) for x in lines if x.startswith("{")]
    assert [p["text"] for p in predictions] == ["add this song to my road trip playlist",
                                                "will it snow in denver tomorrow",
                                                "book a table for two at a sushi bar tonight"], out.stdout
    assert lines[-1].startswith(verdict), out.stdout
    assert (out.returncode != 0) == bool(code), (out.returncode, out.stderr)
    if code:
        assert "Error 1" in out.stderr  # make reports the bench's status


def _source_files() -> list[Path]:
    """What a clone holds and what git would add: tracked files and the untracked ones .gitignore does not cover
    (caches, the store, virtualenvs and results are ignored); every file below the repository outside a checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
        return [REPO / name for name in listed if name and (REPO / name).is_file()]
    except (OSError, subprocess.SubprocessError):
        skip = {".git", ".venv", ".store", ".cache", ".benchmarks", ".hypothesis", "build", "dist", "__pycache__"}
        out = []
        for folder, dirs, files in os.walk(REPO):
            dirs[:] = [d for d in dirs if d not in skip and not d.startswith(".venv")]
            out.extend(Path(folder) / name for name in files if name != ".git")
        return out


def test_no_path_of_a_particular_machine_in_code_or_docs():
    # `/greengrass/v2/work/...` and `{kernel:rootPath}/work/...` are device paths every core device has.
    machine = re.compile(r"(?<![\w}>])/work/|/home/[a-z]|/Users/[A-Za-z]")
    found = []
    for path in _source_files():
        if path == Path(__file__) or path.suffix not in (".py", ".md", ".json", ".yml", ".yaml", ".toml", ".txt", ""):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if machine.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}")
    assert not found, "paths of one machine (a reader does not have them): " + ", ".join(found)
