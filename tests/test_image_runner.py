"""The image benchmark runner (benchmarks/common/image_gan.py): every method runs, resumes bit-for-bit, writes its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.common import image_gan
from benchmarks.common.dcgan import dcgan_discriminator, dcgan_generator
from benchmarks.common.image_methods import METHODS

TINY = ["--size", "8", "--width", "8", "--z-dim", "8", "--batch", "8", "--eval-samples", "64",
        "--eval-real", "300", "--no-progress", "--threads", "1"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # one trained classifier for the whole session, outside the user's cache
    monkeypatch.setenv("GAMEOPT_CACHE", str(tmp_path_factory.getbasetemp() / "gameopt-cache"))


def _params(path: Path) -> dict[str, torch.Tensor]:
    ck = torch.load(path / image_gan.CHECKPOINT, weights_only=True)
    return {f"G.{k}": v for k, v in ck["G"].items()} | {f"D.{k}": v for k, v in ck["D"].items()}


@pytest.mark.parametrize("size,extra", [(8, False), (16, False), (32, False), (16, True)])
def test_model_shapes(size, extra):
    G = dcgan_generator(z_dim=8, width=8, size=size, extra_conv=extra)
    D = dcgan_discriminator(width=8, size=size, extra_conv=extra)
    x = G(torch.randn(5, 8))
    assert x.shape == (5, 3, size, size) and x.abs().max() <= 1
    assert D(x).shape == (5, 1)
    with pytest.raises(ValueError, match="image size"):
        dcgan_generator(size=24)


def test_default_dcgan_unchanged():
    # the step-cost benchmarks' 32x32 players keep their architecture (and so their figures)
    G, D = dcgan_generator(), dcgan_discriminator()
    assert sum(p.numel() for p in G.parameters()) == 128 * 256 * 16 + 256 * 16 + 256 * 128 * 16 + 128 + 128 * 64 * 16 + 64 + 64 * 3 * 16 + 3
    assert [type(m).__name__ for m in D] == ["Conv2d", "LeakyReLU"] * 3 + ["Flatten", "Linear"]


@pytest.mark.parametrize("method", METHODS)
def test_two_step_smoke_run(method, tmp_path):
    out = tmp_path / method
    summary = image_gan.main(["--method", method, "--steps", "2", "--eval-every", "1", "--out", str(out), *TINY])
    hist = summary["history"]
    assert [h["step"] for h in hist] == [0, 1, 2]
    final = hist[-1]
    for key in ("modes_covered", "kl", "classifier_score", "frechet_distance", "gen_loss", "disc_loss"):
        assert key in final and final[key] == final[key], key   # present and not NaN
    assert 0 <= final["modes_covered"] <= 64 and 0 <= final["kl"] <= torch.log(torch.tensor(1000.0)) + 1e-6
    assert json.loads((out / "metrics.json").read_text())["history"] == hist
    assert (out / "samples" / "step_000002.png").stat().st_size > 0
    assert (out / "metrics.png").stat().st_size > 0
    # training moved both players
    torch.manual_seed(0)
    G0 = dcgan_generator(z_dim=8, width=8, size=8)
    G1 = _params(out)
    assert any(not torch.equal(v, G1[f"G.{k}"]) for k, v in G0.state_dict().items())


@pytest.mark.parametrize("method", ["consensus", "altga", "primal_dual", "dual_score", "optimistic", "lookahead_eg",
                                    "consensus_lazy", "r3gan"])
def test_resume_equals_uninterrupted(method, tmp_path):
    common = ["--method", method, "--eval-every", "0", "--ckpt-every", "0", *TINY]
    image_gan.main([*common, "--steps", "4", "--out", str(tmp_path / "straight")])
    image_gan.main([*common, "--steps", "2", "--out", str(tmp_path / "resumed")])
    image_gan.main([*common, "--steps", "4", "--out", str(tmp_path / "resumed")])   # picks up at step 2
    a, b = _params(tmp_path / "straight"), _params(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ma = torch.load(tmp_path / "straight" / image_gan.CHECKPOINT, weights_only=True)["method"]
    mb = torch.load(tmp_path / "resumed" / image_gan.CHECKPOINT, weights_only=True)["method"]
    assert repr(ma) == repr(mb)   # optimiser moments, step counts, radius, bandwidth schedule


def test_running_a_finished_run_again_leaves_its_outputs_alone(tmp_path):
    # the drivers re-run finished runs (the runner skips them); a rewrite would stamp another commit
    # and date on results that commit did not make
    out = tmp_path / "run"
    args = ["--method", "simga", "--steps", "2", "--eval-every", "1", "--out", str(out), *TINY]
    first = image_gan.main(args)
    files = [out / "metrics.json", out / image_gan.CHECKPOINT, out / "metrics.png"]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    again = image_gan.main(args)
    assert again["history"] == first["history"]
    for p, seen in before.items():
        assert (p.read_bytes(), p.stat().st_mtime_ns) == seen, f"{p.name} rewritten by a run that took no step"


def test_resume_refuses_other_settings(tmp_path):
    out = str(tmp_path / "run")
    image_gan.main(["--method", "simga", "--steps", "1", "--eval-every", "0", "--out", out, *TINY])
    with pytest.raises(ValueError, match="other settings.*lr"):
        image_gan.main(["--method", "simga", "--steps", "2", "--lr", "0.1", "--eval-every", "0", "--out", out, *TINY])


def test_dual_rejects_batch_norm(tmp_path):
    with pytest.raises(ValueError, match="batch norm"):
        image_gan.main(["--method", "dual_score", "--model", "dcgan_bn", "--steps", "1", "--size", "16",
                        "--out", str(tmp_path / "x"), *TINY[2:]])


def test_cifar10_run_from_a_data_path(tmp_path, monkeypatch):
    from gameopt.images import write_cifar10_like

    root = write_cifar10_like(tmp_path / "cifar", n_train_per_batch=20, n_test=20)
    out = tmp_path / "cifar_run"
    summary = image_gan.main(["--data", "cifar10", "--data-path", str(root), "--method", "consensus",
                              "--steps", "2", "--width", "8", "--z-dim", "8", "--batch", "8",
                              "--eval-samples", "32", "--eval-real", "20", "--eval-every", "0",
                              "--no-progress", "--out", str(out)])
    final = summary["history"][-1]
    assert final["step"] == 2 and "frechet_distance" in final and "classifier_score" in final
    assert (out / "samples" / "step_000002.png").exists()

    monkeypatch.setenv("GAMEOPT_CIFAR10", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="cifar-10"):
        image_gan.main(["--data", "cifar10", "--steps", "1", "--out", str(tmp_path / "y"), *TINY])


def test_table_collects_runs(tmp_path):
    from benchmarks.common import image_table

    folders = []
    for method, seed in [("simga", 0), ("simga", 1), ("consensus", 0)]:
        out = tmp_path / f"{method}_s{seed}"
        image_gan.main(["--method", method, "--seed", str(seed), "--steps", "1", "--eval-every", "0",
                        "--out", str(out), *TINY])
        folders.append(str(out))
    md = image_table.main([*folders, "--out", str(tmp_path / "table")])
    rows = md.splitlines()
    assert sum(r.startswith("| simga | ") for r in rows) == 3          # two seeds, one mean row
    assert any(r.startswith("| consensus (gamma 1) | 0 | 1 |") for r in rows)
    assert "| simga | 1 | 2 |" in md
    assert (tmp_path / "table" / "curves.png").stat().st_size > 0
    summary = json.loads((tmp_path / "table" / "summary.json").read_text())
    assert len(summary["runs"]) == 3 and summary["provenance"]["command"].startswith("python")


_UNPICKLED: list[str] = []


def _record_unpickling() -> None:
    _UNPICKLED.append("code ran")


class _RunsCodeOnLoad:
    def __reduce__(self):
        return (_record_unpickling, ())


def test_resume_never_runs_code_from_a_checkpoint(tmp_path):
    """Resuming loads with weights_only=True: a checkpoint holding a pickled object is refused, the
    error names the file, and the object's code never runs."""
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"format": image_gan.CHECKPOINT_FORMAT, "payload": _RunsCodeOnLoad()}, out / image_gan.CHECKPOINT)
    with pytest.raises(ValueError, match=f"{out / image_gan.CHECKPOINT}.*not a checkpoint this runner can load"):
        image_gan.main(["--method", "simga", "--steps", "1", "--eval-every", "0", "--out", str(out), *TINY])
    assert _UNPICKLED == []


