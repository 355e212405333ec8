"""Unpacking part of a tar archive: layout, slicing, refusal of unsafe members."""

from __future__ import annotations

import io
import tarfile

import pytest

from opnp.data.archives import extract_members


def make_tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_extracts_only_the_member_folder_keeping_layout(tmp_path):
    archive = tmp_path / "a.tar.gz"
    make_tar(
        archive,
        {"set/test/cat/1.jpg": b"1", "set/test/dog/2.jpg": b"2", "set/train/cat/3.jpg": b"3"},
    )
    out = tmp_path / "out"
    assert extract_members(archive, "set/test", out) == 2
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) == [
        "cat/1.jpg",
        "dog/2.jpg",
    ]
    assert (out / "cat/1.jpg").read_bytes() == b"1"


def test_skip_and_max_give_disjoint_slices(tmp_path):
    archive = tmp_path / "a.tar.gz"
    make_tar(archive, {f"imgs/{i:02d}.jpg": bytes([i]) for i in range(10)})
    first = extract_members(archive, "imgs", tmp_path / "first", max_images=4)
    rest = extract_members(archive, "imgs", tmp_path / "rest", skip_images=4)
    names_first = {p.name for p in (tmp_path / "first").iterdir()}
    names_rest = {p.name for p in (tmp_path / "rest").iterdir()}
    assert (first, rest) == (4, 6)
    assert names_first == {f"{i:02d}.jpg" for i in range(4)}
    assert not names_first & names_rest


def test_refuses_members_escaping_the_folder(tmp_path):
    archive = tmp_path / "a.tar.gz"
    make_tar(archive, {"imgs/../../evil.txt": b"x", "imgs/ok.jpg": b"y"})
    with pytest.raises(ValueError, match="escapes"):
        extract_members(archive, "imgs", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))


def test_missing_archive_and_member_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tar.gz"):
        extract_members(tmp_path / "nope.tar.gz", "x", tmp_path / "out")
    archive = tmp_path / "a.tar.gz"
    make_tar(archive, {"imgs/ok.jpg": b"y"})
    with pytest.raises(ValueError, match="'other'"):
        extract_members(archive, "other", tmp_path / "out")


def test_classes_keep_only_those_folders_and_unknown_ones_are_named(tmp_path):
    archive = tmp_path / "a.tar.gz"
    make_tar(
        archive,
        {f"dtd/{c}/{c}_{i}.jpg": b"x" for c in ("banded", "bumpy", "veined") for i in range(3)},
    )
    out = tmp_path / "val"
    assert extract_members(archive, "dtd", out, classes=["bumpy", "veined"]) == 6
    assert sorted(p.name for p in out.iterdir()) == ["bumpy", "veined"]
    with pytest.raises(ValueError, match=r"\['dotted'\].*'banded', 'bumpy', 'veined'"):
        extract_members(archive, "dtd", tmp_path / "bad", classes=["banded", "dotted"])


def test_shuffle_seed_slices_random_images_of_every_class_disjointly(tmp_path):
    archive = tmp_path / "a.tar.gz"
    make_tar(archive, {f"test/{c}/{i:02d}.jpg": b"x" for c in ("a", "b", "c") for i in range(20)})

    def names(out):
        return {p.relative_to(out).as_posix() for p in out.rglob("*.jpg")}

    assert extract_members(archive, "test", tmp_path / "t", max_images=15, shuffle_seed=0) == 15
    extract_members(archive, "test", tmp_path / "v", skip_images=15, max_images=30, shuffle_seed=0)
    extract_members(archive, "test", tmp_path / "t2", max_images=15, shuffle_seed=0)
    test, val = names(tmp_path / "t"), names(tmp_path / "v")
    assert len(val) == 30 and not test & val
    assert names(tmp_path / "t2") == test  # the same seed gives the same images
    assert {n.split("/")[0] for n in test} == {"a", "b", "c"}  # sorted order: only "a"
    extract_members(archive, "test", tmp_path / "s1", max_images=15, shuffle_seed=1)
    assert names(tmp_path / "s1") != test


def test_shuffled_slices_read_the_archive_in_order(tmp_path, monkeypatch):
    # Reading a compressed tar out of order decompresses it again from the start for every
    # backward seek (quadratic in the archive size): members must be read in archive order.
    archive = tmp_path / "a.tar.gz"
    make_tar(archive, {f"imgs/{i:03d}.jpg": bytes([i]) for i in range(50)})
    offsets = []
    original = tarfile.TarFile.extractfile

    def recording(self, member):
        offsets.append(member.offset)
        return original(self, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", recording)
    assert extract_members(archive, "imgs", tmp_path / "out", max_images=20, shuffle_seed=3) == 20
    assert len(offsets) == 20 and offsets == sorted(offsets)
