"""GradientPenalty inside the discriminator's loss of a plain torch loop and of every gameopt
optimiser: each trains exactly as with the penalty written in closed form; with consensus the
regulariser differentiates the penalty once more (third derivatives), checked against an
explicit double-autograd computation."""

import pytest
import torch
import torch.nn.functional as F

import gameopt

DT = torch.float64
GAMMA_R1, GAMMA_R2 = 0.8, 0.3


class Quadratic(torch.nn.Module):
    """D(x) = x^T A x + <w, x>, so grad_x D = (A + A^T) x + w in closed form."""

    def __init__(self, d=2, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = torch.nn.Parameter(0.3 * torch.randn(d, d, generator=g, dtype=DT))
        self.w = torch.nn.Parameter(torch.randn(d, generator=g, dtype=DT))

    def forward(self, x):
        return torch.einsum("bi,ij,bj->b", x, self.A, x) + x @ self.w


def closed_form_r(D, x, gamma):
    """gamma/2 mean ||(A + A^T) x_i + w||^2, written without GradientPenalty (x already detached)."""
    r = x @ (D.A + D.A.T).T + D.w
    return 0.5 * gamma * r.pow(2).sum(1).mean()


class Game:
    """Linear G(z) = W z + c against the quadratic D; non-saturating losses, D's loss sees G."""

    def __init__(self, seed=0):
        torch.manual_seed(seed)
        self.G = torch.nn.Linear(3, 2).to(DT)
        self.D = Quadratic(seed=seed + 1)
        g = torch.Generator().manual_seed(seed + 2)
        self.x = torch.randn(8, 2, generator=g, dtype=DT) + 1
        self.z = torch.randn(8, 3, generator=g, dtype=DT)

    def params(self):
        return list(self.G.parameters()), list(self.D.parameters())

    def losses(self, penalty, zero_sum=False):
        """penalty: "module" (GradientPenalty), "closed" (closed form) or None."""
        fake = self.G(self.z)
        d_fake, d_real = self.D(fake), self.D(self.x)
        disc = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        gen = -disc if zero_sum else F.softplus(-d_fake).mean()
        if penalty == "module":
            disc = disc + self.r1(self.D, real=self.x) + self.r2(self.D, fake=fake)
        elif penalty == "closed":
            disc = disc + closed_form_r(self.D, self.x, GAMMA_R1) + closed_form_r(self.D, fake.detach(), GAMMA_R2)
        if zero_sum:   # CGD: one objective; the penalty has no generator dependence, so f - pen is exact
            gen = -disc
        return gen, disc

    r1 = gameopt.GradientPenalty("r1", gamma=GAMMA_R1)
    r2 = gameopt.GradientPenalty("r2", gamma=GAMMA_R2)


def flat(ps):
    return torch.cat([p.detach().reshape(-1) for p in ps])


def test_consensus_with_penalty_is_exact_third_order():
    """p.grad = v + gamma v'^T v for the penalised losses, against explicit double autograd on the closed form."""
    gamma = 0.7
    game = Game()
    theta, phi = game.params()
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, theta, phi, gamma=gamma, lr=0.1)
    opt.backward(*game.losses("module"))
    got = flat(p.grad for p in theta + phi)

    def direct(penalty):
        gen, disc = game.losses(penalty)
        v = torch.autograd.grad(gen, theta, create_graph=True) + torch.autograd.grad(disc, phi, create_graph=True)
        half_sq = 0.5 * sum(t.pow(2).sum() for t in v)
        reg = torch.autograd.grad(half_sq, theta + phi)
        return torch.cat([(a + gamma * b).detach().reshape(-1) for a, b in zip(v, reg)])

    want = direct("closed")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    # the penalty reaches the generator through the regulariser's cross terms
    n_theta = sum(p.numel() for p in theta)
    without = direct(None)
    assert (want[:n_theta] - without[:n_theta]).norm() > 1e-3 * want[:n_theta].norm()


KINDS = ["simga", "altga", "consensus", "lazy_consensus", "extragradient", "optimistic", "sga", "lookahead",
         "competitive"]


def make(kind, game):
    gp, dp = game.params()
    if kind == "simga":
        return gameopt.SimultaneousOptimizer(torch.optim.Adam, gp, dp, lr=1e-2)
    if kind == "altga":
        return gameopt.AlternatingOptimizer(torch.optim.Adam, gp, dp, disc_steps=2, lr=1e-2)
    if kind == "consensus":
        return gameopt.ConsensusOptimizer(torch.optim.Adam, gp, dp, gamma=0.5, lr=1e-2)
    if kind == "lazy_consensus":
        return gameopt.ConsensusOptimizer(torch.optim.Adam, gp, dp, gamma=0.5, every=2, lr=1e-2)
    if kind == "extragradient":
        return gameopt.ExtragradientOptimizer(torch.optim.Adam, gp, dp, lr=1e-2)
    if kind == "optimistic":
        return gameopt.OptimisticOptimizer(torch.optim.Adam, gp, dp, lr=1e-2)
    if kind == "sga":
        return gameopt.SGAOptimizer(torch.optim.Adam, gp, dp, lam=0.5, lr=1e-2)
    if kind == "lookahead":
        return gameopt.LookaheadMinmax(gameopt.ExtragradientOptimizer(torch.optim.Adam, gp, dp, lr=1e-2), k=2)
    return gameopt.CompetitiveOptimizer(gp, dp, lr=0.05)


def train(kind, penalty, steps=4):
    game = Game()
    opt = make(kind, game)
    for _ in range(steps):
        opt.step(lambda: game.losses(penalty, zero_sum=kind == "competitive"))
    return flat(p for ps in game.params() for p in ps)


@pytest.mark.parametrize("kind", KINDS)
def test_every_optimiser_trains_as_with_the_closed_form_penalty(kind):
    got, want = train(kind, "module"), train(kind, "closed")
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-13)
    assert (got - train(kind, None)).norm() > 1e-4   # the penalty changed the trajectory


def test_plain_torch_loop_with_a_lazy_penalty():
    """Two Adam optimisers, R1 every 3 D steps: as the closed form applied on steps 0, 3, 6 times 3."""
    def run(module):
        game = Game()
        opt_g = torch.optim.Adam(game.G.parameters(), lr=1e-2)
        opt_d = torch.optim.Adam(game.D.parameters(), lr=1e-2)
        pen = gameopt.GradientPenalty("r1", gamma=GAMMA_R1, every=3)
        for step in range(7):
            fake = game.G(game.z)
            disc = F.softplus(-game.D(game.x)).mean() + F.softplus(game.D(fake.detach())).mean()
            if module:
                disc = disc + pen(game.D, real=game.x)
            elif step % 3 == 0:
                disc = disc + 3 * closed_form_r(game.D, game.x, GAMMA_R1)
            opt_d.zero_grad()
            disc.backward()
            opt_d.step()
            gen = F.softplus(-game.D(game.G(game.z))).mean()
            opt_g.zero_grad()
            gen.backward()
            opt_g.step()
        return flat(p for ps in game.params() for p in ps)

    torch.testing.assert_close(run(True), run(False), rtol=1e-12, atol=1e-14)
