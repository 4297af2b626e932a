"""The image runner on the MNIST games (stacked MNIST, MNIST) with tiny generated idx data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch


import gameopt
from benchmarks.common import image_gan
from benchmarks.common import image_methods
from benchmarks.common.dcgan import mnist_discriminator, mnist_generator, unrolled_discriminator, unrolled_generator
from benchmarks.common.image_methods import METHODS


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    from gameopt.images import write_idx

    return write_idx(tmp_path_factory.mktemp("mnist"), n_train=200, n_test=60)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GAMEOPT_CACHE", str(tmp_path_factory.getbasetemp() / "gameopt-cache"))


def tiny(root, data="stacked_mnist", model="unrolled_nobn_d"):
    width = "16" if model.startswith("unrolled") else "8"
    return ["--data", data, "--data-path", str(root), "--model", model, "--width", width, "--z-dim", "8",
            "--batch", "8", "--eval-samples", "64", "--eval-real", "100", "--no-progress", "--threads", "1"]


def _params(path: Path) -> dict[str, torch.Tensor]:
    ck = torch.load(path / image_gan.CHECKPOINT, weights_only=True)
    return {f"G.{k}": v for k, v in ck["G"].items()} | {f"D.{k}": v for k, v in ck["D"].items()}


def test_unrolled_players_have_the_papers_layer_sizes():
    G = unrolled_generator()
    convs = [m for m in G if isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.Conv2d))]
    assert G[0].in_features == 256 and G[0].out_features == 64 * 16
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (64, 32, (3, 3)), (32, 16, (3, 3)), (16, 8, (3, 3)), (8, 3, (3, 3))]
    x = G(torch.randn(4, 256))
    assert x.shape == (4, 3, 28, 28) and x.abs().max() <= 1
    for scale, widths in ((0.5, [4, 8, 16]), (0.25, [2, 4, 8])):
        D = unrolled_discriminator(d_scale=scale)
        assert [m.out_channels for m in D if isinstance(m, torch.nn.Conv2d)] == widths
        assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in D) == 3
        assert D(x).shape == (4, 1)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in unrolled_discriminator(batch_norm=False))


def test_mnist_players_have_the_appendix_sizes():
    G, D = mnist_generator(), mnist_discriminator()
    lin = [m for m in G if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(64, 1024), (1024, 7 * 7 * 128)]
    assert [m.out_channels for m in G if isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.Conv2d))] == [64, 32, 1]
    assert [m.out_channels for m in D if isinstance(m, torch.nn.Conv2d)] == [64, 32]
    assert [m.out_features for m in D if isinstance(m, torch.nn.Linear)] == [1024, 1]
    x = G(torch.randn(3, 64))
    assert x.shape == (3, 1, 28, 28) and D(x).shape == (3, 1)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_on_stacked_mnist_and_saves_its_final_samples(method, mnist_root, tmp_path):
    out = tmp_path / method
    extra = ["--pd-features", "classifier"] if method == "primal_dual" else []
    summary = image_gan.main(["--method", method, "--steps", "2", "--eval-every", "0", "--out", str(out),
                              *extra, *tiny(mnist_root)])
    final = summary["history"][-1]
    assert [h["step"] for h in summary["history"]] == [2]
    for key in ("modes_covered", "kl", "classifier_score", "frechet_distance", "gen_loss", "disc_loss"):
        assert final[key] == final[key], key
    with np.load(out / "final_samples.npz") as z:
        images = z["images"]
    assert images.shape == (64, 3, 28, 28) and images.dtype == np.uint8
    info = json.loads((out / "final_samples.json").read_text())
    from gameopt.images import StackedMNISTEvaluator, mnist_classifier, modes_covered

    ev = StackedMNISTEvaluator(mnist_classifier(mnist_root), root=mnist_root, n_real=50)
    assert info["modes_covered"] == modes_covered(ev.modes(torch.from_numpy(images).float() / 127.5 - 1), 1000)
    assert info["n_samples"] == 64 and info["step"] == 2
    if method == "primal_dual":
        s = summary["settings"]
        assert s["pd_features"] == "classifier" and s["bandwidth"] > 0  # median heuristic, recorded


@pytest.mark.parametrize("method,extra", [("primal_dual", ["--pd-features", "classifier"]),
                                          ("primal_dual", ["--pd-features", "projection"]),
                                          ("consensus", [])])
def test_resume_equals_uninterrupted_on_stacked_mnist(method, extra, mnist_root, tmp_path):
    common = ["--method", method, "--eval-every", "0", "--ckpt-every", "0", *extra, *tiny(mnist_root)]
    image_gan.main([*common, "--steps", "4", "--out", str(tmp_path / "straight")])
    image_gan.main([*common, "--steps", "2", "--out", str(tmp_path / "resumed")])
    image_gan.main([*common, "--steps", "4", "--out", str(tmp_path / "resumed")])
    a, b = _params(tmp_path / "straight"), _params(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["altga", "primal_dual"])
def test_plain_mnist_run(method, mnist_root, tmp_path):
    extra = ["--pd-features", "classifier"] if method == "primal_dual" else []
    summary = image_gan.main(["--method", method, "--steps", "2", "--eval-every", "0", "--out", str(tmp_path / "m"),
                              *extra, *tiny(mnist_root, "mnist", "mnist_dcgan")])
    final = summary["history"][-1]
    assert 1 <= final["classifier_score"] <= 10 and 0 <= final["modes_covered"] <= 10
    assert final["frechet_distance"] >= 0
    assert (tmp_path / "m" / "samples" / "step_000002.png").exists()


def test_bad_model_and_data_combinations(mnist_root, tmp_path):
    with pytest.raises(ValueError, match="batch norm"):  # the faithful D has batch norm
        image_gan.main(["--method", "dual_score", "--steps", "1", "--out", str(tmp_path / "a"),
                        *tiny(mnist_root, model="unrolled")])
    with pytest.raises(ValueError, match="28x28 model"):
        image_gan.main(["--model", "unrolled", "--steps", "1", "--size", "16", "--out", str(tmp_path / "b")])
    with pytest.raises(ValueError, match="power-of-two"):
        image_gan.main(["--steps", "1", "--out", str(tmp_path / "c"), *tiny(mnist_root, model="dcgan")])
    with pytest.raises(ValueError, match="needs an MNIST game"):
        image_gan.main(["--method", "primal_dual", "--pd-features", "classifier", "--steps", "1", "--size", "8",
                        "--out", str(tmp_path / "d")])


def test_a_new_method_is_one_registration(mnist_root, tmp_path):
    """The shape i14's optimisers will take: one line, then the runner, checkpoints and table work."""
    image_methods.register("simga_sgd_test", image_methods.game_optimizer(
        lambda base, gp, dp, kw, args: gameopt.SimultaneousOptimizer(base, gp, dp, **kw)), optim="sgd", lr=0.05)
    try:
        summary = image_gan.main(["--method", "simga_sgd_test", "--steps", "2", "--eval-every", "0",
                                  "--out", str(tmp_path / "n"), *tiny(mnist_root)])
        assert summary["history"][-1]["step"] == 2
        ck = torch.load(tmp_path / "n" / image_gan.CHECKPOINT, weights_only=True)
        assert ck["method"]["opt"]["param_groups"][0]["lr"] == 0.05   # the registered default
        with pytest.raises(ValueError, match="already registered"):
            image_methods.register("simga", image_methods.METHODS["simga"])
    finally:
        del image_methods.METHODS["simga_sgd_test"], image_methods.DEFAULTS["simga_sgd_test"]


