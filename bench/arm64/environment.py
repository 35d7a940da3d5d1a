"""Build (and cache) the aarch64 environment the arm64 proof runs in; needs no root and leaves the host's apt alone.

Layout under the cache directory (default ``.cache/arm64/``, git-ignored), one stage per folder, each with a
``.stamp.json`` holding the key it was built for, so a stage is rebuilt only when its inputs change::

    apt/                    private apt state (lists, .debs); deleted once the stages below are built
    debian/                 arm64 CPython 3.11 + libstdc++ from Debian's .debs (``dpkg-deb -x``, no chroot)
    debian/usr/bin/python3-qemu   the wrapper: an x86 shell script that runs that python under QEMU
    qemu/qemu-aarch64-static      taken from Debian's qemu-user-static .deb (nothing installed)
    wheels/                 aarch64 wheels, pinned to the x86 venv's versions (kept: a pin change downloads one)
    site/                   those wheels installed with ``pip --target`` (found through a .pth in debian/)
    sysroot-<cpu>/          what ``qemu -L`` serves first: symlinks to debian/ plus a proc/cpuinfo for <cpu>

Why each odd part is there:

- The wrapper passes itself as the guest's ``argv[0]`` (``qemu -0``), so the emulated ``sys.executable`` is the
  wrapper and a subprocess of the emulated Python (the bench's cold start, tests that spawn an interpreter) is
  emulated too, with no binfmt_misc on the host.
- onnxruntime parses ``/proc/cpuinfo`` at import and crashes on the host's x86 file; ``-L`` serves the
  sysroot's copy first. Its ``Features`` line is read from the emulated CPU's own hwcaps, and its MIDR fields
  are those of the QEMU model, so the file describes exactly the CPU ``QEMU_CPU`` emulates.
- ``QEMU_CPU`` is always pinned. QEMU's default ``max`` CPU has SME, with which onnxruntime's INT8 kernels
  compute wrong results; the wrapper refuses it.

Run alone: ``python bench/arm64/environment.py [--cache DIR]`` builds the environment and prints the wrapper's path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

__all__ = [
    "CPU_MODELS", "DEFAULT_CPUS", "Arm64Env", "CpuModel", "Arm64EnvError", "debian_sources", "ensure",
    "render_cpuinfo", "resolve_pins", "hwcap_names",
]

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO / ".cache" / "arm64"
#: What the arm64 root needs beyond what the wheels bring: CPython itself, and the C++ runtime that
#: onnxruntime and tokenizers link against.
DEBIAN_PACKAGES = ("python3", "libstdc++6")
QEMU_PACKAGE = "qemu-user-static"
QEMU_BINARY = "usr/bin/qemu-aarch64-static"
WRAPPER = "debian/usr/bin/python3-qemu"
#: Extras of pyproject.toml that belong on a device, installed besides the base (device) dependencies.
EXTRAS = ("edge", "dlr", "mqtt", "greengrass", "signing")
#: What the emulated edge tests need beyond a device install: the test runner (the dev extra's pytest tools; its
#: cloud-side tools such as moto stay out) and onnx, with which the fixtures build their tiny models.
EXTRA_PACKAGES = ("pytest", "pytest-benchmark", "hypothesis", "onnx")
#: Left out on purpose, with the reason.
EXCLUDED = {
    "huggingface-hub": "tokenizers needs it only to download from the Hub; the runtime reads tokenizer.json "
                       "from the bundle",
}
_STAGE_VERSION = "1"  # bump to rebuild every stage after a change to how they are built


class Arm64EnvError(RuntimeError):
    """The aarch64 environment could not be built (network, apt, pip, qemu); the message says which step."""


@dataclass(frozen=True)
class CpuModel:
    """A QEMU CPU model and the MIDR fields its ``/proc/cpuinfo`` shows (hwcaps come from QEMU itself)."""

    name: str
    implementer: int
    variant: int
    part: int
    revision: int
    note: str


#: The CPU models the proof may emulate. ``max`` is deliberately absent (see the module docstring).
CPU_MODELS: Mapping[str, CpuModel] = {
    m.name: m for m in (
        CpuModel("neoverse-n1", 0x41, 0x4, 0xD0C, 1, "Graviton2-class core with the dot-product instructions"),
        CpuModel("cortex-a72", 0x41, 0x0, 0xD08, 3, "Raspberry Pi 4 class core, no dot product"),
        CpuModel("cortex-a57", 0x41, 0x1, 0xD07, 0, "Jetson Nano class core, no dot product"),
    )
}
DEFAULT_CPUS = ("neoverse-n1", "cortex-a72")

# Linux arch/arm64/include/uapi/asm/hwcap.h: bit -> the name /proc/cpuinfo prints.
_HWCAP = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop "
          "sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
_HWCAP2 = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 "
           "i8mm bf16 dgh rng bti mte ecv afp rpres mte3 sme smei16i64 smef64f64 smei8i32 smef16f32 smeb16f32 "
           "smef32f32 smefa64 wfxt ebf16 sveebf16 cssc rprfm sve2p1").split()
_AT_HWCAP, _AT_HWCAP2 = 16, 26


@dataclass(frozen=True)
class Arm64Env:
    """A built environment. ``python`` runs the aarch64 interpreter under QEMU (set ``QEMU_CPU``)."""

    cache: Path
    python: Path
    qemu: Path
    root: Path
    site: Path
    pins: Mapping[str, str]
    cpus: tuple[str, ...]
    timings_s: Mapping[str, float] = field(default_factory=dict)

    def sysroot(self, cpu: str) -> Path:
        return self.cache / f"sysroot-{cpu}"

    def environ(self, cpu: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for the emulated interpreter: ``QEMU_CPU`` pinned, the checkout importable."""
        if cpu not in self.cpus:
            raise ValueError(f"no sysroot for {cpu!r} in this environment (built: {', '.join(self.cpus)})")
        env = dict(os.environ if base is None else base)
        env["QEMU_CPU"] = cpu
        env["PYTHONPATH"] = str(REPO)
        # Bytecode goes to the cache, not next to the sources: the checkout stays as the x86 side left it,
        # and the next run does not compile numpy and pytest again under emulation.
        env["PYTHONPYCACHEPREFIX"] = str(self.cache / "pycache")
        env.pop("PYTHONHOME", None)
        env.pop("VIRTUAL_ENV", None)
        return env


