"""The Dualing-GAN robustness study's pieces (benchmarks/): Table 1 draws, intervals, the two
players of the 5-Gaussians toy, success criteria, the resumable runner, and a smoke run of the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks.dual_five_gaussians import dual_five_gaussians as fg
from benchmarks.common.binomial import clopper_pearson_interval, mcnemar_exact, wilson_interval
from benchmarks.common.setting_runner import load_runs, parse_shard, prepare_run_dir, run_settings
from benchmarks.common.table1_settings import draw_settings

from gameopt.solvers import solve_linear_dual


# ----------------------------------------------------------------------------- Table 1 draws
def test_draws_follow_table1_and_are_reproducible():
    s = draw_settings(200, seed=3)
    assert s == draw_settings(200, seed=3) and s != draw_settings(200, seed=4)
    assert all(20 <= x["batch"] <= 200 and 400 <= x["iters"] <= 2000 for x in s)
    assert all(math.exp(-10) <= x["g_lr"] <= 1 and math.exp(-10) <= x["col6"] <= 1 for x in s)
    assert all(math.exp(-6) <= x["d_lr"] <= 1 and 0.1 <= x["g_mom"] <= 0.9 for x in s)
    assert {x["arch"] for x in s} == {"fc-small", "fc-large"}
    assert len({x["seed"] for x in s}) == 200
    # exp(-U(0, 10)): log lr spread over the whole range, not on integers
    logs = [-math.log(x["g_lr"]) for x in s]
    assert min(logs) < 1 and max(logs) > 9 and any(abs(v - round(v)) > 0.1 for v in logs)
    ints = [-math.log(x["g_lr"]) for x in draw_settings(50, lr_reading="randint")]
    assert all(abs(v - round(v)) < 1e-9 for v in ints)


def test_mnist_draws_share_the_ranges():
    m = draw_settings(100, seed=0, dataset="mnist")
    assert all(x["iters"] == 20000 for x in m)
    assert {x["arch"] for x in m} == {"fc-small", "fc-large", "dcgan", "dcgan-no-bn"}
    with pytest.raises(ValueError, match="dataset"):
        draw_settings(1, dataset="cifar")
    with pytest.raises(ValueError, match="lr_reading"):
        draw_settings(1, lr_reading="log")


# ----------------------------------------------------------------------------- intervals
def test_binomial_intervals_match_closed_forms():
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 10)[0] == 0 and wilson_interval(0, 10)[1] == pytest.approx(z2 / (10 + z2))
    assert clopper_pearson_interval(0, 10)[1] == pytest.approx(1 - 0.025**0.1)
    assert clopper_pearson_interval(10, 10)[0] == pytest.approx(0.025**0.1)
    lo, hi = wilson_interval(49, 100)
    assert lo < 0.49 < hi and hi - lo == pytest.approx(0.19, abs=0.01)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert mcnemar_exact(5, 0) == pytest.approx(2 * 0.5**5) and mcnemar_exact(0, 0) == 1.0
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


# ----------------------------------------------------------------------------- the toy's pieces
def test_gaussian_kernel_is_the_standard_convention():
    phi = fg.make_features("gaussian", bias=False)
    a = phi.anchors[0]
    x = (a + torch.tensor([0.3, 0.0])).unsqueeze(0)
    assert phi(x)[0, 0].item() == pytest.approx(math.exp(-0.09 / (2 * 0.2**2)), rel=1e-5)
    old = fg.make_features("divisor", bias=True)(x)
    assert old.shape[-1] == 101 and old[0, 0].item() == pytest.approx(math.exp(-0.09 / 0.2), rel=1e-5)


def test_he_init_reaches_the_data_and_torch_default_does_not():
    torch.manual_seed(0)
    z = torch.randn(2000, fg.Z_DIM)
    with torch.no_grad():
        spread = {init: fg.make_generator("fc-large", init)(z).std().item() for init in fg.INITS}
    assert spread["torch"] < 0.1 < 0.3 < spread["he"]


def test_standard_gan_discriminator_has_its_own_optimiser_and_momentum():
    setting = draw_settings(1)[0]
    player = fg.make_player("gan", fg.ToyOptions(), setting)
    group = player.opt.param_groups[0]
    assert group["betas"][0] == 0.5 != setting["g_mom"] and group["lr"] == setting["d_lr"]
    assert group["params"] == [player.w]
    legacy = fg.make_player("gan", fg.ToyOptions(d_beta1="gen"), setting)
    assert legacy.opt.param_groups[0]["betas"][0] == setting["g_mom"]
    assert fg.weight_decay(fg.ToyOptions(C="table"), setting) == setting["col6"]


def test_minimax_gan_at_the_dual_optimum_gives_the_dual_generator_gradient():
    # with w = w*, the standard GAN's minimax generator loss and the dual's -g have the same
    # gradient in the fake samples (envelope theorem): both methods optimise one objective
    torch.manual_seed(1)
    real = fg.sample_real(40, torch.Generator().manual_seed(2))
    fake = (0.8 * torch.randn(40, 2)).requires_grad_()
    setting = {**draw_settings(1)[0], "d_lr": 0.1}
    dual = fg.make_player("dual", fg.ToyOptions(), setting)
    gan = fg.make_player("gan", fg.ToyOptions(), setting)
    dual.step(real, fake.detach())
    phi = fg.make_features("gaussian", False)
    with torch.no_grad():
        gan.w.copy_(solve_linear_dual(phi(real).double(), phi(fake).double(), 1e-4).w.float())
    (g_dual,) = torch.autograd.grad(dual.gen_loss(real, fake), fake)
    (g_gan,) = torch.autograd.grad(gan.gen_loss(real, fake), fake)
    assert g_dual.abs().max() > 0
    torch.testing.assert_close(g_gan, g_dual, rtol=1e-3, atol=1e-6)


def _result(counts, in_modes, n=2000):
    return {"mode_counts": counts, "in_modes": in_modes, "eval_samples": n}


def test_criteria_strictness():
    crit = fg.criteria()
    names = list(crit)
    assert names[0] == "every mode >= 2%" and names[-1] == "every mode >= 10%, half on modes"
    ring = _result([45, 50, 41, 60, 44], 0.12)          # touches every mode, mostly elsewhere
    good = _result([400, 390, 410, 380, 400], 0.99)
    lopsided = _result([1500, 100, 100, 100, 100], 0.95)
    assert crit["every mode >= 2%"](ring) and not crit["every mode >= 2%, half on modes"](ring)
    assert all(f(good) for f in crit.values())
    assert crit["every mode >= 5%"](lopsided) and not crit["every mode >= 10%"](lopsided)
    assert not crit["every mode >= 2%"](_result([0, 400, 400, 400, 400], 0.8))


def test_far_fraction_measures_hiding_samples():
    c = fg.centres()
    samples = torch.cat([c[:2] + 0.5, torch.tensor([[0.0, 0.0], [10.0, 10.0]])]).tolist()
    assert fg.far_fraction({"samples": samples}) == pytest.approx(0.5)
    assert fg.far_fraction({"samples": samples, "status": "diverged at iteration 3"}) == 1.0


def test_mode_statistics_counts_within_three_std():
    c = fg.centres()
    x = torch.cat([c[0] + torch.tensor([[0.29, 0.0], [0.31, 0.0]]), torch.zeros(1, 2)])
    st = fg.mode_statistics(x)
    assert st["mode_counts"] == [1, 0, 0, 0, 0] and st["in_modes"] == pytest.approx(1 / 3)


def test_summarise_counts_only_paired_settings():
    from benchmarks.common.robustness_report import summarise

    def run(i, counts):
        return {"setting": {"index": i}, **_result(counts, 0.9)}

    good, bad = [400] * 5, [0, 400, 400, 400, 400]
    runs = {"dual": {i: run(i, good if i < 6 else bad) for i in range(10)},
            "gan": {i: run(i, good if i < 2 else bad) for i in range(9)}}   # setting 9: dual only, unpaired
    s = summarise(runs, fg.criteria(), fg.scores())
    e = s["criteria"]["every mode >= 2%"]
    assert s["settings"] == 9 and e["dual"]["k"] == 6 and e["gan"]["k"] == 2
    assert e["paired"] == {"only_dual": 4, "only_gan": 0, "both": 2, "neither": 3, "mcnemar_p": mcnemar_exact(4, 0)}
    sc = s["scores"]["modes covered (>= 2%)"]
    assert sc["dual"]["mean"] == pytest.approx((6 * 5 + 3 * 4) / 9) and sc["paired"]["dual_higher"] == 4


# ----------------------------------------------------------------------------- runner
def test_runner_is_resumable_and_sharded(tmp_path):
    settings = draw_settings(5)
    calls = []

    def train_one(s):
        calls.append(s["index"])
        return {"value": s["index"] * 2}

    run_dir = prepare_run_dir(tmp_path / "r", {"a": 1})
    jobs = {"m": (run_dir, train_one)}
    assert run_settings(settings, jobs, shard="1/2", log=lambda _: None) == 2
    assert calls == [1, 3]
    assert run_settings(settings, jobs, shard="1/2", log=lambda _: None) == 0
    run_settings(settings, jobs, log=lambda _: None)
    assert calls == [1, 3, 0, 2, 4]
    runs = load_runs(run_dir)
    assert sorted(runs) == list(range(5)) and runs[3]["value"] == 6 and runs[3]["setting"] == settings[3]
    with pytest.raises(ValueError, match="other options"):
        prepare_run_dir(tmp_path / "r", {"a": 2})
    for bad in ("2/2", "x", "1/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_options_are_validated():
    with pytest.raises(ValueError, match="kernel"):
        fg.ToyOptions(kernel="laplace")
    with pytest.raises(ValueError, match="C must"):
        fg.ToyOptions(C=-1.0)
    assert fg.ToyOptions().slug("dual") == fg.ToyOptions(gan_loss="nonsaturating").slug("dual")
    assert fg.ToyOptions().slug("gan") != fg.ToyOptions(gan_loss="nonsaturating").slug("gan")


# ----------------------------------------------------------------------------- CLI smoke run
def test_five_gaussians_cli_smoke(tmp_path):
    common = ["--settings", "2", "--iter-scale", "0.004", "--eval-samples", "200", "--out", str(tmp_path / "runs")]
    fg.main(["run", *common])
    base = tmp_path / "runs" / "seed0_uniform_x0.004"
    files = sorted(base.glob("*/setting_*.json"))
    assert len(files) == 4
    stamp = [f.stat().st_mtime_ns for f in files]
    fg.main(["run", *common])  # resumes: nothing left to run
    assert [f.stat().st_mtime_ns for f in files] == stamp
    r = json.loads(files[0].read_text())
    assert r["status"] == "ok" and len(r["mode_counts"]) == 5 and r["iters_run"] >= 1 and len(r["samples"]) == 200
    res = tmp_path / "res"
    fg.main(["report", *common, "--results", str(res)])
    out = json.loads((res / "robustness_main.json").read_text())
    assert out["summary"]["settings"] == 2 and len(out["runs"]["gan"]) == 2
    assert set(out["summary"]["scores"]["modes covered (>= 2%)"]) == {"dual", "gan", "paired"}
    assert "samples" not in out["runs"]["dual"][0]
    for png in ("outcomes", "samples", "modes"):
        assert (res / f"robustness_main_{png}.png").stat().st_size > 1000
    assert "every mode >= 10%, half on modes" in (res / "robustness_summary.md").read_text()
    fg.main(["full-batch", "--full-batch-iters", "3", "--results", str(res)])
    fb = json.loads((res / "full_batch.json").read_text())
    assert fb["iters"] == 3 and fb["max_gap"] < 1e-8


# ----------------------------------------------------------------------------- MNIST study
def test_mnist_features_and_generators():
    from benchmarks.dual_mnist_robustness import dual_mnist_robustness as dm

    from gameopt.images import LeNet5

    phi = dm.LeNetAllLayers(LeNet5())
    assert phi.dim == 6 * 14 * 14 + 16 * 5 * 5 + 120 + 84
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    phi(x).sum().backward()
    assert x.grad.abs().sum() > 0 and all(p.grad is None for p in phi.parameters())
    for arch in ("fc-small", "fc-large", "dcgan", "dcgan-no-bn"):
        y = dm.make_generator(arch)(torch.randn(4, dm.Z_DIM))
        assert y.shape == (4, 1, 28, 28) and 0 <= y.min() and y.max() <= 1
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in dm.make_generator("dcgan-no-bn"))


def test_mnist_cli_smoke(tmp_path, monkeypatch):
    from benchmarks.dual_mnist_robustness import dual_mnist_robustness as dm

    from gameopt.images.mnist import write_idx

    monkeypatch.setenv("GAMEOPT_CACHE", str(tmp_path / "cache"))
    folder = write_idx(tmp_path / "mnist")
    common = ["--mnist", str(folder), "--settings", "2", "--iter-scale", "0.0002", "--eval-samples", "100",
              "--out", str(tmp_path / "runs")]
    dm.main(["run", *common])
    files = sorted((tmp_path / "runs").glob("*/*/setting_*.json"))
    assert len(files) == 4
    r = json.loads(files[0].read_text())
    assert r["iters_run"] == 4 and 1 <= r["inception_score"] <= 10 and sum(r["digit_histogram"]) == 100
    summary = dm.main(["report", *common, "--results", str(tmp_path / "res")])
    assert summary["settings"] == 2 and "wilcoxon_p" in summary["paired"]
    for png in ("scores", "outcomes", "samples"):
        assert (tmp_path / "res" / f"robustness_{png}.png").stat().st_size > 1000
