"""GradientPenalty under mixed precision: a GradScaler scales the discriminator's loss once
(the penalty comes back unscaled), float16 input gradients are protected from underflow by the
scaler's scale and unscaled in float32, bf16 autocast tracks float32."""

import pytest
import torch
import torch.nn.functional as F

import gameopt


def disc(seed, dtype=torch.float32, small=1.0):
    """An MLP D; ``small`` scales the two upper layers' weights, so the input gradient shrinks as small**2."""
    torch.manual_seed(seed)
    D = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
                            torch.nn.Linear(16, 1)).to(dtype)
    with torch.no_grad():
        D[2].weight.mul_(small)
        D[4].weight.mul_(small)
    return D


def batch(n=64, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 2, generator=g, dtype=dtype) + 1, torch.randn(n, 2, generator=g, dtype=dtype)


def flat_grads(D):
    return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in D.parameters()])


def d_step(D, x, fake, pen, scaler=None, autocast=None):
    """One discriminator loss and backward; returns the penalty's value."""
    with torch.autocast("cpu", dtype=autocast or torch.float32, enabled=autocast is not None):
        loss = F.softplus(-D(x)).mean() + F.softplus(D(fake)).mean()
        value = pen(D, real=x, scaler=scaler)
    (loss + value if scaler is None else scaler.scale(loss + value)).backward()
    return value


def test_grad_scaler_scales_the_penalty_once():
    """float64, scale 1024: after unscale_ the gradients are the unscaled run's, and the value is unscaled."""
    x, fake = batch(dtype=torch.float64)
    D_ref = disc(1, torch.float64)
    ref_value = d_step(D_ref, x, fake, gameopt.GradientPenalty("r1", gamma=5.0))
    D = disc(1, torch.float64)
    opt = torch.optim.SGD(D.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    value = d_step(D, x, fake, gameopt.GradientPenalty("r1", gamma=5.0), scaler=scaler)
    torch.testing.assert_close(value, ref_value, rtol=1e-13, atol=0)
    scaler.unscale_(opt)
    torch.testing.assert_close(flat_grads(D), flat_grads(D_ref), rtol=1e-12, atol=1e-15)


def test_fp16_input_gradient_underflows_without_the_scaler_and_not_with_it():
    """A D whose input gradient is ~1e-7: it underflows to zero in float16 unless the scaler's scale lifts it."""
    x, _ = batch()

    def value(autocast=None, scaler=None):
        with torch.autocast("cpu", dtype=autocast or torch.float32, enabled=autocast is not None):
            return gameopt.GradientPenalty("r1", gamma=1.0)(disc(2, small=3e-3), real=x, scaler=scaler)

    ref = value().item()
    assert ref > 0
    with pytest.warns(RuntimeWarning, match="float16 and no scaler=.*underflow"):
        assert value(torch.float16).item() == 0.0
    got = value(torch.float16, torch.amp.GradScaler("cpu", init_scale=2.0**16))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref, rel=1e-2)


def test_fp16_with_scaler_trains_like_fp32_and_backs_off_an_overflow():
    """R1 at every D step under fp16 autocast with a GradScaler that starts too high: the
    overflowing steps are skipped by the scaler, the taken ones track float32."""
    x, fake = batch()
    D, D_ref = disc(3), disc(3)
    opt, opt_ref = torch.optim.SGD(D.parameters(), lr=0.05), torch.optim.SGD(D_ref.parameters(), lr=0.05)
    pen, pen_ref = gameopt.GradientPenalty("r1", gamma=2.0), gameopt.GradientPenalty("r1", gamma=2.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    taken = skipped = 0
    while taken < 3:
        opt.zero_grad()
        value = d_step(D, x, fake, pen, scaler=scaler, autocast=torch.float16)
        old = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        if scaler.get_scale() < old:
            assert not torch.isfinite(value) or not torch.isfinite(flat_grads(D)).all()
            skipped += 1
            assert skipped < 40
            continue
        taken += 1
        opt_ref.zero_grad()
        d_step(D_ref, x, fake, pen_ref)
        opt_ref.step()
    assert skipped > 0
    got = torch.cat([p.detach().reshape(-1) for p in D.parameters()])
    want = torch.cat([p.detach().reshape(-1) for p in D_ref.parameters()])
    torch.testing.assert_close(got, want, rtol=0, atol=3e-3)


@pytest.mark.parametrize("kind", ["r1", "wgan-gp"])
def test_bf16_autocast_tracks_fp32(kind):
    x, fake = batch()

    def run(bf16):
        D = disc(4)
        pen = gameopt.GradientPenalty(kind, gamma=10.0, generator=torch.Generator().manual_seed(1))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            kw = {"real": x} if kind == "r1" else {"real": x, "fake": fake}
            value = pen(D, **kw)
        value.backward()
        return value.detach(), flat_grads(D)

    (v16, g16), (v32, g32) = run(True), run(False)
    assert v16.dtype == torch.float32
    assert abs(float(v16 - v32)) < 3e-2 * float(v32)
    assert float((g16 - g32).norm() / g32.norm()) < 3e-2
