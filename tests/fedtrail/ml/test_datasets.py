"""Datasets: the bundled file, a user's MedMNIST .npz, image folders, partitioners."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import (
    ImageDataset,
    bundled_path,
    image_folder_classes,
    load_bundled,
    load_image_folder,
    load_medmnist_npz,
    partition_dirichlet,
    partition_iid,
    partition_quantity,
    subset_with_mix,
)

# ---------------------------------------------------------------- bundled file


def test_bundled_file_is_the_documented_one() -> None:
    digest = hashlib.md5(bundled_path().read_bytes()).hexdigest()
    assert digest == "3062d8c693378b506564f35a50301b11"
    readme = (bundled_path().parent / "README.md").read_text()
    assert "CC BY 4.0" in readme
    assert "MedMNIST v2" in readme and "Scientific Data" in readme
    assert "Kermany" in readme and "Cell" in readme


def test_load_bundled_shapes_counts_balance() -> None:
    s = load_bundled()
    for ds, n in ((s.train, 2428), (s.val, 270), (s.test, 468)):
        assert len(ds) == n
        assert ds.images.shape == (n, 1, 28, 28)
        assert ds.images.dtype == np.float32 and ds.labels.dtype == np.int64
        assert ds.labels.shape == (n,)
        assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
        assert ds.class_counts(2).tolist() == [n // 2, n // 2]
    assert s.num_classes == 2
    assert s.train.channels == 1 and s.train.image_size == (28, 28)
    # uint8 / 255 exactly
    raw = np.load(bundled_path())["train_images"]
    np.testing.assert_array_equal(s.train.images[:, 0], raw.astype(np.float32) / np.float32(255))


def test_dataset_is_read_only_and_validated() -> None:
    s = load_bundled()
    with pytest.raises(ValueError):
        s.train.images[0, 0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        s.train.labels[0] = 1
    with pytest.raises(ConfigError, match="shape"):
        ImageDataset(np.zeros((2, 28, 28), np.float32), np.zeros(2, np.int64))
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        ImageDataset(np.full((2, 1, 4, 4), 2.0, np.float32), np.zeros(2, np.int64))
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        ImageDataset(np.full((2, 1, 4, 4), np.nan, np.float32), np.zeros(2, np.int64))
    with pytest.raises(ConfigError, match="2 images but 3 labels"):
        ImageDataset(np.zeros((2, 1, 4, 4), np.float32), np.zeros(3, np.int64))
    with pytest.raises(ConfigError, match="non-negative"):
        ImageDataset(np.zeros((2, 1, 4, 4), np.float32), np.array([0, -1]))
    with pytest.raises(ConfigError, match="floating"):
        ImageDataset(np.zeros((2, 1, 4, 4), np.uint8), np.zeros(2, np.int64))


def test_subset_and_content_hash() -> None:
    s = load_bundled()
    sub = s.val.subset([3, 1, 2])
    assert len(sub) == 3
    np.testing.assert_array_equal(sub.labels, s.val.labels[[3, 1, 2]])
    assert sub.content_sha256() == s.val.subset(np.array([3, 1, 2])).content_sha256()
    assert sub.content_sha256() != s.val.subset([1, 2, 3]).content_sha256()
    assert s.val.content_sha256() == load_bundled().val.content_sha256()
    assert len(s.val.content_sha256()) == 64
    relabelled = ImageDataset(s.val.images, 1 - s.val.labels)
    assert relabelled.content_sha256() != s.val.content_sha256()
    assert len(s.val.subset([])) == 0
    with pytest.raises(ConfigError, match="out of range"):
        s.val.subset([270])
    with pytest.raises(ConfigError, match="integer"):
        s.val.subset([0.5])  # type: ignore[list-item]


# ---------------------------------------------------------------- user .npz


def _write_npz(path: Path, *, rgb: bool, flat_labels: bool, classes: int = 3) -> None:
    rng = np.random.default_rng(1)
    arrays: dict[str, Any] = {}
    for split, n in (("train", 12), ("val", 5), ("test", 6)):
        shape = (n, 8, 8, 3) if rgb else (n, 8, 8)
        arrays[f"{split}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        labels = rng.integers(0, classes, size=n).astype(np.uint8)
        arrays[f"{split}_labels"] = labels if flat_labels else labels[:, None]
    np.savez(path, **arrays)


@pytest.mark.parametrize("rgb", [False, True])
@pytest.mark.parametrize("flat_labels", [False, True])
def test_load_user_npz(tmp_path: Path, rgb: bool, flat_labels: bool) -> None:
    path = tmp_path / "user.npz"
    _write_npz(path, rgb=rgb, flat_labels=flat_labels)
    s = load_medmnist_npz(path)
    raw = np.load(path)
    c = 3 if rgb else 1
    assert s.train.images.shape == (12, c, 8, 8)
    assert (len(s.val), len(s.test)) == (5, 6)
    expected = raw["train_images"]
    expected = expected.transpose(0, 3, 1, 2) if rgb else expected[:, None]
    np.testing.assert_allclose(s.train.images, expected / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(s.test.labels, raw["test_labels"].reshape(-1))
    assert load_medmnist_npz(str(path), num_classes=3).train.content_sha256() == (
        s.train.content_sha256()
    )


def test_bad_npz_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_medmnist_npz(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip archive")
    with pytest.raises(ConfigError, match="cannot read"):
        load_medmnist_npz(junk)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ConfigError, match=r"single \.npy"):
        load_medmnist_npz(single)

    good = tmp_path / "good.npz"
    _write_npz(good, rgb=False, flat_labels=False)
    base = dict(np.load(good))

    def write(**changes: object) -> Path:
        arrays = {**base, **changes}
        out = tmp_path / "bad.npz"
        np.savez(out, **{k: v for k, v in arrays.items() if v is not None})
        return out

    with pytest.raises(ConfigError, match=r"missing keys \['val_labels'\]"):
        load_medmnist_npz(write(val_labels=None))
    with pytest.raises(ConfigError, match="train_images must be"):
        load_medmnist_npz(write(train_images=np.zeros((12, 8), np.uint8)))
    with pytest.raises(ConfigError, match="3D MedMNIST"):
        load_medmnist_npz(write(train_images=np.zeros((12, 8, 8, 8), np.uint8)))
    with pytest.raises(ConfigError, match="val_images are"):
        load_medmnist_npz(write(val_images=np.zeros((5, 9, 9), np.uint8)))
    with pytest.raises(ConfigError, match="12 train images but 11"):
        load_medmnist_npz(write(train_labels=np.zeros((11, 1), np.uint8)))
    with pytest.raises(ConfigError, match="multi-label"):
        load_medmnist_npz(write(train_labels=np.zeros((12, 14), np.uint8)))
    with pytest.raises(ConfigError, match="integers"):
        load_medmnist_npz(write(train_labels=np.zeros((12, 1), np.float32)))
    with pytest.raises(ConfigError, match="non-negative"):
        load_medmnist_npz(write(test_labels=np.full((6, 1), -1, np.int64)))
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        load_medmnist_npz(good, num_classes=2)  # labels go up to 2
    with pytest.raises(ConfigError, match="uint8"):
        load_medmnist_npz(write(train_images=np.zeros((12, 8, 8), np.int32)))
    with pytest.raises(ConfigError, match="outside"):
        load_medmnist_npz(write(train_images=np.full((12, 8, 8), 3.0, np.float32)))
    with pytest.raises(ConfigError, match="empty"):
        load_medmnist_npz(
            write(test_images=np.zeros((0, 8, 8), np.uint8), test_labels=np.zeros((0, 1)))
        )
    obj = tmp_path / "obj.npz"
    np.savez(obj, **{**base, "train_images": np.array([None] * 12, dtype=object)})
    with pytest.raises(ConfigError, match="cannot read"):
        load_medmnist_npz(obj)


# ---------------------------------------------------------------- image folder


def _write_png(path: Path, value: int, size: tuple[int, int] = (40, 30), rgb: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if rgb:
        Image.new("RGB", size, (value, 0, 255 - value)).save(path)
    else:
        Image.new("L", size, value).save(path)


def test_load_image_folder(tmp_path: Path) -> None:
    _write_png(tmp_path / "pneumonia" / "b.png", 200)
    _write_png(tmp_path / "pneumonia" / "a.png", 100, rgb=True)
    _write_png(tmp_path / "normal" / "x.jpg", 50)
    (tmp_path / "normal" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "README").write_text("top-level files are ignored")
    assert image_folder_classes(tmp_path) == ["normal", "pneumonia"]

    ds = load_image_folder(tmp_path)
    assert ds.images.shape == (3, 1, 28, 28)
    assert ds.labels.tolist() == [0, 1, 1]  # normal first; files sorted within a class
    assert ds.images[2].mean() == pytest.approx(200 / 255, abs=1e-6)
    assert ds.images[0].mean() == pytest.approx(50 / 255, abs=0.01)  # jpeg is lossy

    rgb = load_image_folder(tmp_path, image_size=16, grayscale=False)
    assert rgb.images.shape == (3, 3, 16, 16)
    assert rgb.images[1, 0].mean() == pytest.approx(100 / 255, abs=1e-6)
    assert rgb.images[1, 2].mean() == pytest.approx(155 / 255, abs=1e-6)

    # explicit class order keeps ids stable at a site that lacks a class
    only = tmp_path / "site"
    _write_png(only / "pneumonia" / "p.png", 10)
    assert load_image_folder(only).labels.tolist() == [0]
    assert load_image_folder(only, classes=["normal", "pneumonia"]).labels.tolist() == [1]


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_image_folder(tmp_path / "nope")
    with pytest.raises(ConfigError, match="no class sub-folders"):
        load_image_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no images"):
        load_image_folder(tmp_path)
    _write_png(tmp_path / "empty" / "ok.png", 1)
    (tmp_path / "empty" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"cannot read image .*broken\.png"):
        load_image_folder(tmp_path)
    (tmp_path / "empty" / "broken.png").unlink()
    with pytest.raises(ConfigError, match="not among the classes"):
        load_image_folder(tmp_path, classes=["normal"])
    with pytest.raises(ConfigError, match="duplicate"):
        load_image_folder(tmp_path, classes=["empty", "empty"])
    with pytest.raises(ConfigError, match="image_size"):
        load_image_folder(tmp_path, image_size=0)


# ---------------------------------------------------------------- partitioners


def _assert_partition(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert joined.size == n
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))  # disjoint and covering
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0)


def _label_skew(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each site's class mix and the global mix."""
    k = int(labels.max()) + 1
    glob = np.bincount(labels, minlength=k) / labels.size
    tv = [0.5 * np.abs(np.bincount(labels[p], minlength=k) / p.size - glob).sum() for p in parts]
    return float(np.mean(tv))


