"""Pure parts of the arm64 environment builder: apt sources, pins, /proc/cpuinfo (no network, no QEMU)."""

from __future__ import annotations

import pytest

from bench.arm64 import environment as env

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main

Enabled: no
Types: deb
URIs: http://mirror.example/debian
Suites: bookworm
Components: main
"""


def test_sources_keep_the_hosts_mirror_for_main_and_add_the_architectures():
    text = env.debian_sources("bookworm", [("debian.sources", DEB822)])
    assert text == ("Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
                    "Components: main\nArchitectures: arm64 amd64\n"
                    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")


def test_one_line_sources_with_options():
    line = ("deb [arch=amd64 signed-by=/k.gpg] http://ftp.example/debian-security bookworm-security main\n"
            "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n")
    text = env.debian_sources("bookworm", [("sources.list", line)])
    assert "URIs: http://ftp.example/debian-security\nSuites: bookworm-security\n" in text
    assert "Signed-By: /k.gpg" in text and "google" not in text


def test_no_matching_mirror_gives_empty_sources():
    assert env.debian_sources("bookworm", [("x.list", "deb http://archive.ubuntu.com/ubuntu jammy main\n")]) == ""


def test_hwcaps_become_the_feature_names_linux_prints():
    assert env.hwcap_names(0x8FB, 0) == "fp asimd aes pmull sha1 sha2 crc32 cpuid".split()
    assert "asimddp" in env.hwcap_names(0x119FFB, 0)
    assert "sme" in env.hwcap_names(0, 1 << 23)


def test_cpuinfo_describes_the_emulated_model_once_per_processor():
    text = env.render_cpuinfo(env.CPU_MODELS["cortex-a72"], ["fp", "asimd"], processors=2)
    blocks = text.strip().split("\n\n")
    assert len(blocks) == 2 and blocks[1].startswith("processor\t: 1\n")
    assert "Features\t: fp asimd\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n" \
           "CPU part\t: 0xd08\nCPU revision\t: 3" in blocks[0]


def test_max_is_not_an_emulated_cpu_model():
    assert "max" not in env.CPU_MODELS and set(env.DEFAULT_CPUS) == {"neoverse-n1", "cortex-a72"}
    with pytest.raises(ValueError, match="SME"):
        env.ensure(cpus=["max"])


PYPROJECT = """\
[project]
name = "x"
dependencies = ["numpy>=1", "tokenizers"]
[project.optional-dependencies]
dev = ["pytest"]
cloud = ["torch"]
mqtt = ["paho-mqtt"]
"""
INSTALLED = {"numpy": "2.0.0", "tokenizers": "0.20.0", "huggingface-hub": "1.0", "pytest": "8.0",
             "pluggy": "1.5", "colorama": "0.4", "onnx": "1.17", "protobuf": "5.0", "torch": "2.5"}
REQUIRES = {"tokenizers": ["huggingface-hub>=0.16", "pytest; extra == 'testing'"],
            "pytest": ["pluggy>=1", 'colorama; sys_platform == "win32"', 'tomli; python_version < "3.11"'],
            "onnx": ["numpy", "protobuf"]}


def _pins(tmp_path, constraints: str = "", **kwargs):
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "constraints.txt").write_text(constraints)
    return env.resolve_pins(tmp_path / "pyproject.toml", constraints=tmp_path / "constraints.txt",
                            version_of=lambda n: INSTALLED.get(env._canonical(n)),
                            requires_of=lambda n: REQUIRES.get(env._canonical(n), []), **kwargs)


def test_pins_are_the_closure_at_the_x86_versions(tmp_path):
    # Given the device deps, the dev extra and onnx, with markers for Linux aarch64 CPython 3.11
    pins = _pins(tmp_path, extras=("dev", "mqtt"), extra_packages=("onnx",))
    # Then: Windows-only, old-Python-only, extra-only and excluded packages are out; a missing optional one too
    assert pins == {"numpy": "2.0.0", "tokenizers": "0.20.0", "pytest": "8.0", "pluggy": "1.5", "onnx": "1.17",
                    "protobuf": "5.0"}


def test_constraints_fill_in_what_the_venv_lacks(tmp_path):
    pins = _pins(tmp_path, "paho-mqtt==2.1.0  # broker client\n", extras=("mqtt",), extra_packages=())
    assert pins["paho-mqtt"] == "2.1.0"


def test_a_missing_device_dependency_is_an_error(tmp_path):
    installed = dict(INSTALLED)
    installed.pop("numpy")
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    with pytest.raises(env.Arm64EnvError, match="numpy is a device dependency"):
        env.resolve_pins(tmp_path / "pyproject.toml", extras=(), extra_packages=(), constraints=tmp_path / "none",
                         version_of=lambda n: installed.get(n), requires_of=lambda n: [])
