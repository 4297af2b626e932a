"""ConsensusOptimizer's gradients against a plain reference implementation (float64)."""

import pytest
import torch

import gameopt
from conftest import TinyGAN


def reference_grads(gan, kind, gamma, smoothing=False, gammas=None):
    """Straightforward consensus: first gradients with graph, then grad of 1/2||v||^2."""
    gp, dp = gan.params()
    lg, ld = gan.losses(kind)
    vg = torch.autograd.grad(lg, gp, create_graph=True, retain_graph=True)
    vd = torch.autograd.grad(ld, dp, create_graph=True)
    L = 0.5 * sum((t * t).sum() for t in vg + vd)
    targets = dp if smoothing else gp + dp
    r = torch.autograd.grad(L, targets)
    out = [t.detach().clone() for t in vg + vd]
    offset = 0 if not smoothing else len(gp)
    for i, t in enumerate(r):
        g = gamma if gammas is None else gammas[offset + i]
        out[offset + i] += g * t
    return out


def gameopt_grads(gan, kind, gamma, **kw):
    gp, dp = gan.params()
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, gp, dp, gamma=gamma, lr=0.1, **kw)
    opt.zero_grad()
    opt.backward(*gan.losses(kind))
    return [p.grad.clone() for p in gp + dp], opt


@pytest.mark.parametrize("kind", ["nonsat", "zerosum", "nonsat_detached"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 10.0])
@pytest.mark.filterwarnings("ignore:gameopt. disc_loss does not depend")
def test_grad_matches_reference(kind, gamma):
    gan = TinyGAN(seed=3)
    got, opt = gameopt_grads(gan, kind, gamma)
    want = reference_grads(gan, kind, gamma)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    gp, dp = gan.params()
    lg, ld = gan.losses(kind)
    vg = torch.autograd.grad(lg, gp, retain_graph=True)
    vd = torch.autograd.grad(ld, dp)
    expect_sq_g = sum((t * t).sum() for t in vg)
    expect_sq_d = sum((t * t).sum() for t in vd)
    assert opt.stats.grad_sq_norm["generator"].item() == pytest.approx(expect_sq_g.item(), rel=1e-5)
    assert opt.stats.grad_sq_norm["discriminator"].item() == pytest.approx(expect_sq_d.item(), rel=1e-5)
    assert opt.stats.consensus_loss.item() == pytest.approx(0.5 * (expect_sq_g + expect_sq_d).item(), rel=1e-5)
    assert bool(opt.stats.finite)


def test_gamma_zero_is_bitwise_plain_simultaneous_step():
    gan = TinyGAN(seed=4, dtype=torch.float32)
    gp, dp = gan.params()
    ref_opt = torch.optim.Adam([{"params": gp}, {"params": dp}], lr=1e-2)
    ref_state = [p.detach().clone() for p in gp + dp]
    lg, ld = gan.losses()
    ref_opt.zero_grad()
    for p, g in zip(gp, torch.autograd.grad(lg, gp, retain_graph=True)):
        p.grad = g
    for p, g in zip(dp, torch.autograd.grad(ld, dp)):
        p.grad = g
    ref_opt.step()
    after_ref = [p.detach().clone() for p in gp + dp]
    with torch.no_grad():
        for p, s in zip(gp + dp, ref_state):
            p.copy_(s)
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, gp, dp, gamma=0.0, lr=1e-2)
    opt.zero_grad()
    opt.backward(*gan.losses())
    opt.step()
    for a, b in zip(gp + dp, after_ref):
        assert torch.equal(a.detach(), b)