# ---------------------------------------------------------------------------------------------- helpers

def _log_default(msg: str) -> None:
    print(f"[arm64] {msg}", file=sys.stderr, flush=True)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([_STAGE_VERSION, *parts], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stamp_ok(path: Path, key: str) -> bool:
    try:
        return json.loads((path / ".stamp.json").read_text())["key"] == key
    except (OSError, ValueError, KeyError):
        return False


def _write_stamp(path: Path, key: str, **info: object) -> None:
    (path / ".stamp.json").write_text(json.dumps({"key": key, "built": time.strftime("%Y-%m-%dT%H:%M:%S"), **info},
                                                 indent=1) + "\n")


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists() or final.is_symlink():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _run(cmd: Sequence[str | os.PathLike[str]], what: str, **kwargs) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([os.fspath(c) for c in cmd], capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise Arm64EnvError(f"{what} failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return proc


# ------------------------------------------------------------------------------------- apt (private state)

def _os_release(path: str = "/etc/os-release") -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        for line in Path(path).read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip().strip('"')
    except OSError:
        pass
    return out


def _parse_deb822(text: str) -> list[dict[str, str]]:
    entries, current, last = [], {}, None
    for raw in text.splitlines() + [""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                entries.append(current)
            current, last = {}, None
        elif raw[0] in " \t" and last:
            current[last] += " " + raw.strip()
        elif ":" in raw:
            last, value = raw.split(":", 1)
            last = last.strip().lower()
            current[last] = value.strip()
    return entries


def _parse_one_line(text: str) -> list[dict[str, str]]:
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        options: dict[str, str] = {}
        m = re.match(r"^(\S+)\s+\[([^\]]*)\]\s+(.*)$", line)
        if m:
            kind, opts, rest = m.groups()
            for opt in opts.split():
                if "=" in opt:
                    k, v = opt.split("=", 1)
                    options[k.lower()] = v
        else:
            kind, _, rest = line.partition(" ")
        fields = rest.split()
        if len(fields) < 3:
            continue
        entry = {"types": kind, "uris": fields[0], "suites": fields[1], "components": " ".join(fields[2:])}
        if "signed-by" in options:
            entry["signed-by"] = options["signed-by"]
        entries.append(entry)
    return entries


def debian_sources(codename: str, files: Iterable[tuple[str, str]]) -> str:
    """deb822 sources for the arm64 and amd64 ``main`` packages of the host's own Debian mirror.

    ``files`` are ``(name, text)`` pairs of the host's apt sources (``*.sources`` in deb822, others one-line).
    Entries that are not ``deb``, not ``<codename>*`` suites or without ``main`` are dropped, and
    components are cut to ``main``: the packages needed all live there.
    """
    paragraphs = []
    for name, text in files:
        entries = _parse_deb822(text) if name.endswith(".sources") else _parse_one_line(text)
        for e in entries:
            if e.get("enabled", "yes").lower() == "no" or "deb" not in e.get("types", "").split():
                continue
            suites = [s for s in e.get("suites", "").split() if s == codename or s.startswith(codename + "-")]
            if not suites or "main" not in e.get("components", "").split():
                continue
            para = ["Types: deb", f"URIs: {e['uris']}", f"Suites: {' '.join(suites)}", "Components: main",
                    "Architectures: arm64 amd64"]
            if e.get("signed-by"):
                para.append(f"Signed-By: {e['signed-by']}")
            paragraphs.append("\n".join(para))
    return "\n\n".join(dict.fromkeys(paragraphs)) + ("\n" if paragraphs else "")


def _host_sources() -> str:
    override = os.environ.get("ARM64_APT_SOURCES")
    if override:
        return Path(override).read_text()
    codename = _os_release().get("VERSION_CODENAME", "")
    etc = Path("/etc/apt")
    files = []
    for path in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list")),
                 *sorted((etc / "sources.list.d").glob("*.sources"))]:
        if path.is_file():
            files.append((path.name, path.read_text()))
    text = debian_sources(codename, files) if codename else ""
    if not text:
        raise Arm64EnvError(
            f"no Debian {codename or '(unknown release)'} mirror with 'main' in the host's apt sources; set "
            "ARM64_APT_SOURCES to a deb822 file, e.g. 'Types: deb / URIs: http://deb.debian.org/debian / "
            "Suites: bookworm / Components: main / Architectures: arm64 amd64'")
    return text


def _host_acquire_settings() -> list[str]:
    """The host's network settings for apt (proxies, snapshot mirrors' Valid-Until), nothing else."""
    try:
        dump = subprocess.run(["apt-config", "dump", "Acquire"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return []
    keep = re.compile(r"^Acquire::(https?|ftp)::(Proxy|proxy)|^Acquire::(Check-Valid-Until|Check-Date|Retries|ForceIPv4)")
    return [line for line in dump.splitlines() if keep.match(line) and line.rstrip().endswith(";")]


class _PrivateApt:
    """apt-get with its own config, lists, cache and an empty dpkg status: the host's apt is only read."""

    def __init__(self, state: Path, sources: str) -> None:
        self.state = state
        for sub in ("conf.d", "sources.d", "prefs.d", "lists/partial", "archives/partial"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        (state / "sources.d" / "arm64.sources").write_text(sources)
        import getpass

        conf = [
            f'Dir::Etc::Parts "{state / "conf.d"}";', 'Dir::Etc::main "/dev/null";',
            'Dir::Etc::SourceList "/dev/null";', f'Dir::Etc::SourceParts "{state / "sources.d"}";',
            'Dir::Etc::Preferences "/dev/null";', f'Dir::Etc::PreferencesParts "{state / "prefs.d"}";',
            f'Dir::State::Lists "{state / "lists"}";', 'Dir::State::Status "/dev/null";',
            f'Dir::Cache "{state}";', f'Dir::Cache::Archives "{state / "archives"}";',
            'Dir::Cache::pkgcache "";', 'Dir::Cache::srcpkgcache "";',
            'APT::Architecture "arm64";', 'APT::Architectures { "arm64"; "amd64"; };',
            'APT::Install-Recommends "false";', 'APT::Install-Suggests "false";',
            f'APT::Sandbox::User "{getpass.getuser()}";', 'Debug::NoLocking "true";',
            'Acquire::Languages "none";', 'Acquire::GzipIndexes "true";',
            *_host_acquire_settings(),
        ]
        self.config = state / "apt.conf"
        self.config.write_text("\n".join(conf) + "\n")
        self._updated = False

    def _apt(self, *args: str, what: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "APT_CONFIG": str(self.config), "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
        return _run(["apt-get", "-q", *args], what, env=env, cwd=cwd)

    def update(self) -> None:
        if not self._updated:
            self._apt("update", what="apt-get update (private state)")
            self._updated = True

    def download_closure(self, packages: Sequence[str]) -> list[Path]:
        """The .debs of ``packages`` and all their dependencies, for arm64 (nothing counts as installed)."""
        self.update()
        archives = self.state / "archives"
        for old in archives.glob("*.deb"):
            old.unlink()
        self._apt("-y", "--download-only", "install", *packages, what=f"apt-get install --download-only {packages}")
        return sorted(archives.glob("*.deb"))

    def download(self, package: str, dest: Path) -> Path:
        self.update()
        dest.mkdir(parents=True, exist_ok=True)
        self._apt("download", package, what=f"apt-get download {package}", cwd=dest)
        debs = sorted(dest.glob(f"{package.split(':')[0]}_*.deb"))
        if not debs:
            raise Arm64EnvError(f"apt-get download {package} left no .deb in {dest}")
        return debs[-1]


# ---------------------------------------------------------------------------------------------- stages

def _ensure_debian_and_qemu(cache: Path, log: Callable[[str], None]) -> tuple[Path, Path, dict]:
    sources = _host_sources()
    root, qemu_dir = cache / "debian", cache / "qemu"
    root_key, qemu_key = _key("debian", sources, DEBIAN_PACKAGES), _key("qemu", sources, QEMU_PACKAGE)
    root_ok, qemu_ok = _stamp_ok(root, root_key), _stamp_ok(qemu_dir, qemu_key)
    if not (root_ok and qemu_ok):
        apt = _PrivateApt(cache / "apt", sources)
        if not root_ok:
            log(f"arm64 root: downloading {' '.join(DEBIAN_PACKAGES)} and dependencies (Debian arm64 .debs)")
            debs = apt.download_closure(DEBIAN_PACKAGES)
            tmp = Path(tempfile.mkdtemp(prefix="debian.", dir=cache))
            for deb in debs:
                _run(["dpkg-deb", "-x", deb, tmp], f"dpkg-deb -x {deb.name}")
            libc = next((re.match(r"libc6_(\d+)\.(\d+)", d.name) for d in debs if d.name.startswith("libc6_")), None)
            if libc is None:
                raise Arm64EnvError("the arm64 closure has no libc6 .deb")
            pythons = sorted(tmp.glob("usr/bin/python3.[0-9]*"))
            pythons = [p for p in pythons if re.fullmatch(r"python3\.\d+", p.name)]
            if not pythons:
                raise Arm64EnvError("no usr/bin/python3.X in the extracted arm64 packages")
            _write_stamp(tmp, root_key, debs=[d.name for d in debs], python=pythons[-1].name,
                         glibc=[int(libc.group(1)), int(libc.group(2))])
            _replace_dir(tmp, root)
            log(f"arm64 root: {len(debs)} .debs extracted, {pythons[-1].name}, glibc {libc.group(1)}.{libc.group(2)}")
        if not qemu_ok:
            log(f"qemu: downloading {QEMU_PACKAGE} (amd64) and extracting {Path(QEMU_BINARY).name} only")
            deb = apt.download(f"{QEMU_PACKAGE}:amd64", cache / "apt" / "qemu-deb")
            tmp = Path(tempfile.mkdtemp(prefix="qemu.", dir=cache))
            tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
            _run(["tar", "-x", "-C", tmp, "-f", "-", f"./{QEMU_BINARY}"], "extracting qemu-aarch64-static",
                 stdin=tar.stdout)
            if tar.wait() != 0:
                raise Arm64EnvError(f"dpkg-deb --fsys-tarfile {deb.name} failed")
            shutil.move(str(tmp / QEMU_BINARY), tmp / Path(QEMU_BINARY).name)
            shutil.rmtree(tmp / "usr")
            _write_stamp(tmp, qemu_key, deb=deb.name)
            _replace_dir(tmp, qemu_dir)
            log(f"qemu: {deb.name}")
        shutil.rmtree(cache / "apt", ignore_errors=True)
    info = json.loads((root / ".stamp.json").read_text())
    return root, qemu_dir / Path(QEMU_BINARY).name, info


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _read_constraints(path: Path) -> dict[str, str]:
    pins = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;#]+)", line)
            if m:
                pins[_canonical(m.group(1))] = m.group(3)
    return pins


def resolve_pins(pyproject: Path = REPO / "pyproject.toml", *, extras: Sequence[str] = EXTRAS,
                 extra_packages: Sequence[str] = EXTRA_PACKAGES, python_version: str = "3.11",
                 constraints: Path = REPO / "constraints.txt",
                 version_of: Callable[[str], str | None] | None = None,
                 requires_of: Callable[[str], list[str] | None] | None = None) -> dict[str, str]:
    """``{package: version}`` for the arm64 side: the dependency closure of the device runtime, the given
    extras and ``extra_packages``, each at the version installed in this (x86) interpreter.

    The x86 venv is what parity compares against, so its versions win; ``constraints.txt`` only fills in a
    package the venv lacks. An optional package missing from both is left out (the x86 side lacks it too).
    Markers are evaluated for CPython ``python_version`` on Linux aarch64, without extras.
    """
    import importlib.metadata as md
    import tomllib

    from packaging.requirements import Requirement

    def _version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    def _requires(name: str) -> list[str] | None:
        try:
            return md.requires(name)
        except md.PackageNotFoundError:
            return None

    version_of = version_of or _version
    requires_of = requires_of or _requires
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    required = [Requirement(r) for r in project.get("dependencies", [])]
    optional_roots = [Requirement(r) for e in extras for r in optional.get(e, [])]
    optional_roots += [Requirement(p) for p in extra_packages]
    fallback = _read_constraints(constraints)
    marker_env = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64",
                  "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython",
                  "python_version": python_version, "python_full_version": python_version + ".0", "extra": ""}
    pins: dict[str, str] = {}
    queue = [(r, True) for r in required] + [(r, False) for r in optional_roots]
    while queue:
        req, must = queue.pop(0)
        name = _canonical(req.name)
        if name in pins or name in EXCLUDED:
            continue
        if req.marker is not None and not req.marker.evaluate(marker_env):
            continue
        version = version_of(req.name) or fallback.get(name)
        if version is None:
            if must:
                raise Arm64EnvError(f"{req.name} is a device dependency but is not installed in {sys.executable} "
                                        "(run `make install`) nor pinned in constraints.txt")
            continue
        pins[name] = version
        queue.extend((Requirement(r), must) for r in (requires_of(req.name) or []))
    return dict(sorted(pins.items()))


def _platform_args(glibc: tuple[int, int], python: str) -> list[str]:
    major, minor = glibc
    platforms = ["manylinux2014_aarch64"] + [f"manylinux_{major}_{m}_aarch64" for m in range(17, minor + 1)]
    py = python.removeprefix("python")
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", py,
            "--abi", "cp" + py.replace(".", "")]
    for p in platforms:
        args += ["--platform", p]
    return args


def _wheel_for(wheels: Path, name: str, version: str) -> Path | None:
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version

    for whl in sorted(wheels.glob("*.whl")):
        try:
            wname, wver, _, _ = parse_wheel_filename(whl.name)
        except ValueError:
            continue
        if canonicalize_name(wname) == name and wver == Version(version):
            return whl
    return None


def _ensure_site(cache: Path, root: Path, root_info: Mapping, pins: Mapping[str, str],
                 log: Callable[[str], None]) -> Path:
    site, wheels = cache / "site", cache / "wheels"
    glibc = tuple(root_info["glibc"])
    plat = _platform_args(glibc, root_info["python"])  # type: ignore[arg-type]
    key = _key("site", pins, plat)
    if not _stamp_ok(site, key):
        wheels.mkdir(parents=True, exist_ok=True)
        missing = [f"{n}=={v}" for n, v in pins.items() if _wheel_for(wheels, n, v) is None]
        if missing:
            log(f"wheels: downloading {len(missing)} aarch64 wheels with pip ({', '.join(missing)})")
            _run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps", "--dest",
                  wheels, *plat, *missing], "pip download (aarch64 wheels)")
        files = []
        for n, v in pins.items():
            whl = _wheel_for(wheels, n, v)
            if whl is None:
                raise Arm64EnvError(f"no aarch64 wheel for {n}=={v} after pip download")
            files.append(whl)
        tmp = Path(tempfile.mkdtemp(prefix="site.", dir=cache))
        _run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", "--no-index",
              "--no-compile", "--target", tmp, *plat, *files], "pip install --target (aarch64 wheels)")
        _write_stamp(tmp, key, pins=dict(pins))
        _replace_dir(tmp, site)
        log(f"site: {len(files)} aarch64 wheels installed")
    # The .pth makes the site folder importable for the guest python without PYTHONPATH (absolute host path:
    # qemu -L falls back to the host file system when the sysroot has no such path).
    pth = root / "usr/lib/python3/dist-packages/arm64-site.pth"
    pth.parent.mkdir(parents=True, exist_ok=True)
    pth.write_text(str(site) + "\n")
    return site


_WRAPPER_TEXT = """#!/bin/sh
# aarch64 CPython under QEMU user-mode emulation (written by bench/arm64/environment.py; do not edit).
# It hands itself to the guest as argv[0] (qemu -0), so the emulated sys.executable is this script and a
# subprocess of the emulated Python is emulated too, with no binfmt_misc on the host.
# QEMU_CPU picks the CPU model and its sysroot, whose /proc/cpuinfo describes that CPU. Never `max`: its SME
# feature makes onnxruntime's INT8 kernels compute wrong results.
self=$(readlink -f "$0")
cache=${self%/debian/usr/bin/python3-qemu}
: "${QEMU_CPU:=neoverse-n1}"
if [ "$QEMU_CPU" = max ]; then
    echo "python3-qemu: QEMU_CPU=max gives wrong INT8 results (SME); use one of: @CPUS@" >&2
    exit 2
fi
if [ ! -d "$cache/sysroot-$QEMU_CPU" ]; then
    echo "python3-qemu: no sysroot for QEMU_CPU=$QEMU_CPU; build it: python bench/arm64/environment.py --cpus $QEMU_CPU" >&2
    exit 2
fi
export QEMU_CPU
exec "$cache/qemu/qemu-aarch64-static" -L "$cache/sysroot-$QEMU_CPU" -0 "$self" "$cache/debian/usr/bin/@PYTHON@" "$@"
"""


def hwcap_names(hwcap: int, hwcap2: int) -> list[str]:
    """The ``Features`` names Linux prints for AT_HWCAP / AT_HWCAP2 bits."""
    names = [n for i, n in enumerate(_HWCAP) if hwcap >> i & 1]
    return names + [n for i, n in enumerate(_HWCAP2) if hwcap2 >> i & 1]


def render_cpuinfo(model: CpuModel, features: Sequence[str], processors: int) -> str:
    """A ``/proc/cpuinfo`` as aarch64 Linux writes it, one block per processor."""
    block = ("processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: {f}\nCPU implementer\t: 0x{m.implementer:02x}\n"
             "CPU architecture: 8\nCPU variant\t: 0x{m.variant:x}\nCPU part\t: 0x{m.part:03x}\n"
             "CPU revision\t: {m.revision}\n\n")
    return "".join(block.format(i=i, f=" ".join(features), m=model) for i in range(processors))


def _host_processors() -> int:
    # onnxruntime's cpuinfo matches /proc/cpuinfo's processors against sysfs' possible CPUs (the host's).
    try:
        spec = Path("/sys/devices/system/cpu/possible").read_text().strip()
        return max(int(part.split("-")[-1]) for part in spec.split(",")) + 1
    except (OSError, ValueError):
        return os.cpu_count() or 1


_AUXV_PROBE = ("import struct;d=open('/proc/self/auxv','rb').read();"
               f"v=dict(struct.iter_unpack('<QQ',d[:len(d)//16*16]));print(v.get({_AT_HWCAP},0),v.get({_AT_HWCAP2},0))")


def _ensure_sysroot(cache: Path, cpu: str, qemu: Path, root: Path, python: str) -> Path:
    model = CPU_MODELS[cpu]
    sysroot = cache / f"sysroot-{cpu}"
    (sysroot / "proc").mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():
        if entry.name in ("proc", ".stamp.json"):
            continue
        link = sysroot / entry.name
        target = Path("..") / root.name / entry.name
        if not (link.is_symlink() and Path(os.readlink(link)) == target):
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)
    key = _key("hwcaps", cpu, json.loads((qemu.parent / ".stamp.json").read_text())["key"])
    cached = sysroot / ".hwcaps.json"
    try:
        data = json.loads(cached.read_text())
        assert data["key"] == key
        hwcap, hwcap2 = data["hwcap"], data["hwcap2"]
    except (OSError, ValueError, KeyError, AssertionError):
        out = _run([qemu, "-cpu", cpu, "-L", root, root / "usr/bin" / python, "-S", "-c", _AUXV_PROBE],
                   f"reading the hwcaps of QEMU's {cpu}")
        hwcap, hwcap2 = (int(x) for x in out.stdout.split())
        cached.write_text(json.dumps({"key": key, "hwcap": hwcap, "hwcap2": hwcap2}) + "\n")
    features = hwcap_names(hwcap, hwcap2)
    if any(f.startswith("sme") for f in features):
        raise Arm64EnvError(f"QEMU's {cpu} reports SME ({features}); onnxruntime's INT8 kernels are wrong with it")
    text = render_cpuinfo(model, features, _host_processors())
    if not (sysroot / "proc/cpuinfo").is_file() or (sysroot / "proc/cpuinfo").read_text() != text:
        (sysroot / "proc/cpuinfo").write_text(text)
    return sysroot