@pytest.mark.parametrize("fmt", [None, "image_gan-checkpoint-v0"])
def test_resume_refuses_a_checkpoint_of_another_version(fmt, tmp_path):
    out = tmp_path / "run"
    args = ["--method", "simga", "--steps", "1", "--eval-every", "0", "--out", str(out), *TINY]
    image_gan.main(args)
    path = out / image_gan.CHECKPOINT
    ck = torch.load(path, weights_only=True)   # the runner saves tensors and plain types only
    if fmt is None:
        del ck["format"]                        # as the runner wrote them before formats were recorded
    else:
        ck["format"] = fmt
    torch.save(ck, path)
    with pytest.raises(ValueError, match=f"{path}.*another run or version"):
        image_gan.main([*args[:3], "2", *args[4:]])


def test_ema_of_the_generator_is_tracked_evaluated_saved_and_resumed(tmp_path):
    # --ema D keeps torch.optim.swa_utils' EMA of G (first update copies G, then ema = D ema + (1 - D) G),
    # evaluates it beside G at every evaluation, saves its final samples, and resumes it bit for bit
    common = ["--method", "altga", "--ema", "0.5", "--eval-every", "1", "--ckpt-every", "1", *TINY]
    out = tmp_path / "run"
    image_gan.main([*common, "--steps", "1", "--out", str(out)])
    g1 = torch.load(out / image_gan.CHECKPOINT, weights_only=True)["G"]
    summary = image_gan.main([*common, "--steps", "2", "--out", str(out)])   # resumes at step 1
    ck = torch.load(out / image_gan.CHECKPOINT, weights_only=True)
    g2, ema = ck["G"], ck["G_ema"]
    for k, v in g2.items():
        if v.is_floating_point():
            torch.testing.assert_close(ema[f"module.{k}"], 0.5 * g1[k] + 0.5 * v, rtol=0, atol=1e-6)
    final = summary["history"][-1]
    for key in ("ema_modes_covered", "ema_kl", "ema_frechet_distance", "modes_covered"):
        assert key in final and final[key] == final[key], key
    assert summary["settings"]["ema"] == 0.5
    assert (out / "final_samples_ema.npz").stat().st_size > 0 and (out / "final_samples.npz").stat().st_size > 0
    assert (out / "samples" / "ema_step_000002.png").stat().st_size > 0
    straight = tmp_path / "straight"
    image_gan.main([*common, "--steps", "2", "--out", str(straight)])
    ema_straight = torch.load(straight / image_gan.CHECKPOINT, weights_only=True)["G_ema"]
    assert ema_straight.keys() == ema.keys()
    for k in ema:
        assert torch.equal(ema[k], ema_straight[k]), k


