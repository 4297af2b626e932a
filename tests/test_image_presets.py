"""The image runner's published configurations (issue 19): per-player learning rates, DCGAN
initialisation, the PacGAN preset and the standard-size 28x28 DCGAN players."""

from __future__ import annotations

import pytest
import torch

from benchmarks.common import image_gan
from benchmarks.common.image_methods import build_method


def _build(argv: list[str]):
    args = image_gan.parse_args(argv)
    torch.manual_seed(0)
    G, D = image_gan.build_models(args, (3, 28, 28))
    return args, G, D, build_method(G, D, args)


def _player_lrs(method) -> dict[str, set[float]]:
    opt = method.opt
    return {name: {g["lr"] for g in opt.param_groups if g.get("player") == name} for name in ("generator", "discriminator")}


@pytest.mark.parametrize("method", ["altga", "simga", "consensus", "optimistic"])
def test_per_player_learning_rates(method):
    # PacGAN trains D at 2e-4 and G at 1e-4; one --lr for both handicapped the baselines
    _, G, D, m = _build(["--data", "stacked_mnist", "--model", "unrolled", "--method", method,
                         "--lr-g", "1e-4", "--lr-d", "2e-4"])
    lrs = _player_lrs(m)
    assert lrs == {"generator": {1e-4}, "discriminator": {2e-4}}


def test_lr_defaults_to_both_players():
    _, _, _, m = _build(["--data", "stacked_mnist", "--model", "unrolled", "--method", "altga", "--lr", "3e-4"])
    assert _player_lrs(m) == {"generator": {3e-4}, "discriminator": {3e-4}}


def test_dcgan_initialisation():
    # DCGAN (Radford et al.) and PacGAN's TensorFlow code draw every weight from N(0, 0.02)
    _, G, D, _ = _build(["--data", "stacked_mnist", "--model", "unrolled", "--init", "dcgan"])
    for net in (G, D):
        for mod in net.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)) and mod.weight.numel() > 500:
                assert abs(mod.weight.std().item() - 0.02) < 0.004
                assert torch.count_nonzero(mod.bias) == 0
            if isinstance(mod, torch.nn.BatchNorm2d):
                assert abs(mod.weight.mean().item() - 1) < 0.02


def test_pacgan_preset():
    args, G, D, m = _build(["--data", "stacked_mnist", "--preset", "pacgan", "--method", "altga"])
    assert (args.model, args.d_scale, args.batch, args.z_dim, args.init) == ("unrolled", 0.5, 128, 256, "dcgan")
    assert (args.beta1, args.beta2) == (0.5, 0.99)
    assert _player_lrs(m) == {"generator": {1e-4}, "discriminator": {2e-4}}
    assert any(isinstance(mod, torch.nn.BatchNorm2d) for mod in D.modules())   # BN in D, as published
    assert sum(p.numel() for p in D.parameters()) < 2000


def test_preset_keeps_explicit_options():
    args = image_gan.parse_args(["--data", "stacked_mnist", "--preset", "pacgan", "--batch", "64", "--d-scale", "0.25"])
    assert (args.batch, args.d_scale, args.lr_d) == (64, 0.25, 2e-4)


def test_standard_dcgan28_players():
    # the standard-size DCGAN of docs (G about 780k parameters, D about 141k), 28x28 stacked MNIST
    args, G, D, _ = _build(["--data", "stacked_mnist", "--model", "dcgan28"])
    x = G(torch.randn(4, args.z_dim))
    assert x.shape == (4, 3, 28, 28) and x.abs().max() <= 1
    assert D(x).shape == (4, 1)
    assert 700_000 < sum(p.numel() for p in G.parameters()) < 900_000
    assert 100_000 < sum(p.numel() for p in D.parameters()) < 200_000