def ensure(cache: Path = DEFAULT_CACHE, *, cpus: Sequence[str] = DEFAULT_CPUS,
           log: Callable[[str], None] = _log_default) -> Arm64Env:
    """Build what is missing or stale under ``cache`` and return the environment (seconds when all is cached)."""
    unknown = [c for c in cpus if c not in CPU_MODELS]
    if unknown:
        hint = " (QEMU's max CPU has SME, which gives wrong INT8 results)" if "max" in unknown else ""
        raise ValueError(f"unknown CPU model(s) {unknown}{hint}; known: {', '.join(CPU_MODELS)}")
    if os.uname().machine != "x86_64":
        raise Arm64EnvError(f"the arm64 proof emulates aarch64 on an x86_64 host; this host is {os.uname().machine}")
    for tool in ("apt-get", "apt-config", "dpkg-deb", "tar"):
        if shutil.which(tool) is None:
            raise Arm64EnvError(f"{tool} is not on PATH (the environment is built from Debian .debs)")
    cache = Path(cache).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    timings = {}
    t = time.perf_counter()
    pins = resolve_pins()
    root, qemu, root_info = _ensure_debian_and_qemu(cache, log)
    timings["debian_and_qemu"] = time.perf_counter() - t
    t = time.perf_counter()
    site = _ensure_site(cache, root, root_info, pins, log)
    timings["site"] = time.perf_counter() - t
    t = time.perf_counter()
    wrapper = cache / WRAPPER
    text = _WRAPPER_TEXT.replace("@PYTHON@", root_info["python"]).replace("@CPUS@", ", ".join(CPU_MODELS))
    if not wrapper.is_file() or wrapper.read_text() != text:
        wrapper.write_text(text)
    wrapper.chmod(0o755)
    for cpu in cpus:
        _ensure_sysroot(cache, cpu, qemu, root, root_info["python"])
    timings["sysroots"] = time.perf_counter() - t
    return Arm64Env(cache=cache, python=wrapper, qemu=qemu, root=root, site=site, pins=pins, cpus=tuple(cpus),
                    timings_s={k: round(v, 2) for k, v in timings.items()})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/arm64/environment.py", description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache directory (default: .cache/arm64)")
    parser.add_argument("--cpus", default=",".join(DEFAULT_CPUS), help="CPU models to prepare sysroots for")
    args = parser.parse_args(argv)
    try:
        env = ensure(args.cache, cpus=[c for c in args.cpus.split(",") if c])
    except (Arm64EnvError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(env.python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
