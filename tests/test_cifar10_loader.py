"""load_cifar10 against corrupt and crafted batch files (issue 11): every defect is a CIFAR10FormatError,
raised before anything larger than the file is allocated."""

from __future__ import annotations

import pickle
import pickletools
import random
import resource
import struct

import numpy as np
import pytest

from gameopt.images import CIFAR10FormatError, load_cifar10, write_cifar10_like


class _Uninitialised:
    """Pickles as numpy's array constructor without the contents: numpy allocates shape x dtype."""

    def __init__(self, shape, code):
        self.shape, self.code = shape, code

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return (_reconstruct, (np.ndarray, self.shape, self.code))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture()
def folder(tmp_path):
    return write_cifar10_like(tmp_path, n_train_per_batch=4, n_test=6, seed=1)


def test_tiny_file_declaring_200000_images_is_refused_without_allocating(folder):
    payload = {b"data": _Uninitialised((200000, 3072), b"B"), b"labels": _Uninitialised((200000,), b"q")}
    raw = pickle.dumps(payload, protocol=2)
    assert len(raw) < 300
    (folder / "test_batch").write_bytes(raw)
    before = _rss_mb()
    with pytest.raises(CIFAR10FormatError, match=r"declares 614400000 bytes but the whole file has \d+"):
        load_cifar10(folder, "test")
    assert _rss_mb() - before < 100  # was ~3 GB


@pytest.mark.parametrize(
    "payload,match",
    [
        # zero-stride arrays pickled by value are refused by the contents check after unpickling
        ({b"data": np.zeros((3, 3072), np.uint8), b"labels": _Uninitialised((10**9,), b"q")}, "declares"),
        ({b"data": _Uninitialised((0,), "V100000000"), b"labels": []}, "refusing dtype"),
        ({b"data": np.zeros((3, 3072), np.uint8), b"labels": np.int64(3)}, "'labels' must be a list of 3"),
        ({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 10**30]}, "labels"),
    ],
)
def test_crafted_arrays_and_labels_are_format_errors(folder, payload, match):
    (folder / "test_batch").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CIFAR10FormatError, match=match):
        load_cifar10(folder, "test")


def _corrupt(raw: bytes, find: bytes, replace: bytes) -> bytes:
    i = raw.index(find)
    return raw[:i] + replace + raw[i + len(find):]


def test_corrupt_length_and_encoding_fields_are_format_errors(folder):
    raw = (folder / "test_batch").read_bytes()
    cases = {
        # BINUNICODE 'latin1' with its 4-byte length set to 2^31 - 1 and 2^32 - 1
        "length 2^31": _corrupt(raw, b"X\x06\x00\x00\x00latin1", b"X" + struct.pack("<I", 2**31 - 1) + b"latin1"),
        "length 2^32": _corrupt(raw, b"X\x06\x00\x00\x00latin1", b"X" + struct.pack("<I", 2**32 - 1) + b"latin1"),
        "unknown encoding": raw.replace(b"latin1", b"lXtin1"),  # was LookupError
        "other codec": raw.replace(b"latin1", b"utf_32"),
    }
    for name, data in cases.items():
        (folder / "test_batch").write_bytes(data)
        with pytest.raises(CIFAR10FormatError, match="test_batch"):
            load_cifar10(folder, "test")


def test_oversized_file_is_refused_before_reading(folder):
    from gameopt.images.cifar10 import MAX_BATCH_BYTES

    with open(folder / "test_batch", "wb") as f:
        f.truncate(MAX_BATCH_BYTES + 1)  # sparse: no disk used
    with pytest.raises(CIFAR10FormatError, match="31 MB"):
        load_cifar10(folder, "test")


@pytest.mark.parametrize("seed", range(4))
def test_fuzzed_batches_load_or_raise_the_format_error(folder, seed):
    """Seeded truncations and bit flips of a tiny batch: a valid result or CIFAR10FormatError, nothing else.

    Flips hit the pickle's structure (opcodes, keys, lengths, shapes, labels) 80% of the time.
    Before the fix this found LookupError (flipped encoding name), MemoryError (flipped length
    field) and IndexError (flipped shape).
    """
    raw = (folder / "test_batch").read_bytes()
    # the pixels are one long string argument; everything else is structure (opcodes, keys, shapes, labels)
    ops = list(pickletools.genops(raw))
    k = max(range(len(ops)), key=lambda i: len(ops[i][1]) if isinstance(ops[i][1], (str, bytes)) else 0)
    structure = list(range(ops[k][2] + 5)) + list(range(ops[k + 1][2], len(raw)))
    rng = random.Random(seed)
    before = _rss_mb()
    outcomes = {"loaded": 0, "format error": 0}
    for _ in range(400):
        data = bytearray(raw)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 3)):
                i = rng.choice(structure) if rng.random() < 0.8 else rng.randrange(len(data))
                data[i] ^= 1 << rng.randrange(8)
        (folder / "test_batch").write_bytes(bytes(data))
        try:
            x, y = load_cifar10(folder, "test")
        except CIFAR10FormatError:
            outcomes["format error"] += 1
            continue
        outcomes["loaded"] += 1
        assert x.shape == (6, 3, 32, 32) and y.shape == (6,) and int(y.min()) >= 0 and int(y.max()) <= 9
    assert outcomes["loaded"] > 0 and outcomes["format error"] > 0
    assert _rss_mb() - before < 200


def _py2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch as Python 2's cPickle (protocol 2) wrote the official files: str arguments are
    BINSTRINGs (read back as bytes), numpy.core paths, a dtype state with b'|'."""

    def s(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b

    n = data.shape[0]
    dtype = (b"cnumpy\ndtype\n" + s(b"u1") + b"K\x00K\x01\x87R"
             + b"(K\x03" + s(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    arr = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + s(b"b") + b"\x87R"
           + b"(K\x01M" + struct.pack("<H", n) + b"M" + struct.pack("<H", 3072) + b"\x86" + dtype + b"\x89"
           + s(data.tobytes()) + b"tb")
    labs = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return (b"\x80\x02}(" + s(b"data") + arr + s(b"labels") + labs
            + s(b"batch_label") + s(b"testing batch 1 of 1") + b"u.")


def test_python2_format_of_the_official_files_still_loads(folder):
    data = np.random.default_rng(0).integers(0, 256, (5, 3072), dtype=np.uint8)
    (folder / "test_batch").write_bytes(_py2_batch(data, [3, 1, 4, 1, 5]))
    x, y = load_cifar10(folder, "test")
    assert y.tolist() == [3, 1, 4, 1, 5] and np.array_equal(x.reshape(5, -1).numpy(), data)
    # and its corrupt variants are format errors: a dtype state that would reshape the dtype
    subarray = b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87RK\x02\x85\x86"  # (dtype('u1'), (2,))
    bad = _py2_batch(data, [3, 1, 4, 1, 5]).replace(b"U\x01|NNN", b"U\x01|" + subarray + b"NN")
    (folder / "test_batch").write_bytes(bad)
    with pytest.raises(CIFAR10FormatError, match="dtype state"):
        load_cifar10(folder, "test")
