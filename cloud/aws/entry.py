"""Entry point of the SageMaker jobs (``sm_entry.py`` at the root of the source bundle); standard library only.

Processing jobs run ``python3 sm_entry.py STEP [args]`` with the source bundle mounted as an input; this
script unpacks it, installs its ``requirements.txt`` and hands over to :func:`cloud.aws.steps.run_step`.
Training jobs get the bundle unpacked (and its requirements installed) by the SageMaker training toolkit,
which runs ``python sm_entry.py --step train [--other hyperparameters]``.
"""

import os
import subprocess
import sys
import tarfile
from pathlib import Path, PurePosixPath

SOURCE_TARBALL = "/opt/ml/processing/input/source/sourcedir.tar.gz"
SOURCE_DIR = "/opt/ml/processing/source"


def extract_tar(tar: tarfile.TarFile, dest: Path) -> None:
    """Unpack ``tar`` under ``dest`` and nowhere else; an unsafe member raises :class:`tarfile.TarError`.

    Python's ``data`` extraction filter where it exists (3.10.12+, 3.11.4+): no absolute paths, no ``..``,
    no links leading out of ``dest``, no devices. Older interpreters get a stricter check by hand: only
    regular files and directories, at relative paths without ``..`` (source bundles and model tarballs hold
    nothing else). :mod:`cloud.aws.steps` and :mod:`cloud.aws.neo` use it too; this module is standard library
    only because it runs before the source bundle is unpacked.
    """
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    members = tar.getmembers()
    for member in members:
        path = PurePosixPath(member.name)
        if not (member.isfile() or member.isdir()) or path.is_absolute() or ".." in path.parts:
            raise tarfile.TarError(f"unsafe member {member.name!r}: only files and directories at relative paths")
    tar.extractall(dest, members=members)  # nosec B202 # every member was checked just above


def source_root() -> Path:
    """The directory holding ``cloud/``: beside this script, else the unpacked source bundle."""
    here = Path(__file__).resolve().parent
    if (here / "cloud" / "__init__.py").is_file():
        return here
    tarball = Path(os.environ.get("SLM_SOURCE_TARBALL", SOURCE_TARBALL))
    root = Path(os.environ.get("SLM_SOURCE_DIR", SOURCE_DIR))
    if not tarball.is_file():
        raise SystemExit(f"sm_entry: no source bundle at {tarball}")
    root.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tarball) as tar:
            extract_tar(tar, root)
    except tarfile.TarError as exc:
        raise SystemExit(f"sm_entry: cannot unpack the source bundle {tarball}: {exc}") from None
    requirements = root / "requirements.txt"
    if requirements.is_file() and os.environ.get("SLM_SKIP_INSTALL") != "1":
        subprocess.run([sys.executable, "-m", "pip", "install",  # nosec B603 # fixed argv, our own bundle
                        "--quiet", "--disable-pip-version-check", "-r", str(requirements)], check=True)
    return root


def split_step(argv: list) -> tuple:
    """``["evaluate", "--x", "1"]`` or (training) ``["--step", "train", "--x", "1"]`` -> (step, rest)."""
    if "--step" in argv:
        i = argv.index("--step")
        if i + 1 >= len(argv):
            raise SystemExit("sm_entry: --step needs a value")
        return argv[i + 1], argv[:i] + argv[i + 2:]
    if not argv:
        raise SystemExit("sm_entry: usage: sm_entry.py STEP [args] (or --step STEP)")
    return argv[0], argv[1:]


def main(argv: list) -> int:
    """Unpack the source, then hand over to ``python -m cloud.aws.steps STEP ...`` from it, in this process."""
    import runpy

    step, rest = split_step(list(argv))
    root = source_root()
    sys.path.insert(0, str(root))
    # Run as a program, not imported from here: cloud.aws.steps imports this module (extract_tar), and this
    # script must stay standard-library only and uploadable alone.
    sys.argv = ["cloud.aws.steps", step, *rest]
    try:
        runpy.run_module("cloud.aws.steps", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
