"""CIFAR-10 from the standard python-format batches, read from a path the user gives.

Nothing is downloaded: on many machines (ours included) there is no network at run time. The
user unpacks the official ``cifar-10-python.tar.gz`` once and passes the folder (or sets
``GAMEOPT_CIFAR10``). :func:`write_cifar10_like` writes a tiny data set in exactly that format,
for tests and smoke runs.

The batches are pickles. They are read with a restricted unpickler that only builds numpy
arrays, lists, dicts, bytes and numbers, so a tampered file cannot run code, and every array
or string it builds must fit in the file's own size, so a corrupt or crafted file (a 200-byte
file declaring 200,000 images) cannot make it allocate more memory than the file holds. Any
defect raises :class:`CIFAR10FormatError`.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import struct
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


#: Largest batch file read (the official ones are 31 MB); anything bigger is not a CIFAR batch.
MAX_BATCH_BYTES = 256 * 2**20

# What a corrupt pickle can raise while being read; all become CIFAR10FormatError. MemoryError
# stays here as a last guard: the size checks below should make it unreachable.
_READ_ERRORS = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
    LookupError, OverflowError, RecursionError, MemoryError, struct.error,
)


_NUMERIC_KINDS = "biuf"  # bool, int, uint, float: the only dtypes a CIFAR batch holds


class _DataUnpickler(pickle._Unpickler):
    """Unpickler that can only rebuild numpy arrays (the only objects in CIFAR batches).

    The pure-Python unpickler, so that BUILD (``__setstate__``) can be checked too: numpy's
    dtype ``__setstate__`` on a corrupt state mutates the process-wide ``uint8`` dtype
    (seen: SystemError, then "get_clear_loop not set for the DType 'uint8'"). Every array
    it builds must fit in ``budget`` (the file's length in bytes) before anything is allocated.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: io.BytesIO, budget: int) -> None:
        super().__init__(file, encoding="bytes")
        self.budget = budget
        import numpy._core.multiarray as multiarray  # numpy >= 2
        import numpy._core.numeric as numeric

        self._multiarray, self._numeric = multiarray, numeric
        self._allowed = {
            ("numpy.core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy.core.numeric", "_frombuffer"): self._frombuffer,
            ("numpy._core.numeric", "_frombuffer"): self._frombuffer,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): self._dtype,
            ("numpy.core.multiarray", "scalar"): self._scalar,
            ("numpy._core.multiarray", "scalar"): self._scalar,
            # protocol-2 pickles written by Python 3 encode bytes objects through this call
            ("_codecs", "encode"): self._latin1_encode,
        }

    def _fail(self, msg: str) -> pickle.UnpicklingError:
        return pickle.UnpicklingError(msg)

    def _nbytes(self, what: str, shape, dtype: np.dtype) -> int:
        dims = (shape,) if isinstance(shape, int) else shape
        if not isinstance(dims, tuple) or not all(isinstance(n, int) and n >= 0 for n in dims):
            raise self._fail(f"invalid array shape {shape!r}")
        nbytes = math.prod(dims) * dtype.itemsize
        if nbytes > self.budget:
            raise self._fail(
                f"{what} of shape {dims} declares {nbytes} bytes but the whole file has {self.budget}: "
                "the file is corrupt (an array's contents must be stored in the file)"
            )
        return nbytes

    def _dtype(self, *args) -> np.dtype:
        dt = args[0] if len(args) == 1 and isinstance(args[0], np.dtype) else np.dtype(*args)
        if dt.kind not in _NUMERIC_KINDS or dt.fields is not None or dt.subdtype is not None:
            raise self._fail(f"refusing dtype {dt}: a CIFAR-10 batch holds plain numeric arrays")
        return dt

    def _reconstruct(self, subtype, shape, dtype):
        if subtype is not np.ndarray:
            raise self._fail(f"refusing to build an array of type {subtype!r}")
        dt = self._dtype(dtype)
        self._nbytes("an array", shape, dt)  # numpy allocates it, uninitialised, right here
        return self._multiarray._reconstruct(np.ndarray, shape, dt)

    def _frombuffer(self, buf, dtype, shape, order):
        if not isinstance(buf, (bytes, bytearray)):
            raise self._fail(f"array buffer must be bytes, got {type(buf).__name__}")
        self._nbytes("an array", shape, self._dtype(dtype))
        return self._numeric._frombuffer(buf, self._dtype(dtype), shape, order)

    def _scalar(self, dtype, data=None):
        dt = self._dtype(dtype)
        if not isinstance(data, bytes) or len(data) != dt.itemsize:
            raise self._fail(f"corrupt numpy scalar of dtype {dt}")
        return self._multiarray.scalar(dt, data)

    def _latin1_encode(self, text, encoding="utf-8"):
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise self._fail(
                f"corrupt bytes object: _codecs.encode({type(text).__name__}, {encoding!r}); CIFAR batches "
                "encode bytes as latin1"
            )
        return text.encode("latin1")

    def load_build(self) -> None:
        """BUILD only for the two numpy objects, with their states checked first."""
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, np.dtype):
            # the constructor already made this dtype; its state may only set the byte order
            want = inst.__reduce__()[2]
            order = state[1] if isinstance(state, tuple) and len(state) > 1 else None
            if isinstance(order, bytes):  # Python 2 pickles (the official files): str read as bytes
                order = order.decode("latin1")
            if not (isinstance(state, tuple) and len(state) == len(want) and state[2:] == want[2:]
                    and order in ("|", "<", ">", "=")):
                raise self._fail(f"corrupt dtype state {state!r}")
            if order in ("<", ">") and inst.itemsize > 1:
                self.stack[-1] = inst.newbyteorder(order)
            return
        if isinstance(inst, np.ndarray):
            if not (isinstance(state, tuple) and len(state) in (4, 5)):
                raise self._fail(f"corrupt array state of type {type(state).__name__}")
            shape, dtype, fortran, raw = state[-4:]
            if not isinstance(dtype, np.dtype) or not isinstance(fortran, (bool, int)):
                raise self._fail("corrupt array state (dtype / order)")
            dt = self._dtype(dtype)
            nbytes = self._nbytes("an array", shape, dt)
            if not isinstance(raw, (bytes, str)) or len(raw) != nbytes:
                raise self._fail(f"array of shape {shape} needs {nbytes} bytes of data, the file gives "
                                 f"{len(raw) if isinstance(raw, (bytes, str)) else type(raw).__name__}")
            inst.__setstate__(state)
            return
        raise self._fail(f"refusing to set the state of a {type(inst).__name__}")

    dispatch[pickle.BUILD[0]] = load_build

    def find_class(self, module: str, name: str):  # noqa: D102
        found = self._allowed.get((module, name))
        if found is not None:
            return found
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a CIFAR-10 batch contains only numpy arrays, "
            "lists and dicts"
        )