def test_smoothing_regularises_discriminator_only():
    gan = TinyGAN(seed=5)
    got, _ = gameopt_grads(gan, "nonsat", 2.0, smoothing=True)
    want = reference_grads(gan, "nonsat", 2.0, smoothing=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    plain = reference_grads(gan, "nonsat", 0.0)
    n_gen = len(gan.params()[0])
    for a, b in zip(got[:n_gen], plain[:n_gen]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_per_group_gamma():
    gan = TinyGAN(seed=6)
    gp, dp = gan.params()
    opt = gameopt.ConsensusOptimizer(
        torch.optim.SGD, [{"params": gp, "gamma": 3.0}], [{"params": dp[:2]}, {"params": dp[2:], "gamma": 0.0}],
        gamma=1.0, lr=0.1,
    )
    opt.zero_grad()
    opt.backward(*gan.losses())
    gammas = [3.0] * len(gp) + [1.0] * 2 + [0.0] * (len(dp) - 2)
    want = reference_grads(gan, "nonsat", None, gammas=gammas)
    for p, b in zip(gp + dp, want):
        torch.testing.assert_close(p.grad, b, rtol=1e-12, atol=1e-14)


def test_backward_accumulates_like_loss_backward():
    gan = TinyGAN(seed=7)
    gp, dp = gan.params()
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, gp, dp, gamma=1.0, lr=0.1)
    opt.zero_grad()
    opt.backward(*gan.losses())
    once = [p.grad.clone() for p in gp + dp]
    opt.backward(*gan.losses())
    for p, g in zip(gp + dp, once):
        torch.testing.assert_close(p.grad, 2 * g)


def test_unbiased_estimate_matches_u_statistic():
    gan = TinyGAN(seed=8, batch=5)
    gp, dp = gan.params()
    gamma = 1.5
    lg, ld = gan.losses(per_example=True)
    B = lg.shape[0]
    per = []
    for i in range(B):
        gi = torch.autograd.grad(lg[i], gp, create_graph=True, retain_graph=True)
        di = torch.autograd.grad(ld[i], dp, create_graph=True, retain_graph=True)
        per.append(torch.cat([t.reshape(-1) for t in gi + di]))
    V = torch.stack(per)
    vB = V.mean(0)
    # unbiased: 1/2||v_B||^2 - sample variance / (2B), the U-statistic of the pairs i != j
    sample_var = ((V - vB) ** 2).sum(1).sum() / (B - 1)
    L_unb = 0.5 * (vB * vB).sum() - sample_var / (2 * B)
    pairs = sum((V[i] * V[j]).sum() for i in range(B) for j in range(B) if i != j) / (2 * B * (B - 1))
    torch.testing.assert_close(L_unb, pairs)
    r = torch.autograd.grad(L_unb, gp + dp)
    want = [v + gamma * t.reshape(-1) for v, t in zip(torch.split(vB.detach(), [p.numel() for p in gp + dp]), r)]
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, gp, dp, gamma=gamma, lr=0.1, unbiased=True)
    opt.zero_grad()
    opt.backward(*gan.losses(per_example=True))
    for p, w in zip(gp + dp, want):
        torch.testing.assert_close(p.grad.reshape(-1), w, rtol=1e-10, atol=1e-12)


def test_unbiased_removes_minibatch_bias_in_expectation():
    """E[unbiased L_B] = L: on a linear model with noisy per-example gradients, averaged over batches."""
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.tensor([0.3], dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor([-0.2], dtype=torch.float64))
    # v_i = (c_i * b, -c_i * a) with c_i ~ N(1, 1): L = 1/2 (a^2 + b^2) E[c]^2
    biased, unbiased = [], []
    for _ in range(400):
        c = 1 + torch.randn(4, dtype=torch.float64)
        for flag, out in ((False, biased), (True, unbiased)):
            lg = c * a * b
            opt = gameopt.ConsensusOptimizer(torch.optim.SGD, [a], [b], gamma=1.0, lr=0.0, unbiased=flag)
            opt.zero_grad()
            if flag:
                opt.backward(lg, -lg)
            else:
                opt.backward(lg.mean(), -lg.mean())
            out.append(a.grad.item() - b.item() * c.mean().item())  # gamma * dL/da
    true = a.item() * 1.0  # d/da of 1/2 (a^2 + b^2) E[c]^2 with E[c] = 1
    assert abs(sum(unbiased) / len(unbiased) - true) < 0.05
    assert sum(biased) / len(biased) - true > 0.05  # bias: + Var[c] * a / B = 0.075


def test_three_player_game():
    torch.manual_seed(0)
    a, b, c = (torch.nn.Parameter(torch.randn(2, dtype=torch.float64)) for _ in range(3))
    def losses():
        return (a @ b + (a * a).sum() * 0.1, -(a @ b) + b @ c, -(b @ c) + (c ** 2).sum())
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, players={"p1": [a], "p2": [b], "p3": [c]}, gamma=0.7, lr=0.1)
    opt.zero_grad()
    opt.backward(*losses())
    l1, l2, l3 = losses()
    v = [torch.autograd.grad(l, [p], create_graph=True)[0] for l, p in zip((l1, l2, l3), (a, b, c))]
    L = 0.5 * sum((t * t).sum() for t in v)
    r = torch.autograd.grad(L, [a, b, c])
    for p, vv, rr in zip((a, b, c), v, r):
        torch.testing.assert_close(p.grad, vv.detach() + 0.7 * rr)


