"""Image layouts, verification, the digits benchmark builders and downloads (opnp.data)."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import opnp.data as D


def _png(path, value=0, size=(8, 8), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0]) + ((3,) if mode == "RGB" else ()), value, np.uint8)
    Image.fromarray(arr, mode).save(path)


def _class_folder(root, counts=None):
    counts = counts or {"cat": 2, "dog": 3}
    for name, n in counts.items():
        for i in range(n):
            _png(root / name / f"{i}.png", value=10 * i)
    return root


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


# --- layouts and opening -------------------------------------------------------------


def test_folder_layout_labels_in_sorted_class_order(tmp_path):
    root = _class_folder(tmp_path / "ds", {"zebra": 1, "ant": 2})
    ds = D.open_dataset(root)
    assert ds.classes == ["ant", "zebra"]
    assert ds.files == ["ant/0.png", "ant/1.png", "zebra/0.png"]
    assert ds.labels.tolist() == [0, 0, 1]
    img, label = ds[2]
    assert label == 1 and img.size == (8, 8)


def test_flat_layout_is_unlabelled_and_recursive(tmp_path):
    _png(tmp_path / "ood" / "b.JPEG".replace("JPEG", "png"))
    _png(tmp_path / "ood" / "a.png")
    _png(tmp_path / "ood" / "sub" / "c.png")
    (tmp_path / "ood" / "notes.txt").write_text("not an image")
    ds = D.open_dataset({"path": str(tmp_path / "ood"), "format": "flat"})
    assert ds.files == ["a.png", "b.png", "sub/c.png"]
    assert ds.labels.tolist() == [-1, -1, -1]


def test_flat_wnid_prefix_labels_are_imagenet_class_indices(tmp_path):
    wnids = D.imagenet_wnids()
    assert len(wnids) == 1000 and wnids == sorted(wnids) and wnids[0] == "n01440764"
    root = tmp_path / "imagenet-sample"
    for wnid, name in ((wnids[999], "toilet_tissue"), (wnids[1], "goldfish"), (wnids[0], "tench")):
        _png(root / f"{wnid}_{name}.png", mode="RGB")
    spec = {"path": str(root), "format": "flat", "labels": "wnid_prefix"}
    manifest = D.dataset_manifest("sample", spec)
    ds = D.open_dataset(manifest)
    assert ds.files == sorted(ds.files)
    assert dict(zip(ds.files, ds.labels.tolist(), strict=True)) == {
        f"{wnids[0]}_tench.png": 0,
        f"{wnids[1]}_goldfish.png": 1,
        f"{wnids[999]}_toilet_tissue.png": 999,
    }
    assert manifest["labelled"] and manifest["labels"] == "wnid_prefix"
    # A subset keeps the class indices (the label does not depend on the other files).
    sliced = D.open_dataset({**spec, "skip_images": 2})
    assert sliced.labels.tolist() == [999]
    assert (D.open_dataset({"path": str(root), "format": "flat"}).labels == -1).all()
    _png(root / "n99999999_unknown.png", mode="RGB")
    with pytest.raises(ValueError, match="n99999999_unknown.png"):
        D.dataset_manifest("sample", spec)
    with pytest.raises(ValueError, match="format 'flat'"):
        D.list_images(root, "folder", labels="wnid_prefix")


def test_image_list_with_and_without_labels(tmp_path):
    _png(tmp_path / "root" / "x" / "1.png", 1)
    _png(tmp_path / "root" / "y" / "2.png", 2)
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\ny/2.png 7\n\nx/1.png\n")
    ds = D.open_dataset(
        {"path": str(tmp_path / "root"), "format": "image_list", "image_list": str(listing)}
    )
    assert ds.files == ["x/1.png", "y/2.png"]
    assert ds.labels.tolist() == [-1, 7]
    listing.write_text("../escape.png 1\n")
    with pytest.raises(ValueError, match="escape.png"):
        D.open_dataset(
            {"path": str(tmp_path / "root"), "format": "image_list", "image_list": str(listing)}
        )


def test_resize_and_slicing(tmp_path):
    for i in range(5):
        _png(tmp_path / "ood" / f"{i}.png", value=i, size=(64, 48), mode="RGB")
    ds = D.open_dataset(
        {
            "path": str(tmp_path / "ood"),
            "format": "flat",
            "skip_images": 1,
            "max_images": 3,
            "resize": 32,
        }
    )
    assert ds.files == ["1.png", "2.png", "3.png"]
    img, _ = ds[0]
    assert img.size == (32, 32) and img.mode == "RGB"


def test_resize_center_crop_geometry():
    img = Image.fromarray(np.arange(40 * 80, dtype=np.uint8).reshape(40, 80) % 251)
    out = D.ResizeCenterCrop(20)(img)
    assert out.size == (20, 20)
    # Shorter side 40 -> 20 (scale 1/2), width 80 -> 40, then the central 20 columns.
    ref = img.resize((40, 20), Image.Resampling.BILINEAR).crop((10, 0, 30, 20))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
    with pytest.raises(ValueError, match="resize"):
        D.ResizeCenterCrop(0)


def test_palette_and_alpha_images_are_converted(tmp_path):
    Image.new("P", (4, 4)).save(tmp_path / "p.png")
    Image.new("RGBA", (4, 4)).save(tmp_path / "a.png")
    Image.new("LA", (4, 4)).save(tmp_path / "la.png")
    ds = D.open_dataset({"path": str(tmp_path), "format": "flat"})
    assert [ds[i][0].mode for i in range(3)] == ["RGB", "L", "RGB"]  # a, la, p


# --- verification --------------------------------------------------------------------


def test_verify_missing_folder_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        D.verify_image_folder(tmp_path / "nowhere")


def test_verify_empty_class_folder_is_named(tmp_path):
    root = _class_folder(tmp_path / "ds")
    (root / "empty_class").mkdir()
    with pytest.raises(ValueError, match="empty_class"):
        D.verify_image_folder(root)


def test_verify_no_class_folders_suggests_flat(tmp_path):
    _png(tmp_path / "ds" / "a.png")
    with pytest.raises(ValueError, match="flat"):
        D.verify_image_folder(tmp_path / "ds")


def test_verify_count_mismatch(tmp_path):
    root = _class_folder(tmp_path / "ds")
    assert D.verify_image_folder(root, expected_count=5).n_images == 5
    with pytest.raises(ValueError, match=r"holds 5 images but expected_count is 6"):
        D.verify_image_folder(root, expected_count=6)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_verify_truncated_image_fail_and_skip(tmp_path):
    root = tmp_path / "ds"
    for i in range(4):
        _png(root / "c" / f"{i}.png", size=(32, 32), value=i)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "c" / "bad.jpg")
    _truncate(root / "c" / "bad.jpg")
    (root / "c" / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"2 unreadable.*bad\.jpg") as err:
        D.verify_image_folder(root)
    assert "on_bad_image: skip" in str(err.value)

    report = D.verify_image_folder(root, on_bad_image="skip")
    assert report.n_skipped == 2 and report.n_images == 4
    assert sorted(f for f, _ in report.skipped) == ["c/bad.jpg", "c/junk.png"]

    manifest = D.dataset_manifest("toy", {"path": str(root)}, on_bad_image="skip")
    assert manifest["n_skipped"] == 2
    ds = D.open_dataset(manifest)
    assert len(ds) == 4 and "c/bad.jpg" not in ds.files
    with pytest.raises(ValueError, match="on_bad_image"):
        D.verify_image_folder(root, on_bad_image="ignore")


def test_unreadable_image_at_load_time_names_file(tmp_path):
    _png(tmp_path / "ds" / "a.png")
    ds = D.open_dataset({"path": str(tmp_path / "ds"), "format": "flat"})
    (tmp_path / "ds" / "a.png").write_bytes(b"garbage")
    with pytest.raises(OSError, match="a.png"):
        ds[0]


def test_manifest_detects_changed_folder(tmp_path):
    root = _class_folder(tmp_path / "ds")
    manifest = D.dataset_manifest("toy", {"path": str(root)})
    assert manifest["n_images"] == 5 and manifest["class_counts"] == [2, 3]
    _png(root / "cat" / "new.png")
    with pytest.raises(ValueError, match="changed since it was verified"):
        D.open_dataset(manifest)


def test_archive_manifest_does_not_slice_again(tmp_path):
    for i in range(3):
        _png(tmp_path / "ds" / f"{i}.png")
    spec = {"source": "archive", "path": str(tmp_path / "ds"), "format": "flat", "skip_images": 5}
    assert D.dataset_manifest("half", spec)["n_images"] == 3


def test_seeded_subset():
    data = list(range(1000))
    a = D.seeded_subset(data, 5, seed=3)
    b = D.seeded_subset(data, 5, seed=3)
    c = D.seeded_subset(data, 5, seed=4)
    assert len(a) == 50 and list(a.indices) == list(b.indices) != list(c.indices)
    assert list(a.indices) == sorted(set(a.indices))
    assert len(D.seeded_subset(data, 50, seed=0, max_items=7)) == 7
    with pytest.raises(ValueError, match="fraction"):
        D.seeded_subset(data, 0)


# --- digits benchmark ----------------------------------------------------------------


def test_digits_splits_disjoint_stratified_and_seeded():
    splits = D.digits_splits(seed=0, val_fraction=0.2, test_fraction=0.3)
    train, val, test = splits["train"], splits["val"], splits["test"]
    everything = np.concatenate([train, val, test])
    assert len(everything) == 1797 and len(np.unique(everything)) == 1797
    assert abs(len(test) - 0.3 * 1797) <= 1 and abs(len(val) - 0.2 * 1797) <= 1
    targets = load_digits().target
    for part in (train, val, test):
        share = np.bincount(targets[part], minlength=10) / len(part)
        np.testing.assert_allclose(share, np.bincount(targets) / 1797, atol=0.01)
    again = D.digits_splits(seed=0)
    other = D.digits_splits(seed=1)
    assert all(np.array_equal(splits[k], again[k]) for k in splits)
    assert not np.array_equal(splits["test"], other["test"])
    with pytest.raises(ValueError, match="val_fraction"):
        D.digits_splits(val_fraction=0.8, test_fraction=0.3)


def test_digit_images_are_the_sklearn_digits(tmp_path):
    manifest = D.build_digits_split(tmp_path / "test", "test", seed=0, image_size=8)
    digits = load_digits()
    ds = D.open_dataset(manifest)
    assert len(ds) == len(manifest["indices"]) == 540
    for k in (0, 100, 539):
        img, label = ds[k]
        index = int(ds.files[k].split("/")[1][:-4])
        assert index in manifest["indices"] and label == digits.target[index]
        expected = np.rint(digits.images[index] * 255 / 16).astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(img), expected)


def test_inverted_and_rotated_digits(tmp_path):
    digits = load_digits()
    test_split = set(D.digits_splits(seed=0)["test"].tolist())
    inv = D.build_inverted_digits(tmp_path / "inv", n_images=30, seed=0, image_size=8)
    assert set(inv["indices"]) <= test_split
    ds = D.open_dataset(inv)
    for k in range(3):
        index = int(ds.files[k].split("_")[1][:4])
        expected = 255 - np.rint(digits.images[index] * 255 / 16).astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(ds[k][0]), expected)

    rot = D.build_rotated_digits(tmp_path / "rot", n_images=40, seed=0, image_size=8)
    assert set(rot["indices"]) <= test_split
    assert 0 not in digits.target[rot["indices"]]  # zeros stay zeros under a quarter turn
    ds = D.open_dataset(rot)
    for k in range(4):
        name = ds.files[k]
        angle, index = int(name[len("rotated") : name.index("_")]), int(name.split("_")[1][:4])
        pixels = np.rint(digits.images[index] * 255 / 16).astype(np.uint8)
        expected = np.rot90(pixels, k=angle // 90)
        np.testing.assert_array_equal(np.asarray(ds[k][0]), expected)
    with pytest.raises(ValueError, match="ood_size"):
        D.build_inverted_digits(tmp_path / "too_many", n_images=10_000)


def test_noise_statistics(tmp_path):
    uni = D.open_dataset(D.build_uniform_noise(tmp_path / "u", n_images=50, image_size=16))
    gau = D.open_dataset(D.build_gaussian_noise(tmp_path / "g", n_images=50, image_size=16))
    u = np.stack([np.asarray(uni[i][0], float) for i in range(50)])
    g = np.stack([np.asarray(gau[i][0], float) for i in range(50)])
    assert u.shape == (50, 16, 16)
    assert abs(u.mean() - 127.5) < 3 and abs(u.std() - 73.9) < 2 and u.min() == 0 and u.max() == 255
    assert abs(g.mean() - 128) < 3 and abs(g.std() - 64) < 3  # clipping barely matters at 2 sd
    assert uni.labels.tolist() == [-1] * 50


def test_photo_patches_come_from_different_photos(tmp_path):
    china = D.build_photo_patches(tmp_path / "c", "china", n_images=20, image_size=16)
    flower = D.build_photo_patches(tmp_path / "f", "flower", n_images=20, image_size=16)
    a = D.open_dataset(china)
    b = D.open_dataset(flower)
    assert len(a) == len(b) == 20 and a[0][0].size == (16, 16) and a[0][0].mode == "L"
    assert all(f.startswith("china_") for f in a.files)
    assert _tree_bytes(tmp_path / "c").keys().isdisjoint(_tree_bytes(tmp_path / "f").keys())
    side_lo, side_hi = D.PATCH_SIDE_RANGE
    for top, left, side in china["patches"]:
        assert side_lo <= side <= side_hi and top + side <= 427 and left + side <= 640
    with pytest.raises(ValueError, match="photo"):
        D.build_photo_patches(tmp_path / "x", "mars")


@pytest.mark.parametrize(
    "spec",
    [
        {"builder": "digits", "split": "val"},
        {"builder": "photo_patches", "photo": "flower"},
        {"builder": "inverted_digits"},
        {"builder": "rotated_digits"},
        {"builder": "uniform_noise"},
        {"builder": "gaussian_noise"},
    ],
)
def test_builders_are_byte_identical_across_runs(tmp_path, spec):
    kw = {"split_seed": 3, "ood_size": 25, "image_size": 16}
    a = D.build_builtin_dataset("a", {"source": "builtin", **spec}, tmp_path / "a", **kw)
    b = D.build_builtin_dataset("b", {"source": "builtin", **spec}, tmp_path / "b", **kw)
    assert a["file_list_sha256"] == b["file_list_sha256"]
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")
    D.build_builtin_dataset(
        "c", {"source": "builtin", **spec}, tmp_path / "c", **{**kw, "split_seed": 4}
    )
    assert _tree_bytes(tmp_path / "a") != _tree_bytes(tmp_path / "c")
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary build folders are gone


def test_build_digits_benchmark_writes_all_sets(tmp_path):
    manifests = D.build_digits_benchmark(tmp_path, seed=0, ood_size=12, image_size=8)
    assert set(manifests) == {
        "digits-train", "digits-val", "digits-test", "photo-patches", "inverted-digits",
        "rotated-digits", "uniform-noise", "photo-patches-val", "gaussian-noise-val",
    }  # fmt: skip
    record = (tmp_path / "splits.json").read_text()
    assert '"splits"' in record
    n_id = sum(manifests[f"digits-{s}"]["n_images"] for s in ("train", "val", "test"))
    assert n_id == 1797


# --- downloads and local folders -----------------------------------------------------


def _fake_cifar10(path, rng):
    """A tarball in CIFAR-10's python format: 5 train batches + 1 test batch of 10 images
    (one per class, in a random order)."""
    batches = {}
    with tarfile.open(path, "w:gz") as tar:

        def add(name, obj):
            data = pickle.dumps(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]  # fmt: skip
        add("batches.meta", {b"label_names": names})
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            data = rng.integers(0, 256, (10, 3072), dtype=np.uint8)
            labels = rng.permutation(10).tolist()
            batches[name] = (data, labels)
            add(name, {b"data": data, b"labels": labels})
    return batches


def test_download_cifar10_from_a_local_source(tmp_path, monkeypatch):
    archive = tmp_path / "src" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    batches = _fake_cifar10(archive, np.random.default_rng(0))
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    remote = D.RemoteFile(archive.as_uri(), "cifar-10-python.tar.gz", md5)
    monkeypatch.setitem(
        D.DOWNLOADS, "cifar10", {**D.DOWNLOADS["cifar10"], "files": {"all": remote}}
    )

    spec = {"source": "download", "name": "cifar10", "split": "test", "path": str(tmp_path / "dl")}
    manifest = D.download_dataset("cifar10-test", spec, log=lambda *a: None)
    assert manifest["n_images"] == 10 and len(manifest["classes"]) == 10
    ds = D.open_dataset(manifest)
    data, labels = batches["test_batch"]
    by_index = {int(f.split("/")[1][:5]): k for k, f in enumerate(ds.files)}
    for i in range(10):
        img, label = ds[by_index[i]]
        assert label == labels[i]
        np.testing.assert_array_equal(
            np.asarray(img), data[i].reshape(3, 32, 32).transpose(1, 2, 0)
        )
    train = D.download_dataset("cifar10-train", {**spec, "split": "train"}, log=lambda *a: None)
    assert train["n_images"] == 50  # the archive was reused (same MD5), not fetched again


def test_download_checksum_mismatch(tmp_path, monkeypatch):
    archive = tmp_path / "cifar-10-python.tar.gz"
    _fake_cifar10(archive, np.random.default_rng(1))
    remote = D.RemoteFile(archive.as_uri(), "cifar-10-python.tar.gz", "0" * 32)
    monkeypatch.setitem(
        D.DOWNLOADS, "cifar10", {**D.DOWNLOADS["cifar10"], "files": {"all": remote}}
    )
    spec = {"source": "download", "name": "cifar10", "split": "test", "path": str(tmp_path / "dl")}
    with pytest.raises(ValueError, match="checksum mismatch.*expected 0{32}"):
        D.download_dataset("cifar10-test", spec, log=lambda *a: None)
    archives = tmp_path / "dl" / "archives"
    assert not archives.exists() or not any(archives.iterdir())  # nothing half-downloaded
    assert not (tmp_path / "dl" / "test").exists()
    with pytest.raises(ValueError, match="name"):
        D.download_dataset("x", {"source": "download", "name": "mnist"})


def test_link_dataset(tmp_path):
    root = _class_folder(tmp_path / "imagenet_val")
    spec = {"source": "link", "path": str(root), "expected_count": 5}
    manifest = D.link_dataset("imagenet-val", spec, dst=tmp_path / "links" / "imagenet-val")
    assert (tmp_path / "links" / "imagenet-val").is_symlink()
    assert len(D.open_dataset(manifest)) == 5
    with pytest.raises(FileNotFoundError, match=r"datasets\.sun\.path"):
        D.link_dataset("sun", {"source": "link", "path": str(tmp_path / "missing")})