def test_step_cost_script(mnist_root, tmp_path):
    from benchmarks.common import image_step_cost

    res = image_step_cost.main(["--methods", "simga,consensus", "--steps", "1", "--rounds", "1", "--warmup", "1",
                                "--reference-steps", "1000", "--out", str(tmp_path), *tiny(mnist_root)])
    rows = res["methods"]
    assert rows["consensus"]["ratio_to_reference"] == 1.0 and rows["consensus"]["equal_time_steps"] == 1000
    assert rows["simga"]["ms_per_step"] > 0
    assert json.loads((tmp_path / "step_cost.json").read_text())["methods"] == rows


def test_step_cost_script_times_a_variant_beside_its_method(mnist_root, tmp_path):
    # AltGA with two G steps per D step, timed in the same rounds as plain AltGA
    from benchmarks.common import image_step_cost

    res = image_step_cost.main(["--methods", "altga", "--variant", "altga_g2=altga --gen-steps 2", "--reference",
                                "altga", "--steps", "1", "--rounds", "1", "--warmup", "1", "--out", str(tmp_path),
                                *tiny(mnist_root)])
    assert list(res["methods"]) == ["altga", "altga_g2"]
    assert res["variants"] == {"altga_g2": ["altga", "--gen-steps", "2"]}
    with pytest.raises(SystemExit):   # the variant's options go through the runner's own checks
        image_step_cost.main(["--methods", "altga", "--variant", "c2=consensus --gen-steps 2", "--steps", "1",
                              "--rounds", "1", "--warmup", "1", "--out", str(tmp_path), *tiny(mnist_root)])
    with pytest.raises(SystemExit):
        image_step_cost.main(["--methods", "altga", "--variant", "altga --gen-steps 2", "--out", str(tmp_path),
                              *tiny(mnist_root)])