def _unpickle(path: Path) -> dict:
    size = path.stat().st_size
    if size > MAX_BATCH_BYTES:
        raise CIFAR10FormatError(
            f"{path} has {size} bytes; a CIFAR-10 python batch has about 31 MB (limit {MAX_BATCH_BYTES}). "
            f"Point root at the unpacked cifar-10-batches-py folder. {HOW_TO_GET}"
        )
    try:
        # read whole: the unpickler then sees every length field against the bytes that exist
        obj = _DataUnpickler(io.BytesIO(path.read_bytes()), budget=size).load()
    except _READ_ERRORS as e:
        raise CIFAR10FormatError(
            f"{path} is not a readable CIFAR-10 python batch ({type(e).__name__}: {e}). "
            f"The file may be truncated or corrupt; unpack a fresh copy. {HOW_TO_GET}"
        ) from e
    if not isinstance(obj, dict):
        raise CIFAR10FormatError(f"{path} holds a {type(obj).__name__}, expected a dict")
    # the official files have bytes keys (Python 2 str); accept str keys too
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def resolve_cifar10_root(root: str | os.PathLike | None = None) -> Path:
    """The ``cifar-10-batches-py`` folder for ``root`` (that folder or its parent) or the env var.

    Args:
        root: the folder or its parent; None (default) reads ``$GAMEOPT_CIFAR10``.

    Raises:
        CIFAR10NotFoundError: ``root`` is None and the environment variable is not set.
    """
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

    Args:
        root: as in :func:`resolve_cifar10_root`.
        splits: any of ``"train"``, ``"test"`` (default both).

    Raises:
        CIFAR10NotFoundError: files missing (the message names them all, the path tried and how
            to obtain the data), or no location given.
        ValueError: an unknown split.
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
        size = path.stat().st_size
        if data.size > size:  # e.g. zero strides: the copy below would allocate all of it
            raise CIFAR10FormatError(
                f"{path}: 'data' claims {data.shape[0]} images ({data.size} bytes) in a file of {size} bytes"
            )
        raw_labels = batch["labels"]
        sized = isinstance(raw_labels, list) or (isinstance(raw_labels, np.ndarray) and raw_labels.ndim == 1)
        if not sized or len(raw_labels) != data.shape[0]:
            got = f"{len(raw_labels)} entries" if sized else f"a {type(raw_labels).__name__} {np.shape(raw_labels)}"
            raise CIFAR10FormatError(f"{path}: 'labels' must be a list of {data.shape[0]} integers, got {got}")
        try:
            lab = np.asarray(raw_labels)
        except (ValueError, TypeError, OverflowError) as e:
            raise CIFAR10FormatError(f"{path}: 'labels' must be {data.shape[0]} integers ({e})") from e
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

    Args:
        root: where to create ``cifar-10-batches-py/``.
        n_train_per_batch: images in each of the five training batches (default 10).
        n_test: images in the test batch (default 10).
        seed: seed of the random images (default 0).
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
    """uint8 images (any shape) to float32 in [-1, 1]: ``x / 127.5 - 1`` (0 -> -1, 255 -> 1).

    Args:
        images_uint8: uint8 tensor of any shape.

    Raises:
        TypeError: ``images_uint8`` is not uint8.
    """
    if images_uint8.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images_uint8.dtype}")
    return images_uint8.to(torch.float32) / 127.5 - 1.0
