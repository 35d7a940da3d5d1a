"""The app component's pins install where users run it: each supported CPython on linux aarch64 and x86_64.

``greengrass/app/requirements-py<major><minor>.txt`` (one file per interpreter; the recipe's install step picks the
one of the venv's Python) is looked up in the package index as pip on such a device would see it::

    pip install --dry-run --ignore-installed --only-binary=:all: --no-deps --python-version 3.10 \\
        --platform manylinux_2_35_aarch64 --platform manylinux_2_34_aarch64 ... --target T --report R -r FILE

so every pin must have a wheel for that interpreter and platform (and allow that Python). pip's report gives each
pin's ``Requires-Dist``; the closure of the app's requirements is then walked with that interpreter's environment
markers (which ``--python-version`` does not change in pip) and must be exactly the pins: a dependency the file
lacks, a pin outside its dependents' range, or a pin nothing needs fails the test. Where the index cannot be
reached the test is skipped with a reason that starts NOT CHECKED: it never passes unchecked.

Regenerate a file (direct dependencies from pyproject.toml, both architectures must agree)::

    python -m tests.greengrass.test_app_requirements --write 3.10
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pytest

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "greengrass" / "app"
#: The interpreters the app component supports, and the OS images that ship them (greengrass/README.md).
SUPPORTED = {"3.10": "Ubuntu 22.04, JetPack 6", "3.11": "Raspberry Pi OS / Debian 12 Bookworm",
             "3.12": "Ubuntu 24.04", "3.13": "Raspberry Pi OS / Debian 13 Trixie"}
ARCHES = ("aarch64", "x86_64")
#: The oldest glibc among those images (Ubuntu 22.04 and JetPack 6: 2.35); the wheels must install there.
GLIBC_MINOR = 35
#: pip's network patterns when the index is not reachable (requests/urllib3 texts; pip's own "Could not fetch URL").
_UNREACHABLE = re.compile(r"Could not fetch URL|NewConnectionError|Failed to establish a new connection|"
                          r"Temporary failure in name resolution|Name or service not known|Network is unreachable|"
                          r"Connection refused|Max retries exceeded|Read timed out|ProxyError|ConnectTimeout")
PIP_TIMEOUT_S = 100


def requirements_file(version: str) -> Path:
    return APP / f"requirements-py{version.replace('.', '')}.txt"


def platform_tags(arch: str, glibc_minor: int = GLIBC_MINOR) -> list[str]:
    """The platform tags pip accepts on a glibc 2.<glibc_minor> system, newest first.

    pip's ``--platform`` takes each tag literally (it expands only the legacy manylinux2014 -> 2010 -> 1 chain,
    not PEP 600's ``manylinux_2_X``), so the list a real system has is spelled out as ``packaging.tags`` makes it:
    ``manylinux_2_<glibc>`` down to the architecture's oldest (2_17 for aarch64, 2_5 for x86_64), the legacy
    aliases (manylinux2014 = 2_17, manylinux2010 = 2_12, manylinux1 = 2_5), then ``linux_<arch>``.
    https://peps.python.org/pep-0600/ ; https://pip.pypa.io/en/stable/cli/pip_install/#cmdoption-platform
    """
    oldest = 17 if arch == "aarch64" else 5
    tags = [f"manylinux_2_{m}_{arch}" for m in range(glibc_minor, oldest - 1, -1)]
    tags += [f"manylinux2014_{arch}"] + ([f"manylinux2010_{arch}", f"manylinux1_{arch}"] if arch == "x86_64" else [])
    return tags + [f"linux_{arch}"]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def interpreter(version: str) -> str | None:
    """A working ``python<version>`` on this machine (PATH, then pyenv's versions), or None."""
    import glob
    import shutil

    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(glob.glob(str(Path.home() / ".pyenv" / "versions" / f"{version}.*" / "bin" / f"python{version}")))
    for candidate in filter(None, candidates):
        try:
            proc = subprocess.run([candidate, "-c", "import sys; print(sys.executable)"], capture_output=True,
                                  text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if proc.returncode == 0:
            return proc.stdout.strip()
    return None


def read_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_canonical(name)] = version
    return pins


@dataclass(frozen=True)
class Resolution:
    """What pip would install (name -> version, and each one's ``Requires-Dist``), or why it could not tell."""

    installs: dict[str, str] | None = None
    names: dict[str, str] | None = None
    requires: dict[str, list[str]] | None = None
    unreachable: str | None = None
    error: str | None = None


def resolve(version: str, arch: str, requirements: list[str], *, deps: bool = True, extra: Sequence[str] = ()) -> Resolution:
    """Resolve ``requirements`` (pip arguments) for CPython ``version`` on linux ``arch`` without installing."""
    with tempfile.TemporaryDirectory(prefix="pins-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
               "--python-version", version, *[a for tag in platform_tags(arch) for a in ("--platform", tag)],
               "--target", str(Path(tmp) / "target"), "--report", str(report), "--quiet", "--disable-pip-version-check",
               "--no-input", "--timeout", "15", "--retries", "1", *([] if deps else ["--no-deps"]), *extra,
               *requirements]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return Resolution(unreachable=f"no answer from the package index within {PIP_TIMEOUT_S} s")
        if proc.returncode == 0 and report.is_file():
            items = [i["metadata"] for i in json.loads(report.read_text(encoding="utf-8"))["install"]]
            return Resolution(installs={_canonical(m["name"]): m["version"] for m in items},
                              names={_canonical(m["name"]): m["name"] for m in items},
                              requires={_canonical(m["name"]): m.get("requires_dist", []) for m in items})
        unreachable = _UNREACHABLE.search(proc.stderr)
        if unreachable:
            return Resolution(unreachable=f"pip could not reach the package index ({unreachable.group(0)})")
        # pip says no more than "from versions: none" when the index is down and it does not retry: ask the index
        # for pip's own versions, which it lists for any interpreter, to tell a real failure from no answer
        probe = [sys.executable, "-m", "pip", "index", "versions", "pip", "--disable-pip-version-check", "--no-input",
                 "--timeout", "15", "--retries", "1", *extra]
        try:
            reachable = subprocess.run(probe, capture_output=True, text=True, timeout=PIP_TIMEOUT_S).returncode == 0
        except subprocess.TimeoutExpired:
            reachable = False
        if not reachable:
            return Resolution(unreachable="the package index did not answer pip index versions pip")
        return Resolution(error=f"pip exited {proc.returncode}:\n{proc.stderr[-3000:]}")


def marker_environment(version: str, arch: str) -> dict[str, str]:
    """PEP 508 marker values of CPython ``version`` on linux ``arch``.

    pip's ``--python-version`` decides only wheel tags and ``Requires-Python``; environment markers
    (``exceptiongroup; python_version < "3.11"``) it still evaluates for the interpreter running pip
    (https://pip.pypa.io/en/stable/cli/pip_install/#cmdoption-python-version), so the closure for another
    interpreter is walked here with that interpreter's values.
    """
    return {"implementation_name": "cpython", "implementation_version": f"{version}.0", "os_name": "posix",
            "platform_machine": arch, "platform_python_implementation": "CPython", "platform_release": "",
            "platform_system": "Linux", "platform_version": "", "python_full_version": f"{version}.0",
            "python_version": version, "sys_platform": "linux"}


def closure(roots: Sequence[str], pins: dict[str, str], requires: dict[str, list[str]],
            environment: dict[str, str]) -> tuple[set[str], list[str]]:
    """The packages ``roots`` need in ``environment`` (walking each pin's ``Requires-Dist``), and the problems:
    a needed package that is not pinned, or a pin outside what its dependents allow."""
    from packaging.requirements import Requirement

    needed: set[str] = set()
    problems: list[str] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(Requirement(r), "the app") for r in roots]
    while todo:
        req, parent = todo.pop()
        name = _canonical(req.name)
        if name not in pins:
            problems.append(f"{req} (needed by {parent}) is not pinned")
            continue
        if not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{parent} needs {req}, the pin is {pins[name]}")
        needed.add(name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        for text in requires.get(name, []):
            dep = Requirement(text)
            if dep.marker is None or any(dep.marker.evaluate({**environment, "extra": e}) for e in ("", *req.extras)):
                todo.append((dep, f"{req.name}=={pins[name]}"))
    return needed, sorted(set(problems))


def app_requirements() -> list[str]:
    """What the slm_intents wheel needs on the device: the base dependencies and the mqtt, greengrass and signing
    extras (``BundlePublicKey`` makes the device verify bundle signatures, which needs cryptography)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return project["dependencies"] + extras["mqtt"] + extras["greengrass"] + extras["signing"]


def _skip_if_unreachable(resolution: Resolution, what: str) -> None:
    if resolution.unreachable:
        pytest.skip(f"NOT CHECKED: {what} - {resolution.unreachable}; run with access to the package index")


# -- tests -----------------------------------------------------------------------------------------------------------

def test_there_is_one_pin_file_per_supported_interpreter_and_requires_python_says_the_same():
    # Given the pin files and pyproject's requires-python
    from packaging.specifiers import SpecifierSet

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    files = {p.name for p in APP.glob("requirements*.txt")}
    assert files == {requirements_file(v).name for v in SUPPORTED}
    requires = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
    # Then every supported interpreter is allowed, and the one below the oldest is not (its pins do not exist)
    assert all(requires.contains(f"{v}.0") for v in SUPPORTED)
    oldest = min(SUPPORTED, key=lambda v: tuple(map(int, v.split("."))))
    major, minor = map(int, oldest.split("."))
    assert not requires.contains(f"{major}.{minor - 1}.99")


@pytest.fixture(scope="module")
def resolutions() -> dict[tuple[str, str], Resolution]:
    """Every (interpreter, architecture) resolved once, two at a time (CI has 2 cores; pip waits on the network)."""
    jobs = [(v, a) for v in SUPPORTED for a in ARCHES]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = pool.map(lambda job: resolve(job[0], job[1], ["-r", str(requirements_file(job[0]))], deps=False), jobs)
        return dict(zip(jobs, done))


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("version", list(SUPPORTED))
def test_the_pins_install_on_each_supported_interpreter_and_platform(resolutions, version, arch):
    # Given the pin file of CPython <version>, When pip looks up each pin for linux <arch> (wheels only)
    pins = read_pins(requirements_file(version))
    resolution = resolutions[(version, arch)]
    _skip_if_unreachable(resolution, f"the pins for CPython {version} on linux {arch}")
    # Then every pin has a wheel there (and allows that Python)
    assert resolution.error is None, f"the pins of CPython {version} do not install on linux {arch}: {resolution.error}"
    assert resolution.installs == pins
    # and the pins are exactly the closure the app needs there: nothing missing or out of range, nothing extra
    needed, problems = closure(app_requirements(), pins, resolution.requires, marker_environment(version, arch))
    assert problems == []
    assert set(pins) - needed == set(), "pinned but needed by nothing"


def test_the_pins_of_one_interpreter_fail_on_another():
    # Given the 3.11 pins (once the only file: numpy 2.4.6 and onnxruntime 1.32.0 have no CPython 3.10 wheels)
    resolution = resolve("3.10", "aarch64", ["-r", str(requirements_file("3.11"))], deps=False)
    _skip_if_unreachable(resolution, "the 3.11 pins on CPython 3.10")
    # When looked up for CPython 3.10, Then pip finds no matching distribution
    assert resolution.installs is None and "No matching distribution found for" in resolution.error


def test_the_install_step_refuses_an_interpreter_without_pins_and_names_the_supported_ones(built, tmp_path):
    # Given the built app component and a Python older than the oldest supported one
    from tests.greengrass.local_nucleus import GG_ARCH, LocalNucleus

    old = interpreter("3.9")
    if old is None or not GG_ARCH:
        pytest.skip("needs a python3.9 on PATH (pyenv) and a Greengrass architecture")
    app = built.component("app")
    nucleus = LocalNucleus(tmp_path / "greengrass" / "v2", "pins-thing")
    component = nucleus.deploy(built.out / "recipes", built.out / "artifacts", app["name"], app["version"],
                               config={"Python": old})
    # When its install step runs, Then it stops before pip with a message naming the pin files
    with pytest.raises(RuntimeError) as failed:
        nucleus.install(component)
    assert "Python 3.9" in str(failed.value) and "is not supported" in str(failed.value)
    assert all(requirements_file(v).name in str(failed.value) for v in SUPPORTED)
    assert not (component.work / "venv" / "lib" / "python3.9" / "site-packages" / "numpy").exists()


@pytest.mark.slow
@pytest.mark.parametrize("version", list(SUPPORTED))
def test_the_install_step_installs_the_pins_and_the_service_runs_on_each_interpreter(version, built, tiny_bundle,
                                                                                      tmp_path):
    # Given the built app component and CPython <version> on this machine (pyenv), else skipped
    from tests.greengrass.local_nucleus import GG_ARCH, LocalNucleus

    python = interpreter(version)
    if python is None or not GG_ARCH:
        pytest.skip(f"needs python{version} on PATH or in pyenv, and a Greengrass architecture")
    app = built.component("app")
    nucleus = LocalNucleus(tmp_path / "greengrass" / "v2", "pins-thing")
    component = nucleus.deploy(built.out / "recipes", built.out / "artifacts", app["name"], app["version"],
                               config={"Python": python})
    # When its install step runs (the real pip, the package index), Then it installs that interpreter's pins
    proc = nucleus.install(component)
    assert f"from requirements-py{version.replace('.', '')}.txt" in proc.stdout and "Successfully installed" in proc.stdout
    # and the service's code classifies with them
    venv_python = component.work / "venv" / "bin" / "python"
    run = subprocess.run([str(venv_python), "-m", "edge_runtime", "predict", "--bundle", str(tiny_bundle[0].root),
                          "play some jazz"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)["model"] == {"name": "tiny", "version": "1"}


def test_the_closure_walk_catches_a_dependency_only_another_interpreter_needs():
    # Given a package that needs tomli only below 3.11, and pins without tomli
    pins, requires = {"app": "1"}, {"app": ['tomli>=1; python_version < "3.11"', "numpy>=2"]}
    with_numpy = {**pins, "numpy": "2.2.6"}
    # Then on 3.10 tomli is missing, on 3.11 nothing is; and a pin below the range is reported
    assert closure(["app"], with_numpy, requires, marker_environment("3.10", "aarch64"))[1] == [
        'tomli>=1; python_version < "3.11" (needed by app==1) is not pinned']
    assert closure(["app"], with_numpy, requires, marker_environment("3.11", "aarch64")) == ({"app", "numpy"}, [])
    assert closure(["app"], {**pins, "numpy": "1.26.4"}, requires, marker_environment("3.11", "x86_64"))[1] == [
        "app==1 needs numpy>=2, the pin is 1.26.4"]


def test_an_unreachable_index_is_reported_as_not_checked_never_as_a_pass(tmp_path):
    # Given an index on a closed loopback port, and no other index or cache (--isolated: no pip config)
    from tests.edge_runtime.service.broker import free_port

    index = f"http://127.0.0.1:{free_port()}/simple"
    # When the pins are resolved against it
    resolution = resolve("3.11", "aarch64", ["-r", str(requirements_file("3.11"))],
                         extra=["--isolated", "--index-url", index, "--no-cache-dir", "--retries", "0"])
    # Then the outcome says unreachable (a skip with NOT CHECKED), neither a resolution nor a plain error
    assert resolution.installs is None and resolution.error is None and resolution.unreachable
    with pytest.raises(pytest.skip.Exception, match="^NOT CHECKED: "):
        _skip_if_unreachable(resolution, "the test's pins")


# -- regenerate ------------------------------------------------------------------------------------------------------

def write_pins(version: str) -> Path:
    """Resolve the app's requirements for CPython ``version`` (newest releases with wheels) and write the file.

    pip resolves for the interpreter running it as far as markers go, so packages only ``version`` needs are added
    as top-level requirements and resolved again until the closure walked for ``version`` is complete; packages
    only the running interpreter needs are left out.
    """
    from packaging.requirements import Requirement

    roots = app_requirements()
    found: list[dict[str, str]] = []
    for arch in ARCHES:
        added: list[str] = []
        for _ in range(5):
            r = resolve(version, arch, roots + added)
            if r.installs is None:
                raise SystemExit(f"cannot resolve for CPython {version} on linux {arch}: {r.unreachable or r.error}")
            needed, problems = closure(roots, r.installs, r.requires, marker_environment(version, arch))
            # without its marker, which pip would evaluate for the interpreter running it
            missing = [str(Requirement(p.split(" (needed by", 1)[0])).split(";", 1)[0]
                       for p in problems if p.endswith("is not pinned")]
            if not missing:
                break
            added += missing
        else:
            raise SystemExit(f"the closure for CPython {version} on linux {arch} does not settle: {problems}")
        if problems:
            raise SystemExit(f"CPython {version} on linux {arch}: {problems}")
        found.append({r.names[k]: r.installs[k] for k in needed})
    if found[0] != found[1]:
        raise SystemExit(f"the architectures resolve differently: {found[0]} vs {found[1]}")
    direct = [r.names[_canonical(re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0])] for d in roots]
    rest = sorted((n for n in found[0] if n not in direct), key=str.lower)
    header = [f"# Pinned runtime of the app component on CPython {version} ({SUPPORTED[version]}), linux aarch64 and x86_64:",
              "# the recipe's install step installs requirements-py<major><minor>.txt of the venv's interpreter, then the",
              "# slm_intents wheel with --no-deps. Direct dependencies first, then their closure on that interpreter; every",
              f"# pin has a wheel for both architectures (manylinux, glibc 2.{GLIBC_MINOR} and later), which",
              "# tests/greengrass/test_app_requirements.py checks against the package index. Regenerate:",
              f"# python -m tests.greengrass.test_app_requirements --write {version}"]
    lines = header + [f"{n}=={found[0][n]}" for n in direct] + ["# transitive"] + [f"{n}=={found[0][n]}" for n in rest]
    path = requirements_file(version)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Regenerate greengrass/app/requirements-py<XY>.txt.")
    parser.add_argument("--write", nargs="+", choices=list(SUPPORTED), required=True, metavar="VERSION")
    for v in parser.parse_args().write:
        print(write_pins(v))