def test_alternating_matches_manual_reference():
    gan = TinyGAN(seed=9)
    gp, dp = gan.params()
    start = [p.detach().clone() for p in gp + dp]
    lr = 0.05
    # reference: D step on fresh losses, then G step on losses after the D update
    _, ld = gan.losses()
    gd = torch.autograd.grad(ld, dp)
    with torch.no_grad():
        for p, g in zip(dp, gd):
            p -= lr * g
    lg, _ = gan.losses()
    gg = torch.autograd.grad(lg, gp)
    with torch.no_grad():
        for p, g in zip(gp, gg):
            p -= lr * g
    want = [p.detach().clone() for p in gp + dp]
    with torch.no_grad():
        for p, s in zip(gp + dp, start):
            p.copy_(s)
    opt = gameopt.AlternatingOptimizer(torch.optim.SGD, gp, dp, lr=lr)
    opt.step(lambda: gan.losses())
    for p, w in zip(gp + dp, want):
        torch.testing.assert_close(p.detach(), w, rtol=0, atol=1e-15)


def test_detached_fake_samples_warn_and_lose_the_cross_term():
    gan = TinyGAN(seed=10)
    with pytest.warns(RuntimeWarning, match=r"disc_loss does not depend.*D\(fake.detach\(\)\)"):
        detached, _ = gameopt_grads(gan, "nonsat_detached", 1.0)
    full, _ = gameopt_grads(gan, "nonsat", 1.0)
    n_gen = len(gan.params()[0])
    # same v, but the generator's consensus term differs: (dv_D/dtheta)^T v_D is missing
    assert any(not torch.allclose(a, b) for a, b in zip(detached[:n_gen], full[:n_gen]))
    for a, b in zip(detached[n_gen:], full[n_gen:]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("joint", [False, True])
def test_grad_matches_reference_with_batch_norm_in_the_discriminator(joint):
    # consensus collapsed the standard-size DCGAN with batch norm in D (issue 19): the gradient
    # through the batch statistics (double backward of batch norm) is exactly the reference's
    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(4, 2 * 8 * 8), torch.nn.Unflatten(1, (2, 8, 8)),
                            torch.nn.BatchNorm2d(2), torch.nn.ReLU(), torch.nn.Conv2d(2, 1, 3, padding=1),
                            torch.nn.Tanh()).double()
    D = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, stride=2, padding=1), torch.nn.LeakyReLU(0.2),
                            torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.nn.BatchNorm2d(4),
                            torch.nn.LeakyReLU(0.2), torch.nn.Flatten(), torch.nn.Linear(16, 1)).double()
    real, z = torch.rand(6, 1, 8, 8, dtype=torch.float64) * 2 - 1, torch.randn(6, 4, dtype=torch.float64)

    def losses():
        fake = G(z)
        if joint:
            d_fake, d_real = D(torch.cat([fake, real])).flatten().split(6)
        else:
            d_fake, d_real = D(fake).flatten(), D(real).flatten()
        F = torch.nn.functional
        return F.softplus(-d_fake).mean(), F.softplus(-d_real).mean() + F.softplus(d_fake).mean()

    gp, dp = list(G.parameters()), list(D.parameters())
    lg, ld = losses()
    vg = torch.autograd.grad(lg, gp, create_graph=True, retain_graph=True)
    vd = torch.autograd.grad(ld, dp, create_graph=True)
    L = 0.5 * sum((t * t).sum() for t in vg + vd)
    want = [v.detach() + 0.7 * r for v, r in zip(vg + vd, torch.autograd.grad(L, gp + dp))]
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, gp, dp, gamma=0.7, lr=0.1)
    opt.zero_grad()
    opt.backward(*losses())
    for p, w in zip(gp + dp, want):
        torch.testing.assert_close(p.grad, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("smoothing", [False, True])
def test_reg_grad_sq_norm_per_player(smoothing):
    # stats.reg_grad_sq_norm[player] = ||grad_player (1/2 ||v||^2)||^2 before gamma: with
    # grad_sq_norm it tells how far the regulariser outweighs the game (gamma ||grad L|| / ||v||)
    gan = TinyGAN(seed=9)
    gp, dp = gan.params()
    _, opt = gameopt_grads(gan, "nonsat", 0.5, smoothing=smoothing)
    lg, ld = gan.losses()
    vg = torch.autograd.grad(lg, gp, create_graph=True, retain_graph=True)
    vd = torch.autograd.grad(ld, dp, create_graph=True)
    L = 0.5 * sum((t * t).sum() for t in vg + vd)
    rg, rd = torch.autograd.grad(L, gp, retain_graph=True), torch.autograd.grad(L, dp)
    got = opt.stats.reg_grad_sq_norm
    assert set(got) == {"generator", "discriminator"}
    want_g = 0.0 if smoothing else float(sum((t * t).sum() for t in rg))
    assert got["generator"].item() == pytest.approx(want_g, rel=1e-5)
    assert got["discriminator"].item() == pytest.approx(float(sum((t * t).sum() for t in rd)), rel=1e-5)
    total = sum(v for v in got.values())
    assert opt.stats.reg_grad_norm.item() == pytest.approx(float(total) ** 0.5, rel=1e-5)
