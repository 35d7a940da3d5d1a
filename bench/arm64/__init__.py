"""The arm64 proof: the edge runtime, its tests and the bench on aarch64 CPython under QEMU user-mode emulation.

- :mod:`bench.arm64.environment` builds (and caches) the aarch64 environment: ``qemu-aarch64-static`` and an
  arm64 CPython from Debian's .debs, the aarch64 wheels pinned to the x86 venv's versions, a small sysroot
  per emulated CPU model with a ``/proc/cpuinfo`` that describes it.
- :mod:`bench.arm64.guest` is what the emulated interpreter runs (imports check, predictions with logits).
- :mod:`bench.arm64.parity` compares the arm64 answers with the x86 ones.
- ``bench/arm64/run.py`` runs it all; ``docs/arm64.md`` says what it proves and what it does not.

Nothing here runs at import time.
"""
