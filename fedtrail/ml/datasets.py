"""Image datasets: the bundled PneumoniaMNIST subset, loaders for a user's own data, and
seeded partitioners that split one dataset into simulated sites.

Every dataset in memory is an :class:`ImageDataset`: images ``(N, C, H, W)`` float32 in
``[0, 1]`` and labels ``(N,)`` int64, both read-only. Loaders turn anything malformed into a
:class:`~fedtrail.errors.ConfigError` that names the file and what is wrong with it.

Partitioners return one sorted int64 index array per site; the arrays are disjoint and together
cover every index exactly once. The same arguments and seed always give the same partition
(numpy's ``default_rng``; its streams are stable across numpy releases for the calls used here).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedtrail.errors import ConfigError

__all__ = [
    "BUNDLED_NAME",
    "IMAGE_SUFFIXES",
    "ImageDataset",
    "Splits",
    "bundled_path",
    "image_folder_classes",
    "load_bundled",
    "load_image_folder",
    "load_medmnist_npz",
    "partition_dirichlet",
    "partition_iid",
    "partition_quantity",
    "subset_with_mix",
]

BUNDLED_NAME = "pneumoniamnist_balanced.npz"
"""File name of the shipped dataset inside ``fedtrail/data/``."""

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
"""File suffixes :func:`load_image_folder` reads (case-insensitive); other files are skipped."""

_SPLITS = ("train", "val", "test")
_RESIZE_CHUNK = 256  # images resized at once: bounds the temporary memory
_HASH_DOMAIN = b"fedtrail.ImageDataset.v1\x00"

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def _readonly(arr: np.ndarray) -> np.ndarray:
    view = arr.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images and integer class labels held in memory.

    ``images`` is ``(N, C, H, W)`` float32 in ``[0, 1]``; ``labels`` is ``(N,)`` int64 and
    non-negative. Inputs of another float/int dtype are converted; both arrays are stored as
    read-only views, so a dataset never changes after construction. Equality is identity
    (compare :meth:`content_sha256` for content).
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        labels = np.asarray(self.labels)
        if images.ndim != 4:
            raise ConfigError(f"images must have shape (N, C, H, W), got {images.shape}")
        if not np.issubdtype(images.dtype, np.floating):
            raise ConfigError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
        if labels.ndim != 1:
            raise ConfigError(f"labels must have shape (N,), got {labels.shape}")
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ConfigError(f"labels must be integers, got dtype {labels.dtype}")
        if images.shape[0] != labels.shape[0]:
            raise ConfigError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        images = np.ascontiguousarray(images, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if images.size:
            lo, hi = float(images.min()), float(images.max())
            if not (lo >= 0.0 and hi <= 1.0):  # also false for NaN
                raise ConfigError(f"image values must lie in [0, 1], found [{lo}, {hi}]")
        if labels.size and int(labels.min()) < 0:
            raise ConfigError("labels must be non-negative class ids")
        object.__setattr__(self, "images", _readonly(images))
        object.__setattr__(self, "labels", _readonly(labels))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def class_counts(self, num_classes: int | None = None) -> IntArray:
        """Samples per class id, ``num_classes`` long (default: largest label + 1)."""
        length = 0 if num_classes is None else num_classes
        return np.bincount(self.labels, minlength=length).astype(np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageDataset:
        """The samples at ``indices`` (integer positions, in the given order; repeats allowed)."""
        idx = np.asarray(indices)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ConfigError("subset indices must be a 1-D array of integer positions")
        n = len(self)
        if idx.size and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise ConfigError(f"subset index out of range for a dataset of {n} samples")
        return ImageDataset(self.images[idx], self.labels[idx])

    def content_sha256(self) -> str:
        """sha256 (hex) of the canonical bytes: a domain tag, a JSON header with the shapes, the
        images as little-endian float32 and the labels as little-endian int64, both C order.
        Equal for two datasets exactly when their shapes, pixel values and labels are equal.
        """
        header = json.dumps(
            {"images": list(self.images.shape), "labels": list(self.labels.shape)},
            sort_keys=True,
            separators=(",", ":"),
        ).encode("ascii")
        h = hashlib.sha256()
        h.update(_HASH_DOMAIN)
        h.update(len(header).to_bytes(8, "little"))
        h.update(header)
        h.update(np.ascontiguousarray(self.images, dtype="<f4").tobytes())
        h.update(np.ascontiguousarray(self.labels, dtype="<i8").tobytes())
        return h.hexdigest()

    def resized(self, size: int) -> ImageDataset:
        """The images resized to ``size x size`` (labels unchanged; ``self`` when already so).

        Bilinear interpolation with antialiasing (torch ``interpolate``, ``align_corners=False``)
        in float32, clipped to ``[0, 1]``: every output pixel is a fixed weighted sum of input
        pixels, so the same images give the same bits on every run. A 28 px site can so train a
        64 px model, and a MedMNIST+ 64-224 px file can feed a smaller one."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"image size must be a positive integer, got {size!r}")
        if self.image_size == (size, size):
            return self
        import torch
        from torch.nn import functional

        n, c = len(self), self.channels
        out = np.empty((n, c, size, size), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, n, _RESIZE_CHUNK):
                part = torch.from_numpy(np.array(self.images[start : start + _RESIZE_CHUNK]))
                scaled = functional.interpolate(
                    part, size=(size, size), mode="bilinear", align_corners=False, antialias=True
                )
                out[start : start + _RESIZE_CHUNK] = scaled.clamp_(0.0, 1.0).numpy()
        return ImageDataset(out, self.labels)


