"""No unsafe deserialisation or code evaluation in the shipped code: pickle, marshal, torch.load without
``weights_only=True``, eval / exec, yaml.load without a safe loader, subprocess with shell=True."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("edge_runtime", "cloud")
FILES = sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def _call_name(node: ast.Call) -> str:
    parts = []
    f: ast.AST = node.func
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        parts.append(f.id)
    return ".".join(reversed(parts))


def _kw(node: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


def findings(source: str, where: str) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for n in names:
                if n.split(".")[0] in ("pickle", "cPickle", "dill", "marshal", "shelve", "joblib"):
                    out.append(f"{where}:{node.lineno}: imports {n}")
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        last = name.rsplit(".", 1)[-1]
        if isinstance(node.func, ast.Name) and name in ("eval", "exec", "compile", "__import__"):
            out.append(f"{where}:{node.lineno}: calls {name}()")
        if name.endswith("torch.load"):
            wo = _kw(node, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                out.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
        if name.startswith("yaml.") and last in ("load", "load_all", "unsafe_load", "full_load"):
            loader = _kw(node, "Loader")
            if last != "load" or loader is None or "Safe" not in ast.unparse(loader):
                out.append(f"{where}:{node.lineno}: {name} without a SafeLoader (use yaml.safe_load)")
        if last in ("run", "Popen", "call", "check_call", "check_output"):
            shell = _kw(node, "shell")
            if isinstance(shell, ast.Constant) and shell.value is True:
                out.append(f"{where}:{node.lineno}: {name}(shell=True)")
        if name in ("numpy.load", "np.load"):
            ap = _kw(node, "allow_pickle")
            if isinstance(ap, ast.Constant) and ap.value is True:
                out.append(f"{where}:{node.lineno}: np.load(allow_pickle=True)")
    return out


def test_the_checker_catches_what_it_looks_for():
    bad = ("import pickle\nimport torch, yaml\ntorch.load(f)\ntorch.load(f, weights_only=False)\neval(s)\n"
           "yaml.load(s)\nyaml.load(s, Loader=yaml.Loader)\nsubprocess.run(c, shell=True)\nnp.load(f, allow_pickle=True)\n")
    assert len(findings(bad, "x")) == 8
    # model.eval() (torch's train/eval switch) is a method, not the builtin
    good = "model.eval()\nimport torch, yaml\ntorch.load(f, weights_only=True)\nyaml.safe_load(s)\nyaml.load(s, Loader=yaml.SafeLoader)\n"
    assert findings(good, "x") == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_unsafe_deserialisation_or_eval(path: Path):
    assert findings(path.read_text(encoding="utf-8"), str(path.relative_to(REPO))) == []
