"""CompetitiveOptimizer under mixed precision: GradScaler (fp16), bf16 autocast, bf16 parameters."""

import pytest
import torch

import gameopt
from conftest import TinyGAN


def _flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def _grads(form, scale=None, adaptive=True):
    gan = TinyGAN(seed=3)
    opt = gameopt.CompetitiveOptimizer(*gan.params(), lr=0.5, adaptive=adaptive, tol=1e-12, max_iter=100)
    lg, ld = gan.losses("zerosum")
    if scale is None:
        opt.backward(lg, ld)
        return _flat(p.grad for ps in gan.params() for p in ps), opt
    scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    if form == "pair":
        opt.backward(scaler.scale(lg), scaler.scale(ld), scaler=scaler)
    elif form == "pair_graph":
        g = scaler.scale(-ld)
        opt.backward(g, scaler.scale(ld), scaler=scaler)
    else:
        opt.backward(scaler.scale(lg), scaler=scaler)
    scaled = _flat(p.grad for ps in gan.params() for p in ps).clone()
    scaler.unscale_(opt)
    return _flat(p.grad for ps in gan.params() for p in ps), opt, scaled


@pytest.mark.parametrize("form", ["pair", "pair_graph", "objective"])
@pytest.mark.parametrize("adaptive", [False, True])
def test_scaler_gives_the_unscaled_step(form, adaptive):
    """Losses scaled by s: gradients and products are unscaled for the solve, p.grad is s times the step."""
    ref, ref_opt = _grads(form, adaptive=adaptive)
    got, opt, scaled = _grads(form, scale=1024.0, adaptive=adaptive)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(scaled, 1024.0 * ref, rtol=1e-10, atol=1e-10)
    assert float(opt.stats.grad_sq_norm["generator"]) == pytest.approx(float(ref_opt.stats.grad_sq_norm["generator"]))


def test_without_the_scaler_the_step_is_wrong():
    ref, _ = _grads("pair")
    gan = TinyGAN(seed=3)
    opt = gameopt.CompetitiveOptimizer(*gan.params(), lr=0.5, adaptive=True, tol=1e-12, max_iter=100)
    lg, ld = gan.losses("zerosum")
    opt.backward(lg * 1024.0, ld * 1024.0)
    wrong = _flat(p.grad for ps in gan.params() for p in ps) / 1024.0
    assert (wrong - ref).norm() > 0.1 * ref.norm()


@pytest.mark.parametrize("adaptive", [False, True])
def test_fp16_autocast_with_scaler_skips_overflow_then_tracks_fp32(adaptive):
    gan = TinyGAN(seed=3, dtype=torch.float32, batch=64)
    ref = TinyGAN(seed=3, dtype=torch.float32, batch=64)
    kw = {"lr": 0.01 if adaptive else 0.05, "adaptive": adaptive, "tol": 1e-5, "max_iter": 50}
    opt = gameopt.CompetitiveOptimizer(*gan.params(), **kw)
    ref_opt = gameopt.CompetitiveOptimizer(*ref.params(), **kw)
    start = _flat(p.detach().clone() for ps in gan.params() for p in ps)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**30)  # overflows fp16 at first
    params = [p for ps in gan.params() for p in ps]
    taken = 0
    for _ in range(30):
        before = _flat(p.detach().clone() for p in params)
        state = {p: {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            lg, ld = gan.losses("zerosum")
        opt.backward(scaler.scale(lg), scaler.scale(ld), scaler=scaler)
        old_scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        if scaler.get_scale() < old_scale:  # overflow: skipped by the scaler; our state untouched too
            assert torch.equal(_flat(p.detach() for p in params), before)
            assert all(torch.equal(v, state[p][k]) for p, s in opt.state.items() for k, v in s.items())
            continue
        taken += 1
        ref_opt.zero_grad()
        ref_opt.backward(*ref.losses("zerosum"))
        ref_opt.step()
        if taken == 3:
            break
    assert taken == 3 and scaler.get_scale() < 2.0**30
    got, want = _flat(p.detach() for p in params), _flat(p.detach() for ps in ref.params() for p in ps)
    assert torch.isfinite(got).all()
    ratio = float((got - want).norm() / (want - start).norm())
    # measured 3e-4 (CGD) and 0.053 (ACGD: 1 / sqrt(v) amplifies the error of small gradients)
    assert ratio <= (0.1 if adaptive else 0.005), ratio


@pytest.mark.parametrize("adaptive", [False, True])
def test_bf16_autocast_tracks_fp32(adaptive):
    gan = TinyGAN(seed=4, dtype=torch.float32, batch=64)
    ref = TinyGAN(seed=4, dtype=torch.float32, batch=64)
    kw = {"lr": 0.01 if adaptive else 0.05, "adaptive": adaptive, "tol": 1e-5, "max_iter": 50}
    opt = gameopt.CompetitiveOptimizer(*gan.params(), **kw)
    ref_opt = gameopt.CompetitiveOptimizer(*ref.params(), **kw)
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lg, ld = gan.losses("zerosum")
        opt.backward(lg, ld)
        opt.step()
        ref_opt.step(lambda: ref.losses("zerosum"))
    got, want = _flat(p.detach() for ps in gan.params() for p in ps), _flat(p.detach() for ps in ref.params() for p in ps)
    start = _flat(p.detach() for ps in TinyGAN(seed=4, dtype=torch.float32).params() for p in ps)
    assert torch.isfinite(got).all()
    # bf16 has 8 bits of mantissa: the trajectories agree to a few percent of the distance moved
    ratio = float((got - want).norm() / (want - start).norm())
    # measured 0.003 (CGD) and 0.023 (ACGD)
    assert ratio <= (0.1 if adaptive else 0.02), ratio


def test_bf16_parameters_solve_in_float32():
    gan = TinyGAN(seed=5, dtype=torch.bfloat16)
    opt = gameopt.CompetitiveOptimizer(*gan.params(), lr=0.01, adaptive=True, warm_start=True)
    before = [p.detach().clone() for ps in gan.params() for p in ps]
    for _ in range(2):
        opt.step(lambda: gan.losses("zerosum"))
    assert opt.stats.cg_residual.dtype == torch.float32
    for p, b in zip((p for ps in gan.params() for p in ps), before):
        assert p.dtype == torch.bfloat16 and p.grad.dtype == torch.bfloat16 and torch.isfinite(p).all()
        assert opt.state[p]["exp_avg_sq"].dtype == torch.bfloat16
    assert any(not torch.equal(p.detach(), b) for p, b in zip((p for ps in gan.params() for p in ps), before))