def test_table_copies_seed0_samples_and_appends_published_numbers(mnist_root, tmp_path):
    from benchmarks.common import image_table

    folders = []
    for method, seed in [("simga", 0), ("simga", 1)]:
        out = tmp_path / f"{method}_s{seed}"
        image_gan.main(["--method", method, "--seed", str(seed), "--steps", "1", "--eval-every", "0",
                        "--out", str(out), *tiny(mnist_root)])
        folders.append(str(out))
    table_dir = tmp_path / "table"
    table_dir.mkdir()
    ref = {"what": "test", "modes_covered": 999, "kl": 0.01, "classifier_score": 900.0, "frechet_distance": 1.0,
           "classifier_test_accuracy": 0.99}
    (table_dir / "real_reference.json").write_text(json.dumps(ref))
    md = image_table.main([*folders, "--out", str(table_dir), "--published", "stacked_mnist"])
    assert "| real data | 999 | 0.01 | 900.0 | 1 |" in md
    assert "| primal-dual (Chen et al. 2018) | 827 | 155.6 |" in md
    assert "| Unrolled GAN, 10 unrolling steps (Metz et al. 2017) | 817 | n/a |" in md
    assert "unrolled_nobn_d" in md
    samples = table_dir / "samples"
    assert (samples / "simga_s0.npz").exists() and (samples / "simga_s0.json").exists()
    assert not (samples / "simga_s1.npz").exists()   # seed 0 only
    assert (table_dir / "table.md").read_text().strip() == md.strip()


@pytest.mark.parametrize("ema", [False, True])
def test_export_samples_reproduces_the_final_samples(mnist_root, tmp_path, ema):
    # export_samples.py rebuilds G (or its EMA, --ema) from a checkpoint and draws the runner's own
    # evaluation noise: its file equals the runner's final_samples{_ema}.npz
    from benchmarks.stacked_mnist import export_samples

    out = tmp_path / "run"
    image_gan.main([*tiny(mnist_root, model="dcgan28"), "--preset", "dcgan28", "--width", "8", "--z-dim", "8",
                    "--batch", "8", "--method", "altga", "--steps", "3", "--ema", "0.9", "--eval-every", "0",
                    "--save-samples", "64", "--out", str(out)])
    npz = tmp_path / "exported.npz"
    export_samples.main([str(out), str(npz), "-n", "64", *(["--ema"] if ema else [])])
    got = np.load(npz)["images"]
    want = np.load(out / ("final_samples_ema.npz" if ema else "final_samples.npz"))["images"]
    assert got.shape == want.shape == (64, 3, 28, 28) and got.dtype == np.uint8
    assert np.array_equal(got, want)
