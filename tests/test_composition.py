"""gameopt's pieces compose: the primal-dual term inside a consensus step, monitored."""

import pytest
import torch
import torch.nn.functional as F

import gameopt
from conftest import TinyGAN


def explicit_term(real, fake, d_real, alpha, sigma, div):
    """mean_i (t_i - p_hat(x_i))^2 with t = p_hat.detach() - alpha f1(D(x_i)): written out, no chunks."""
    sq = ((real[:, None, :] - fake[None, :, :]) ** 2).sum(-1)  # cdist has no double backward
    p_hat = torch.exp(-sq / sigma**2).mean(1)
    t = p_hat.detach() - alpha * div.f1_from_output(d_real.detach().reshape(-1))
    return ((t - p_hat) ** 2).mean()


@pytest.mark.parametrize("divergence", ["js", "kl", "wgan"])
def test_primal_dual_term_inside_consensus_matches_reference(divergence):
    gan = TinyGAN(seed=12)
    gp, dp = gan.params()
    reg = gameopt.PrimalDualRegularizer(divergence, alpha=0.5, bandwidth=1.5)
    div = reg.divergence

    def losses(term):
        fake = gan.G(gan.z)
        d_fake = gan.D(fake).squeeze(1)
        d_real = gan.D(gan.x).squeeze(1)
        lg = div.generator_loss(d_fake) + term(gan.x, fake, d_real)
        ld = div.discriminator_loss(d_real, d_fake)
        return lg, ld

    gamma = 2.0
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, gp, dp, gamma=gamma, lr=0.1)
    opt.zero_grad()
    opt.backward(*losses(reg))
    got = [p.grad.clone() for p in gp + dp]

    lg, ld = losses(lambda r, f, d: explicit_term(r, f, d, 0.5, 1.5, div))
    vg = torch.autograd.grad(lg, gp, create_graph=True, retain_graph=True)
    vd = torch.autograd.grad(ld, dp, create_graph=True)
    L = 0.5 * sum((t * t).sum() for t in vg + vd)
    r = torch.autograd.grad(L, gp + dp)
    want = [v.detach() + gamma * t for v, t in zip(vg + vd, r)]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)

    mon = gameopt.Monitor(consensus=opt, primal_dual=reg)
    values = mon.read()
    assert values["primal_dual/bandwidth"] == 1.5
    assert values["primal_dual/value"] >= 0
    assert values["consensus/grad_sq_norm/generator"] > 0


def test_bandwidth_schedule_steps_with_a_gameopt_optimizer():
    from gameopt.primal_dual import StepBandwidth
    gan = TinyGAN(seed=13)
    reg = gameopt.PrimalDualRegularizer("js", alpha=1.0, bandwidth=StepBandwidth([0.5, 0.1], [2]))
    opt = gameopt.AlternatingOptimizer(torch.optim.Adam, *gan.params(), lr=1e-3)
    reg.attach(opt)

    def closure():
        fake = gan.G(gan.z)
        d_fake = gan.D(fake).squeeze(1)
        d_real = gan.D(gan.x).squeeze(1)
        return (F.softplus(-d_fake).mean() + reg(gan.x, fake, d_real),
                F.softplus(-d_real).mean() + F.softplus(d_fake).mean())
    for _ in range(3):
        opt.step(closure)
    assert reg.current_bandwidth == 0.1 and int(reg.num_steps) == 3


def test_monitor_reads_dual_discriminator_stats():
    torch.manual_seed(0)
    D = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    d_step = gameopt.TrustRegionDualDiscriminator(D, model="score", C=1e-2, delta=1e-2)
    real = torch.randn(16, 2, dtype=torch.float64) + 1
    fake = torch.randn(16, 2, dtype=torch.float64)
    mon = gameopt.Monitor(dual=d_step)
    assert mon.read() == {"dual/delta": 1e-2}
    d_step.step(real, fake)
    values = mon.read()
    assert values["dual/gap"] >= 0 and values["dual/delta"] > 0
    assert len(values["dual/lam"]) == 16 and len(values["dual/mu"]) == 16