def test_ema_off_by_default(tmp_path):
    out = tmp_path / "run"
    summary = image_gan.main(["--method", "simga", "--steps", "1", "--eval-every", "0", "--out", str(out), *TINY])
    assert "G_ema" not in torch.load(out / image_gan.CHECKPOINT, weights_only=True)
    assert not any(k.startswith("ema_") for k in summary["history"][-1])
    with pytest.raises(SystemExit):
        image_gan.parse_args(["--ema", "1.5"])


def test_consensus_runs_record_how_far_the_regulariser_outweighs_the_game(tmp_path):
    summary = image_gan.main(["--method", "consensus", "--gamma", "2", "--steps", "1", "--eval-every", "1",
                              "--out", str(tmp_path / "run"), *TINY])
    final = summary["history"][-1]
    for player in ("generator", "discriminator"):
        assert final[f"reg_ratio_{player}"] > 0, final
    simga = image_gan.main(["--method", "simga", "--steps", "1", "--eval-every", "1", "--out", str(tmp_path / "s"), *TINY])
    assert not any(k.startswith("reg_ratio") for k in simga["history"][-1])


def test_reg_ratio_measures_a_finished_runs_checkpoint(tmp_path):
    """reg_ratio.py --runs: the ratio at a trained point (the players of the run's checkpoint, in
    train mode as in training), so a user can see whether the regulariser grew during training."""
    from benchmarks.stacked_mnist import reg_ratio

    run = tmp_path / "run"
    image_gan.main(["--method", "altga", "--steps", "2", "--eval-every", "0", "--out", str(run), *TINY])
    record = reg_ratio.main(["--runs", str(run), "--out", str(tmp_path / "out")])
    (row,) = record["rows"]
    assert row["run"] == str(run) and row["step"] == 2 and row["method"] == "altga"
    for player in ("generator", "discriminator"):
        assert row[f"v_{player}"] > 0 and row[f"ratio_{player}"] == pytest.approx(row[f"reg_{player}"] / row[f"v_{player}"])
    # the measurement uses the checkpoint's weights: fresh players give other gradients
    fresh = reg_ratio.main(["--runs", str(run), "--at-init", "--out", str(tmp_path / "init")])["rows"][0]
    assert fresh["step"] == 0 and fresh["v_discriminator"] != pytest.approx(row["v_discriminator"], rel=1e-6)
    assert json.loads((tmp_path / "out" / "reg_ratio.json").read_text())["rows"][0]["step"] == 2


def test_a_checkpoint_written_before_gen_steps_existed_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["--method", "altga", "--steps", "1", "--eval-every", "0", "--out", str(out), *TINY]
    image_gan.main(args)
    path = out / image_gan.CHECKPOINT
    ck = torch.load(path, weights_only=True)
    del ck["settings"]["gen_steps"]       # as runs checkpointed before --gen-steps wrote them
    torch.save(ck, path)
    summary = image_gan.main([*args[:3], "2", *args[4:]])
    assert summary["history"][-1]["step"] == 2
    with pytest.raises(ValueError, match="other settings.*gen_steps"):
        image_gan.main([*args[:3], "3", *args[4:], "--gen-steps", "2"])