@pytest.mark.parametrize("d_batch,expected", [("separate", [4, 4]), ("joint", [8])])
def test_discriminator_batch_layout(d_batch, expected):
    # with batch norm in D, "separate" normalises the fake batch by its own statistics (DCGAN's
    # practice): a collapsed fake batch then looks the same to D whatever it shows; "joint" passes
    # real and fake through D as one batch, so both share the batch statistics
    argv = ["--data", "stacked_mnist", "--preset", "dcgan28", "--method", "simga", "--width", "8", "--batch", "4"]
    if d_batch != "separate":
        argv += ["--d-batch", d_batch]
    args, G, D, m = _build(argv)
    sizes: list[int] = []
    D.register_forward_hook(lambda mod, inp, out: sizes.append(inp[0].shape[0]))
    real, z = torch.rand(4, 3, 28, 28) * 2 - 1, torch.randn(4, args.z_dim)
    losses = m.step(real, z)
    assert sizes == expected
    assert all(torch.isfinite(v) for v in losses.values())
    if d_batch == "joint":   # same losses as D applied to the concatenated batch by hand
        torch.manual_seed(0)
        args2, G2, D2, _ = _build(argv)
        with torch.no_grad():
            d = D2(torch.cat([G2(z), real])).flatten()
        from benchmarks.common.image_methods import gan_losses

        gen_loss, disc_loss = gan_losses(d[4:], d[:4])
        torch.testing.assert_close(losses["gen_loss"], gen_loss)
        torch.testing.assert_close(losses["disc_loss"], disc_loss)


def test_dual_methods_refuse_a_joint_discriminator_batch():
    with pytest.raises(ValueError, match="--d-batch joint"):
        _build(["--data", "stacked_mnist", "--model", "dcgan28_nobn_d", "--method", "dual_score", "--d-batch", "joint"])


@pytest.mark.parametrize("d_width,filters", [(None, (64, 128)), (32, (32, 64)), (16, (16, 32))])
def test_dcgan28_discriminator_width(d_width, filters):
    # --d-width sizes the standard-size D (D = 1/2 G at 32 and 1/4 G at 16 for G of width 64)
    argv = ["--data", "stacked_mnist", "--preset", "dcgan28"] + (["--d-width", str(d_width)] if d_width else [])
    args, G, D, _ = _build(argv)
    convs = [m.out_channels for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    assert tuple(convs) == filters
    assert D(G(torch.randn(2, args.z_dim))).shape == (2, 1)
    assert image_gan._settings(args)["d_width"] == d_width   # None keeps old checkpoints resumable


@pytest.mark.parametrize("argv,names", [
    (["--model", "dcgan28", "--d-scale", "0.25"], "--d-scale"),        # silently ignored before
    (["--model", "mnist_dcgan", "--d-scale", "0.25"], "--d-scale"),
    (["--model", "unrolled", "--d-width", "16"], "--d-width"),
    (["--model", "dcgan28", "--d-width", "0"], "--d-width"),             # failed inside nn.Conv2d before
])
def test_a_size_option_the_players_do_not_use_is_refused(argv, names, capsys):
    with pytest.raises(SystemExit):
        image_gan.parse_args(["--data", "stacked_mnist", *argv])
    assert names in capsys.readouterr().err


def test_the_pacgan_preset_still_sets_d_scale_for_its_players():
    args = image_gan.parse_args(["--data", "stacked_mnist", "--preset", "pacgan", "--d-scale", "0.25"])
    assert args.d_scale == 0.25


def test_gen_steps_reach_the_alternating_optimizer():
    # DCGAN-tensorflow (PacGAN's standard-size stacked-MNIST code) steps G twice per D step
    _, _, _, m = _build(["--data", "stacked_mnist", "--preset", "dcgan28", "--method", "altga", "--gen-steps", "2"])
    assert m.opt.gen_steps == 2 and m.opt.disc_steps == 1


@pytest.mark.parametrize("option", ["--gen-steps", "--disc-steps"])
@pytest.mark.parametrize("method", ["consensus", "simga", "optimistic"])
def test_step_counts_on_a_method_that_does_not_alternate_are_refused(option, method, capsys):
    with pytest.raises(SystemExit):
        image_gan.parse_args(["--data", "stacked_mnist", "--method", method, option, "2"])
    err = capsys.readouterr().err
    assert option in err and "altga" in err