@dataclass(frozen=True, eq=False)
class Splits:
    """The train / validation / test splits of one dataset file."""

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset

    @property
    def num_classes(self) -> int:
        """Largest label in any split + 1."""
        return 1 + max(int(s.labels.max()) for s in (self.train, self.val, self.test) if len(s))

    def resized(self, size: int) -> Splits:
        """Every split resized to ``size x size`` (:meth:`ImageDataset.resized`)."""
        return Splits(self.train.resized(size), self.val.resized(size), self.test.resized(size))


# ---------------------------------------------------------------- MedMNIST .npz


_NPY_MAGIC = b"\x93NUMPY"


def load_medmnist_npz(path: str | os.PathLike[str], *, num_classes: int | None = None) -> Splits:
    """Load any MedMNIST 2D ``.npz``: keys ``{train,val,test}_images`` — uint8 ``(N, H, W)``
    grayscale or ``(N, H, W, 3)`` RGB (``(N, H, W, 1)`` and floats in ``[0, 1]`` are accepted
    too) — and ``{train,val,test}_labels`` — integers ``(N, 1)`` or ``(N,)``.

    uint8 pixels are scaled by 1/255. With ``num_classes``, every label must be below it
    (multi-label files such as ChestMNIST, whose labels are ``(N, 14)``, are refused).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"dataset file not found: {p}")
    wanted = [f"{s}_{kind}" for s in _SPLITS for kind in ("images", "labels")]
    try:
        with p.open("rb") as fh:
            head = fh.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise ConfigError(f"cannot read {p} as a .npz file: {exc}") from exc
    if head != _NPY_MAGIC and not zipfile.is_zipfile(p):
        # numpy takes any other file for a pickle and says so, which misleads: say what it is
        raise ConfigError(f"cannot read {p} as a .npz file: it is not a zip archive of arrays")
    try:
        loaded = np.load(p, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"cannot read {p} as a .npz file: {exc}") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ConfigError(f"{p} is a single .npy array, not a MedMNIST .npz archive")
    with loaded as npz:
        missing = [k for k in wanted if k not in npz.files]
        if missing:
            raise ConfigError(
                f"{p} is not a MedMNIST .npz: missing keys {missing} (found {sorted(npz.files)})"
            )
        try:
            raw = {k: npz[k] for k in wanted}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ConfigError(f"cannot read {p} as a .npz file: {exc}") from exc
    if num_classes is not None and num_classes < 1:
        raise ConfigError("num_classes must be positive")

    splits: dict[str, ImageDataset] = {}
    layout: tuple[int, ...] | None = None
    for split in _SPLITS:
        images = _npz_images(p, split, raw[f"{split}_images"])
        labels = _npz_labels(p, split, raw[f"{split}_labels"], images.shape[0], num_classes)
        if layout is None:
            layout = images.shape[1:]
        elif images.shape[1:] != layout:
            raise ConfigError(
                f"{p}: {split}_images are {images.shape[1:]} (C, H, W), train_images {layout}"
            )
        splits[split] = ImageDataset(images, labels)
    return Splits(**splits)


def _npz_images(p: Path, split: str, arr: np.ndarray) -> np.ndarray:
    key = f"{split}_images"
    if arr.ndim == 3:
        arr = arr[:, None, :, :]
    elif arr.ndim == 4 and arr.shape[3] in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)
    else:
        raise ConfigError(
            f"{p}: {key} must be (N, H, W) grayscale or (N, H, W, 3) RGB, got {arr.shape}"
            + (" (3D MedMNIST volumes are not supported)" if arr.ndim == 4 else "")
        )
    if arr.shape[0] == 0:
        raise ConfigError(f"{p}: {key} is empty")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        if not (float(out.min()) >= 0.0 and float(out.max()) <= 1.0):
            raise ConfigError(f"{p}: {key} are floats outside [0, 1]")
        return out
    raise ConfigError(f"{p}: {key} must be uint8 (or float in [0, 1]), got {arr.dtype}")


def _npz_labels(
    p: Path, split: str, arr: np.ndarray, n: int, num_classes: int | None
) -> np.ndarray:
    key = f"{split}_labels"
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim != 1:
        raise ConfigError(
            f"{p}: {key} must be (N, 1) or (N,), got {arr.shape}"
            + (" (multi-label datasets are not supported)" if arr.ndim == 2 else "")
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"{p}: {key} must be integers, got {arr.dtype}")
    if arr.shape[0] != n:
        raise ConfigError(f"{p}: {n} {split} images but {arr.shape[0]} {split} labels")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        allowed = "non-negative" if num_classes is None else f"in [0, {num_classes - 1}]"
        raise ConfigError(f"{p}: {key} range [{lo}, {hi}], labels must be {allowed}")
    return arr.astype(np.int64)


def bundled_path() -> Path:
    """Path of the shipped PneumoniaMNIST subset (see ``fedtrail/data/README.md``)."""
    return Path(str(resources.files("fedtrail").joinpath("data", BUNDLED_NAME)))


def load_bundled() -> Splits:
    """The shipped class-balanced PneumoniaMNIST subset: 28x28 grayscale chest X-rays, two
    classes (named in ``fedtrail/data/pneumoniamnist_balanced.json``); train 2428, val 270, test
    468 (CC BY 4.0, MedMNIST v2)."""
    return load_medmnist_npz(bundled_path(), num_classes=2)


# ---------------------------------------------------------------- folder of images


def image_folder_classes(path: str | os.PathLike[str]) -> list[str]:
    """The class names :func:`load_image_folder` finds: sorted sub-folder names (hidden skipped)."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"image folder not found: {root}")
    found = sorted(e.name for e in root.iterdir() if e.is_dir() and not e.name.startswith("."))
    if not found:
        raise ConfigError(f"{root} has no class sub-folders (expected root/<class>/<image files>)")
    return found


