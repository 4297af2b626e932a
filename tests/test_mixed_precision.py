"""Mixed precision: bf16 autocast for all three optimisers; fp16 GradScaler for consensus."""

import pytest
import torch

import gameopt
from conftest import TinyGAN, mlp


def _flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def _consensus_grads(dtype=torch.float64, scale=None, pass_scaler=True):
    gan = TinyGAN(seed=3, dtype=dtype)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=2.0, lr=0.1)
    lg, ld = gan.losses()
    if scale is None:
        opt.backward(lg, ld)
    else:
        scaler = torch.amp.GradScaler("cpu", init_scale=scale)
        opt.backward(scaler.scale(lg), scaler.scale(ld), scaler=scaler if pass_scaler else None)
        scaler.unscale_(opt)
        if pass_scaler:  # statistics are of the unscaled gradients
            assert opt.stats.consensus_loss.item() == pytest.approx(_unscaled_stats().consensus_loss.item(), rel=1e-6)
    return _flat(p.grad for ps in gan.params() for p in ps)


def _unscaled_stats():
    gan = TinyGAN(seed=3)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=2.0, lr=0.1)
    return opt.backward(*gan.losses())


def test_scaler_gives_the_unscaled_consensus_gradient():
    """Losses scaled by s: v is s v and v'^T v would be s^2 v'^T v; with scaler= it is s v'^T v."""
    ref = _consensus_grads()
    torch.testing.assert_close(_consensus_grads(scale=1024.0), ref, rtol=1e-12, atol=1e-14)
    # the same scaled losses without telling gameopt: the regulariser is s times too large,
    # and gameopt says so (the loss is GradScaler.scale's product)
    with pytest.warns(RuntimeWarning, match=r"looks scaled by a torch.amp.GradScaler \(times 1024\).*scaler="):
        wrong = _consensus_grads(scale=1024.0, pass_scaler=False)
    assert (wrong - ref).norm() > 0.1 * ref.norm()


def test_no_scaled_loss_warning_for_ordinary_products():
    gan = TinyGAN(seed=3)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=2.0, lr=0.1)
    lg, ld = gan.losses()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.backward(lg * torch.tensor(3.0, dtype=lg.dtype), ld * 2.0)


def test_fp16_autocast_with_scaler_skips_overflow_then_tracks_fp32():
    torch.manual_seed(0)
    gan = TinyGAN(seed=3, dtype=torch.float32, batch=64)
    ref = TinyGAN(seed=3, dtype=torch.float32, batch=64)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=2.0, lr=0.05)
    ref_opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *ref.params(), gamma=2.0, lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**30)  # overflows fp16 at first
    params = [p for ps in gan.params() for p in ps]
    taken = 0
    for _ in range(30):
        before = _flat(p.detach().clone() for p in params)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            lg, ld = gan.losses()
        assert lg.dtype == torch.float32 or lg.dtype == torch.float16
        opt.backward(scaler.scale(lg), scaler.scale(ld), scaler=scaler)
        old_scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        if scaler.get_scale() < old_scale:  # overflow: the step was skipped on the scaler's inf check
            assert torch.equal(_flat(p.detach() for p in params), before)
            continue
        taken += 1
        ref_opt.zero_grad()
        ref_opt.backward(*ref.losses())
        ref_opt.step()
        if taken == 3:
            break
    assert taken == 3 and scaler.get_scale() < 2.0**30
    got, want = _flat(p.detach() for p in params), _flat(p.detach() for ps in ref.params() for p in ps)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=0, atol=2e-3)


def test_scaler_must_be_a_grad_scaler():
    gan = TinyGAN()
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), lr=0.1)
    with pytest.raises(gameopt.GameInputError, match="GradScaler"):
        opt.backward(*gan.losses(), scaler=1024.0)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_bf16_autocast_consensus_close_to_fp32():
    def grads(bf16):
        gan = TinyGAN(seed=3, dtype=torch.float32, batch=64)
        opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=2.0, lr=0.1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            lg, ld = gan.losses()
        opt.backward(lg, ld)
        assert opt.stats.finite.item()
        return _flat(p.grad for ps in gan.params() for p in ps)
    assert _rel(grads(True), grads(False)) < 3e-2


def test_bf16_autocast_primal_dual_regularizer_close_to_fp32():
    def run(bf16):
        G, D = mlp([3, 8, 2], 5, torch.float32), mlp([2, 8, 1], 6, torch.float32)
        g = torch.Generator().manual_seed(0)
        z, x = torch.randn(64, 3, generator=g), torch.randn(64, 2, generator=g) + 1
        reg = gameopt.PrimalDualRegularizer("js", alpha=2.0, bandwidth=0.7)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            value = reg(x, G(z), D(x))
        return value.detach().float(), _flat(torch.autograd.grad(value, list(G.parameters())))
    (v16, g16), (v32, g32) = run(True), run(False)
    assert abs(float(v16 - v32)) < 2e-2 * float(v32)
    assert _rel(g16, g32) < 3e-2


@pytest.mark.parametrize("model", ["linear", "cost", "score"])
def test_bf16_autocast_dual_discriminator_close_to_fp32(model):
    def run(bf16):
        torch.manual_seed(9)
        if model == "linear":
            module = gameopt.RBFFeatures(torch.randn(6, 2) + 1, bandwidth=1.0, bias=True)
        else:
            module = mlp([2, 6, 1], 7, torch.float32)
        disc = gameopt.TrustRegionDualDiscriminator(module, model=model, C=1e-2, delta=1e-2, on_failure="raise")
        G = mlp([3, 6, 2], 8, torch.float32)
        g = torch.Generator().manual_seed(0)
        z, x = torch.randn(32, 3, generator=g), torch.randn(32, 2, generator=g) + 1
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            stats = disc.step(x, G(z).detach())
            gen_loss = disc.generator_loss(x, G(z))
        assert stats.accepted
        return _flat(p.detach() for p in disc.parameters()), gen_loss.detach().float()
    (w16, l16), (w32, l32) = run(True), run(False)
    assert torch.isfinite(w16).all() and torch.isfinite(l16)
    assert _rel(w16, w32) < 1e-2
    assert abs(float(l16 - l32)) < 1e-2 * abs(float(l32))
