"""``cloud.aws.entry.extract_tar``: what the SageMaker jobs unpack (source bundle, model.tar.gz, Neo's output)
lands under the destination and nowhere else, with or without Python's tarfile extraction filters."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from cloud.aws.entry import extract_tar

# Python 3.12 and 3.13 warn about extraction without a filter, which the "by hand" branch is
pytestmark = pytest.mark.filterwarnings("ignore:Python 3.14 will, by default, filter:DeprecationWarning")


def _tarball(*members: tarfile.TarInfo, data: bytes = b"{}") -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info in members:
            if info.isfile():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    buf.seek(0)
    return buf


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


UNSAFE = {
    "parent path": (_file("../outside.txt"),),
    "absolute path": (_file("/outside.txt"),),
    "link out of the destination": (_link("escape", ".."), _file("escape/outside.txt")),
    "absolute link": (_link("etc", "/etc"),),
}


@pytest.fixture(params=["data filter", "by hand"])
def extraction(request, monkeypatch):
    """Both branches: Python's ``data`` filter, and the hand check of interpreters without filters."""
    if request.param == "by hand":
        monkeypatch.delattr(tarfile, "data_filter")
    return request.param


def test_files_and_directories_are_unpacked(tmp_path: Path, extraction):
    # Given a tarball of a directory and a file, When it is extracted, Then both land under the destination
    with tarfile.open(fileobj=_tarball(_dir("model"), _file("model/config.json"))) as tar:
        extract_tar(tar, tmp_path / "out")
    assert (tmp_path / "out" / "model" / "config.json").read_text() == "{}"


@pytest.mark.parametrize("members", UNSAFE.values(), ids=UNSAFE.keys())
def test_nothing_lands_outside_the_destination(tmp_path: Path, extraction, members):
    # Given a tarball whose member would land outside the destination, When it is extracted,
    # Then it is refused with a TarError (the data filter instead makes an absolute name relative),
    # and nothing is written outside the destination
    dest = tmp_path / "deep" / "out"
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=_tarball(*members)) as tar:
        if extraction == "data filter" and members[0].name.startswith("/") and members[0].isfile():
            extract_tar(tar, dest)
            assert (dest / "outside.txt").is_file()
        else:
            with pytest.raises(tarfile.TarError):
                extract_tar(tar, dest)
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "deep" / "outside.txt").exists()
    assert not (dest / "escape").exists() and not (dest / "etc").is_symlink()


def test_without_filters_only_files_and_directories_pass(tmp_path: Path, monkeypatch):
    # Given an interpreter without extraction filters and a link that stays inside, When extracted,
    # Then it is refused all the same: the hand check admits files and directories only
    monkeypatch.delattr(tarfile, "data_filter")
    with tarfile.open(fileobj=_tarball(_file("a.txt"), _link("b.txt", "a.txt"))) as tar:
        with pytest.raises(tarfile.TarError, match="only files and directories"):
            extract_tar(tar, tmp_path)
    assert list(tmp_path.iterdir()) == []