def load_image_folder(
    path: str | os.PathLike[str],
    *,
    image_size: int = 28,
    grayscale: bool = True,
    classes: Sequence[str] | None = None,
) -> ImageDataset:
    """Load a folder with one sub-folder per class (``root/<class>/*.png``).

    Label ids follow the sorted sub-folder names, or the order of ``classes`` when given — pass
    it when a site may lack a class, so that ids stay the same at every site. Images (suffixes in
    :data:`IMAGE_SUFFIXES`) are converted to grayscale (``C = 1``) or RGB (``C = 3``) and resized
    to ``image_size`` x ``image_size`` (bilinear, aspect ratio not kept); other files and hidden
    entries are skipped. Files are read in sorted order, so the result is deterministic.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    found = image_folder_classes(root)
    if image_size < 1:
        raise ConfigError("image_size must be positive")
    if classes is None:
        names = found
    else:
        names = list(classes)
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate class names in {names}")
        unknown = sorted(set(found) - set(names))
        if unknown:
            raise ConfigError(f"{root}: sub-folders {unknown} are not among the classes {names}")
    if not found:
        raise ConfigError(f"{root} has no class sub-folders (expected root/<class>/<image files>)")

    mode = "L" if grayscale else "RGB"
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        folder = root / name
        if not folder.is_dir():
            continue
        files = sorted(
            f
            for f in folder.iterdir()
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise ConfigError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for f in files:
            try:
                with Image.open(f) as img:
                    img.load()
                    conv = img.convert(mode).resize(
                        (image_size, image_size), Image.Resampling.BILINEAR
                    )
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise ConfigError(f"cannot read image {f}: {exc}") from exc
            a = np.asarray(conv, dtype=np.uint8)
            arrays.append(a[None] if grayscale else a.transpose(2, 0, 1))
            labels.append(label)
    images = np.stack(arrays).astype(np.float32) / np.float32(255.0)
    return ImageDataset(images, np.asarray(labels, dtype=np.int64))


# ---------------------------------------------------------------- partitioners


def _check_labels(labels: Sequence[int] | np.ndarray) -> IntArray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ConfigError(f"labels must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ConfigError("cannot partition an empty dataset")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"labels must be integers, got {arr.dtype}")
    if int(arr.min()) < 0:
        raise ConfigError("labels must be non-negative class ids")
    return arr.astype(np.int64)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not (np.isfinite(v) and v > 0):
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    return v


def _dirichlet(rng: np.random.Generator, k: int, alpha: float, rows: int) -> FloatArray:
    """``rows`` draws of Dirichlet(``alpha``) over ``k`` sites. An alpha so large that the
    draw's sum overflows a float (``k`` x alpha past 1.8e308) comes back from numpy as all
    zeros: every site but the last got nothing, and the error that followed said to use a
    *larger* alpha. Refused here, saying what to do (alpha 1e6 is already near IID)."""
    shares = rng.dirichlet(np.full(k, alpha), size=rows)
    if not np.all(np.isfinite(shares)) or not np.allclose(shares.sum(axis=1), 1.0):
        raise ConfigError(
            f"alpha={alpha} is too large for a Dirichlet draw over {k} sites (the draw "
            "overflows a float); use a smaller alpha (1e6 already gives near-IID shares)"
        )
    return shares


def _check_sites(n_sites: object, n: int, min_size: int = 1) -> int:
    k = _check_int("n_sites", n_sites, 1)
    if k * min_size > n:
        raise ConfigError(
            f"cannot give {k} sites at least {min_size} samples each from {n} samples"
        )
    return k


def _rng(seed: object) -> np.random.Generator:
    return np.random.default_rng(_check_int("seed", seed, 0))


def _split_by_sizes(order: IntArray, sizes: IntArray) -> list[IntArray]:
    parts = np.split(order, np.cumsum(sizes)[:-1])
    return [np.sort(p).astype(np.int64) for p in parts]


def partition_iid(labels: Sequence[int] | np.ndarray, n_sites: int, seed: int) -> list[IntArray]:
    """IID sites: shuffled and stratified, so every site has (within one sample per class) the
    global class proportions and site sizes differ by at most one."""
    y = _check_labels(labels)
    k = _check_sites(n_sites, y.size)
    rng = _rng(seed)
    order = rng.permutation(y.size)
    order = order[np.argsort(y[order], kind="stable")]  # shuffled within each class
    site_of = np.arange(y.size) % k  # deal the class-sorted order round-robin
    return [np.sort(order[site_of == s]).astype(np.int64) for s in range(k)]


def partition_dirichlet(
    labels: Sequence[int] | np.ndarray,
    n_sites: int,
    alpha: float,
    seed: int,
    min_size: int = 10,
    *,
    max_attempts: int = 1000,
) -> list[IntArray]:
    """Label skew: for each class, the share of its samples going to each site is drawn from
    Dirichlet(alpha, ..., alpha) (Yurochkin et al. 2019; NIID-Bench). Small alpha (0.1) gives
    sites dominated by one class, large alpha (100) approaches IID. Draws are repeated until every
    site holds at least ``min_size`` samples; after ``max_attempts`` a ConfigError suggests a larger
    alpha or a smaller ``min_size``.
    """
    y = _check_labels(labels)
    a = _check_positive("alpha", alpha)
    m = _check_int("min_size", min_size, 1)
    k = _check_sites(n_sites, y.size, m)
    tries = _check_int("max_attempts", max_attempts, 1)
    rng = _rng(seed)
    classes = np.unique(y)
    by_class = [np.flatnonzero(y == c) for c in classes]
    counts = np.array([idx.size for idx in by_class])
    for _ in range(tries):
        shares = _dirichlet(rng, k, a, classes.size)  # (classes, sites)
        # cut points of each class's samples, by cumulative share (sizes sum to the class count)
        cuts = np.floor(np.cumsum(shares, axis=1) * counts[:, None]).astype(np.int64)
        cuts[:, -1] = counts
        sizes = np.diff(np.concatenate([np.zeros((classes.size, 1), np.int64), cuts], 1), axis=1)
        if int(sizes.sum(axis=0).min()) >= m:
            break
    else:
        raise ConfigError(
            f"no Dirichlet(alpha={alpha}) draw in {tries} attempts gave all {k} sites at least "
            f"{m} samples; use a larger alpha, fewer sites or a smaller min_size"
        )
    parts: list[list[IntArray]] = [[] for _ in range(k)]
    for idx, class_sizes in zip(by_class, sizes, strict=True):
        for s, chunk in enumerate(np.split(rng.permutation(idx), np.cumsum(class_sizes)[:-1])):
            parts[s].append(chunk)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def partition_quantity(
    n: int, n_sites: int, seed: int, *, alpha: float = 1.0, min_size: int = 10
) -> list[IntArray]:
    """Quantity skew: each site first gets ``min_size`` samples, the remainder is shared out in
    proportions drawn from Dirichlet(alpha, ..., alpha) (largest-remainder rounding); samples are
    assigned at random, so class proportions stay roughly global. Small alpha -> a few large sites
    and many at ``min_size``; large alpha -> near-equal sizes.
    """
    total = _check_int("n", n, 1)
    a = _check_positive("alpha", alpha)
    m = _check_int("min_size", min_size, 1)
    k = _check_sites(n_sites, total, m)
    rng = _rng(seed)
    shares = _dirichlet(rng, k, a, 1)[0]
    rest = total - k * m
    exact = shares * rest
    extra = np.floor(exact).astype(np.int64)
    short = rest - int(extra.sum())
    if short:
        extra[np.argsort(-(exact - extra), kind="stable")[:short]] += 1
    return _split_by_sizes(rng.permutation(total).astype(np.int64), extra + m)


def subset_with_mix(
    pool: ImageDataset, mix: Sequence[float] | np.ndarray, seed: int, *, min_per_class: int = 5
) -> ImageDataset:
    """A seeded subset of ``pool`` with class shares ``mix`` (a site's own case mix): the most
    images the scarcest needed class of ``pool`` allows, and at least ``min_per_class`` of every
    class, also one the mix lacks, so that per-class metrics (AUC) stay defined. Used to judge
    a model on "what this site's patients look like" from a balanced split."""
    shares = np.asarray(mix, dtype=np.float64)
    labels = pool.labels
    classes = int(labels.max()) + 1 if len(labels) else 0
    if shares.ndim != 1 or len(shares) < classes or not np.all(shares >= 0) or shares.sum() <= 0:
        raise ConfigError(
            f"a class mix needs {classes} or more non-negative shares, not all zero; "
            f"got {shares.tolist()}"
        )
    have = np.bincount(labels, minlength=len(shares))
    total = min(have[c] / shares[c] for c in np.flatnonzero(shares > 0))
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(len(shares)):
        k = int(min(have[c], max(min_per_class, round(shares[c] * total))))
        picks.append(rng.choice(np.flatnonzero(labels == c), size=k, replace=False))
    return pool.subset(np.sort(np.concatenate(picks)))
