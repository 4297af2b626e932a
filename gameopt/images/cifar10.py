"""CIFAR-10 from the standard python-format batches, read from a path the user gives.

Nothing is downloaded: on many machines (ours included) there is no network at run time. The
user unpacks the official ``cifar-10-python.tar.gz`` once and passes the folder (or sets
``GAMEOPT_CIFAR10``). :func:`write_cifar10_like` writes a tiny data set in exactly that format,
for tests and smoke runs.

The batches are pickles. They are read with a restricted unpickler that only builds numpy
arrays, lists, dicts, bytes and numbers, so a tampered file cannot run code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

CIFAR10_ENV = "GAMEOPT_CIFAR10"
FOLDER_NAME = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
LABEL_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
HOW_TO_GET = (
    "Download the python version of CIFAR-10, cifar-10-python.tar.gz, from "
    "https://www.cs.toronto.edu/~kriz/cifar.html (md5 c58f30108f718f92721af3b95e74349a), "
    "unpack it (tar xzf cifar-10-python.tar.gz) and pass the folder 'cifar-10-batches-py' "
    f"(or its parent) as root, or set the environment variable {CIFAR10_ENV} to it."
)


class CIFAR10NotFoundError(FileNotFoundError):
    """The CIFAR-10 batches are not where we were told to look; the message says what to do."""


class CIFAR10FormatError(ValueError):
    """A CIFAR-10 batch file was read but does not have the standard contents."""


class _DataUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays (the only objects in CIFAR batches)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        # protocol-2 pickles written by Python 3 encode bytes objects through this call
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a CIFAR-10 batch contains only numpy arrays, "
            "lists and dicts"
        )


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _DataUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise CIFAR10FormatError(
            f"{path} is not a readable CIFAR-10 python batch ({type(e).__name__}: {e}). "
            f"The file may be truncated or corrupt; unpack a fresh copy. {HOW_TO_GET}"
        ) from e
    if not isinstance(obj, dict):
        raise CIFAR10FormatError(f"{path} holds a {type(obj).__name__}, expected a dict")
    # the official files have bytes keys (Python 2 str); accept str keys too
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def resolve_cifar10_root(root: str | os.PathLike | None = None) -> Path:
    """The ``cifar-10-batches-py`` folder for ``root`` (that folder or its parent) or the env var."""
    if root is None:
        env = os.environ.get(CIFAR10_ENV)
        if not env:
            raise CIFAR10NotFoundError(
                f"No CIFAR-10 location given: pass root=... or set {CIFAR10_ENV}. {HOW_TO_GET}"
            )
        root = env
    path = Path(root).expanduser()
    if (path / FOLDER_NAME).is_dir() and not (path / TRAIN_FILES[0]).exists():
        path = path / FOLDER_NAME
    return path


def require_cifar10(
    root: str | os.PathLike | None = None, splits: tuple[str, ...] = ("train", "test")
) -> Path:
    """The resolved ``cifar-10-batches-py`` folder, after checking every batch of ``splits`` is there.

    Raises :class:`CIFAR10NotFoundError` naming all missing files, the path tried and how to
    obtain the data.
    """
    for split in splits:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = resolve_cifar10_root(root)
    names = [n for split in splits for n in (TRAIN_FILES if split == "train" else TEST_FILES)]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        where = "does not exist" if not folder.exists() else "exists but lacks them"
        raise CIFAR10NotFoundError(
            f"CIFAR-10 {'+'.join(splits)}: missing {', '.join(missing)} in {folder} ({where}). "
            + HOW_TO_GET
        )
    return folder


def load_cifar10(
    root: str | os.PathLike | None = None, split: str = "train"
) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 images and labels from the standard python-format batches.

    Args:
        root: the ``cifar-10-batches-py`` folder or its parent; ``None`` reads ``$GAMEOPT_CIFAR10``.
        split: ``"train"`` (``data_batch_1..5``, 50000 images) or ``"test"`` (``test_batch``, 10000).

    Returns:
        images: uint8 ``(N, 3, 32, 32)``, channels R, G, B, values 0-255.
        labels: int64 ``(N,)`` in 0-9 (names in :data:`LABEL_NAMES`).

    Raises:
        CIFAR10NotFoundError: files missing (the message names them, the path tried and how to
            obtain the data).
        CIFAR10FormatError: a file does not hold the standard arrays.
    """
    folder = require_cifar10(root, (split,))
    names = TRAIN_FILES if split == "train" else TEST_FILES
    images, labels = [], []
    for name in names:
        path = folder / name
        batch = _unpickle(path)
        if "data" not in batch or "labels" not in batch:
            raise CIFAR10FormatError(
                f"{path} lacks the 'data'/'labels' entries of a CIFAR-10 batch "
                f"(found keys {sorted(map(str, batch))})"
            )
        data = batch["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            desc = (
                f"{data.dtype} array of shape {data.shape}"
                if isinstance(data, np.ndarray)
                else type(data).__name__
            )
            raise CIFAR10FormatError(f"{path}: 'data' must be a uint8 array (N, 3072), got {desc}")
        lab = np.asarray(batch["labels"])
        if lab.shape != (data.shape[0],) or not np.issubdtype(lab.dtype, np.integer):
            raise CIFAR10FormatError(
                f"{path}: 'labels' must be {data.shape[0]} integers, got shape {lab.shape} "
                f"dtype {lab.dtype}"
            )
        if lab.size and (lab.min() < 0 or lab.max() > 9):
            raise CIFAR10FormatError(f"{path}: labels outside 0-9 (min {lab.min()}, max {lab.max()})")
        images.append(torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.from_numpy(lab.astype(np.int64)))
    return torch.cat(images), torch.cat(labels)


def write_cifar10_like(
    root: str | os.PathLike, n_train_per_batch: int = 10, n_test: int = 10, seed: int = 0
) -> Path:
    """Write a tiny random data set in exactly the CIFAR-10 python format; returns its folder.

    Creates ``root/cifar-10-batches-py/`` with ``data_batch_1..5``, ``test_batch`` and
    ``batches.meta`` (protocol-2 pickles with bytes keys, as in the official tarball). Images
    are uniform random bytes; labels cycle through 0-9 so every class appears when N >= 10.
    """
    folder = Path(root) / FOLDER_NAME
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def batch(n: int, label: bytes, prefix: int) -> dict:
        labels = [int((prefix + i) % 10) for i in range(n)]
        return {
            b"batch_label": label,
            b"labels": labels,
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{prefix}_{i}.png".encode() for i in range(n)],
        }

    for i, name in enumerate(TRAIN_FILES):
        content = batch(n_train_per_batch, f"training batch {i + 1} of 5".encode(), i)
        with open(folder / name, "wb") as f:
            pickle.dump(content, f, protocol=2)
    with open(folder / TEST_FILES[0], "wb") as f:
        pickle.dump(batch(n_test, b"testing batch 1 of 1", 0), f, protocol=2)
    meta = {
        b"num_cases_per_batch": n_train_per_batch,
        b"label_names": [n.encode() for n in LABEL_NAMES],
        b"num_vis": 3072,
    }
    with open(folder / META_FILE, "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return folder


def to_signed_unit(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape) to float32 in [-1, 1]: ``x / 127.5 - 1`` (0 -> -1, 255 -> 1)."""
    if images_uint8.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images_uint8.dtype}")
    return images_uint8.to(torch.float32) / 127.5 - 1.0