def test_partition_iid_is_stratified_and_seeded() -> None:
    y = load_bundled().train.labels
    parts = partition_iid(y, 5, seed=0)
    _assert_partition(parts, y.size)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1
    for p in parts:
        counts = np.bincount(y[p], minlength=2)
        assert abs(int(counts[0]) - int(counts[1])) <= 1
    again = partition_iid(y, 5, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition_iid(y, 5, seed=1)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_partition_dirichlet_skew_depends_on_alpha() -> None:
    y = load_bundled().train.labels
    skews = {}
    for alpha in (0.1, 1.0, 100.0):
        per_seed = []
        for seed in range(5):
            parts = partition_dirichlet(y, 5, alpha, seed)
            _assert_partition(parts, y.size)
            assert min(p.size for p in parts) >= 10
            per_seed.append(_label_skew(y, parts))
        skews[alpha] = float(np.mean(per_seed))
    # measured: 0.41 / 0.26 / 0.02 (mean TV distance from the global 50/50 mix; 0.5 = one class)
    assert skews[0.1] > 0.3
    assert skews[0.1] > skews[1.0] + 0.1
    assert skews[1.0] > skews[100.0] + 0.1
    assert skews[100.0] < 0.06
    a = partition_dirichlet(y, 4, 0.5, seed=3, min_size=50)
    b = partition_dirichlet(y, 4, 0.5, seed=3, min_size=50)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert min(p.size for p in a) >= 50


def test_partition_quantity_skew() -> None:
    n = 2428
    small = partition_quantity(n, 5, seed=0, alpha=0.2, min_size=20)
    large = partition_quantity(n, 5, seed=0, alpha=1000.0, min_size=20)
    for parts in (small, large):
        _assert_partition(parts, n)
        assert min(p.size for p in parts) >= 20
    cv = [np.std([p.size for p in ps]) / np.mean([p.size for p in ps]) for ps in (small, large)]
    assert cv[0] > 0.5 > 0.05 > cv[1]  # measured: 1.01 and 0.02
    again = partition_quantity(n, 5, seed=0, alpha=0.2, min_size=20)
    assert all(np.array_equal(p, q) for p, q in zip(small, again, strict=True))


def test_partition_argument_errors() -> None:
    y = np.array([0, 1] * 10)
    with pytest.raises(ConfigError, match="n_sites"):
        partition_iid(y, 0, 0)
    with pytest.raises(ConfigError, match="n_sites"):
        partition_iid(y, 2.5, 0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cannot give 21 sites"):
        partition_iid(y, 21, 0)
    with pytest.raises(ConfigError, match="seed"):
        partition_iid(y, 2, -1)
    with pytest.raises(ConfigError, match="empty"):
        partition_iid([], 2, 0)
    with pytest.raises(ConfigError, match="1-D"):
        partition_iid(y.reshape(2, 10), 2, 0)
    with pytest.raises(ConfigError, match="integers"):
        partition_iid(y.astype(float), 2, 0)
    with pytest.raises(ConfigError, match="alpha"):
        partition_dirichlet(y, 2, 0.0, 0)
    with pytest.raises(ConfigError, match="alpha"):
        partition_dirichlet(y, 2, float("nan"), 0)
    with pytest.raises(ConfigError, match="at least 10 samples"):
        partition_dirichlet(y, 3, 1.0, 0)
    with pytest.raises(ConfigError, match="larger alpha"):
        partition_dirichlet(np.array([0, 1] * 50), 5, 0.01, 0, min_size=15, max_attempts=5)
    # an alpha whose draw overflows (3 x 1e308 > float max) came back as all-zero shares: the
    # Dirichlet split failed saying "use a larger alpha", the quantity split gave skewed sizes
    for huge in (1e308, np.finfo(np.float64).max):
        with pytest.raises(ConfigError, match="use a smaller alpha"):
            partition_dirichlet(np.array([0, 1] * 50), 3, huge, 0)
        with pytest.raises(ConfigError, match="use a smaller alpha"):
            partition_quantity(100, 3, 0, alpha=huge)
    near_iid = [p.size for p in partition_dirichlet(np.array([0, 1] * 50), 3, 1e300, 0)]
    assert sum(near_iid) == 100 and max(near_iid) - min(near_iid) <= 2  # still a valid alpha
    with pytest.raises(ConfigError, match="min_size"):
        partition_quantity(20, 2, 0, min_size=0)
    with pytest.raises(ConfigError, match="alpha"):
        partition_quantity(20, 2, 0, alpha=-1.0)
    with pytest.raises(ConfigError, match="cannot give 3 sites at least 10"):
        partition_quantity(20, 3, 0)


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=1, max_size=300),
    n_sites=st.integers(1, 8),
    seed=st.integers(0, 2**32),
    alpha=st.floats(0.05, 50.0),
    data=st.data(),
)
def test_partitions_are_disjoint_and_covering(
    labels: list[int], n_sites: int, seed: int, alpha: float, data: st.DataObject
) -> None:
    y = np.array(labels)
    n = y.size
    if n_sites > n:
        with pytest.raises(ConfigError):
            partition_iid(y, n_sites, seed)
        return
    iid = partition_iid(y, n_sites, seed)
    _assert_partition(iid, n)
    assert max(p.size for p in iid) - min(p.size for p in iid) <= 1

    min_size = data.draw(st.integers(1, n // n_sites), label="min_size")
    quantity = partition_quantity(n, n_sites, seed, alpha=alpha, min_size=min_size)
    _assert_partition(quantity, n)
    assert min(p.size for p in quantity) >= min_size

    try:
        dirichlet = partition_dirichlet(y, n_sites, alpha, seed, min_size, max_attempts=50)
    except ConfigError as exc:
        assert "larger alpha" in str(exc)
    else:
        _assert_partition(dirichlet, n)
        assert min(p.size for p in dirichlet) >= min_size
        again = partition_dirichlet(y, n_sites, alpha, seed, min_size, max_attempts=50)
        assert all(np.array_equal(p, q) for p, q in zip(dirichlet, again, strict=True))


def test_a_subset_with_a_site_mix_follows_the_mix_and_keeps_every_class() -> None:
    test = load_bundled().test
    skewed = subset_with_mix(test, np.array([0.8, 0.2]), seed=1)
    counts = np.bincount(skewed.labels, minlength=2)
    assert counts[0] == 234 and abs(counts[1] - round(234 * 0.2 / 0.8)) <= 1
    one_class = subset_with_mix(test, np.array([0.0, 1.0]), seed=1)
    assert list(np.bincount(one_class.labels, minlength=2)) == [5, 234]
    again = subset_with_mix(test, np.array([0.8, 0.2]), seed=1)
    assert np.array_equal(again.labels, skewed.labels)
    assert np.array_equal(again.images, skewed.images)

    with pytest.raises(ConfigError, match="class mix"):
        subset_with_mix(test, np.array([0.0, 0.0]), seed=1)
    with pytest.raises(ConfigError, match="class mix"):
        subset_with_mix(test, np.array([1.0]), seed=1)


def test_a_file_that_is_no_archive_is_named_so_not_a_pickle(tmp_path: Path) -> None:
    """numpy reads any non-zip, non-.npy file as a pickle and refuses 'pickled (object) data'."""
    junk = tmp_path / "scans.npz"
    junk.write_text("x\n")
    with pytest.raises(ConfigError, match="not a zip archive of arrays") as caught:
        load_medmnist_npz(junk)
    assert "pickle" not in str(caught.value)
