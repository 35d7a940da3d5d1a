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
from pathlib import Path

SOURCE_TARBALL = "/opt/ml/processing/input/source/sourcedir.tar.gz"
SOURCE_DIR = "/opt/ml/processing/source"


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
    with tarfile.open(tarball) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root, filter="data")
        else:  # Python < 3.10.12: members are checked by hand
            for member in tar.getmembers():
                if member.name.startswith("/") or ".." in Path(member.name).parts:
                    raise SystemExit(f"sm_entry: unsafe path in the source bundle: {member.name}")
            tar.extractall(root)
    requirements = root / "requirements.txt"
    if requirements.is_file() and os.environ.get("SLM_SKIP_INSTALL") != "1":
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "-r", str(requirements)], check=True)
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
    step, rest = split_step(list(argv))
    root = source_root()
    sys.path.insert(0, str(root))
    from cloud.aws.steps import run_step

    return run_step(step, rest, source=root)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
