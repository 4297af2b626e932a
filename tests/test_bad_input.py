"""Every bad input gets a clear error naming the problem and the fix, and leaves state untouched."""

import warnings

import pytest
import torch

import gameopt
from conftest import TinyGAN


def make(gan=None, **kw):
    gan = gan or TinyGAN()
    kw.setdefault("lr", 0.1)
    return gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), **kw), gan


def test_parameter_in_both_players():
    gan = TinyGAN()
    gp, dp = gan.params()
    with pytest.raises(ValueError, match="belongs to both players 'generator' and 'discriminator'.*disjoint"):
        gameopt.ConsensusOptimizer(torch.optim.Adam, gp + [dp[0]], dp, lr=0.1)


def test_parameter_twice_in_one_player():
    gan = TinyGAN()
    gp, dp = gan.params()
    with pytest.raises(ValueError, match="listed twice"):
        gameopt.ConsensusOptimizer(torch.optim.Adam, gp + [gp[0]], dp, lr=0.1)


def test_empty_player():
    gan = TinyGAN()
    gp, _ = gan.params()
    with pytest.raises(ValueError, match="player 'discriminator' has no parameters"):
        gameopt.ConsensusOptimizer(torch.optim.Adam, gp, [], lr=0.1)
    gen = gan.D.parameters()
    list(gen)  # consumed generator
    with pytest.raises(ValueError, match="consumed once"):
        gameopt.ConsensusOptimizer(torch.optim.Adam, gp, gen, lr=0.1)


def test_parameter_without_requires_grad():
    gan = TinyGAN()
    gp, dp = gan.params()
    frozen = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
    with pytest.raises(ValueError, match="requires_grad=False.*leave frozen parameters out"):
        gameopt.ConsensusOptimizer(torch.optim.Adam, gp, dp + [frozen], lr=0.1)


def test_loss_not_scalar():
    opt, gan = make()
    lg, ld = gan.losses(per_example=True)
    with pytest.raises(ValueError, match=r"gen_loss must be a scalar, got shape \(8,\).*loss.mean\(\)"):
        opt.backward(lg, ld.mean())


def test_loss_does_not_depend_on_player():
    opt, gan = make()
    lg, ld = gan.losses()
    with pytest.raises(ValueError, match="gen_loss does not depend on any parameter of player 'generator'"):
        opt.backward(gan.D(gan.x).mean(), ld)
    with pytest.raises(ValueError, match="disc_loss does not depend.*'discriminator'"):
        opt.backward(lg, lg.detach() * 2)
    gp, dp = gan.params()
    assert all(p.grad is None for p in gp + dp)


def test_swapped_losses_are_caught():
    opt, gan = make()
    fake = gan.G(gan.z)
    disc_only = torch.nn.functional.softplus(-gan.D(gan.x)).mean() + torch.nn.functional.softplus(gan.D(fake.detach())).mean()
    with pytest.raises(ValueError, match="player 'generator'.*swapped"):
        opt.backward(disc_only, torch.nn.functional.softplus(-gan.D(fake)).mean())


def test_sparse_gradients():
    emb_g = torch.nn.Embedding(5, 2, sparse=True).double()
    D = torch.nn.Linear(2, 1).double()
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, emb_g.parameters(), D.parameters(), gamma=0.0, lr=0.1)
    idx = torch.tensor([0, 1])
    out = D(emb_g(idx)).mean()
    with pytest.raises(TypeError, match="sparse gradient.*sparse=False"):
        opt.backward(out, -out)


def test_negative_or_bad_gamma():
    gan = TinyGAN()
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), gamma=-1.0, lr=0.1)
    with pytest.raises(ValueError, match="gamma"):
        gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), gamma=float("nan"), lr=0.1)
    gp, dp = gan.params()
    with pytest.raises(ValueError, match="gamma of a 'discriminator' param group"):
        gameopt.ConsensusOptimizer(torch.optim.Adam, gp, [{"params": dp, "gamma": -2}], lr=0.1)
    opt, gan = make()
    opt.param_groups[0]["gamma"] = -0.5  # e.g. a bad schedule
    with pytest.raises(ValueError, match="gamma of a 'generator' param group"):
        opt.backward(*gan.losses())


def test_base_not_an_optimizer_class():
    gan = TinyGAN()
    with pytest.raises(TypeError, match="subclass of torch.optim.Optimizer"):
        gameopt.ConsensusOptimizer(dict, *gan.params(), lr=0.1)
    with pytest.raises(TypeError, match="not an instance"):
        gp, dp = gan.params()
        gameopt.ConsensusOptimizer(torch.optim.Adam(gp + dp), gp, dp)
    with pytest.raises(TypeError, match="base_optimizer"):
        gameopt.ConsensusOptimizer(lambda params, **kw: None, *gan.params(), lr=0.1)


def test_wrong_number_of_losses():
    opt, gan = make()
    with pytest.raises(TypeError, match="expects 2 losses"):
        opt.backward(gan.losses()[0])


def _nan_losses(gan):
    lg, ld = gan.losses()
    return lg * float("nan"), ld


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_nan_gradient_skips_step_and_keeps_state(gamma):
    opt, gan = make(gamma=gamma)
    opt.zero_grad()
    opt.backward(*gan.losses())
    opt.step()
    state_before = {k: {n: (t.clone() if torch.is_tensor(t) else t) for n, t in v.items()} for k, v in opt.state.items()}
    params_before = [p.detach().clone() for p in gan.G.parameters()] + [p.detach().clone() for p in gan.D.parameters()]
    opt.zero_grad()
    opt.backward(*_nan_losses(gan))
    assert not bool(opt.stats.finite)
    with pytest.warns(RuntimeWarning, match=r"non-finite.*\['generator'.*skipped"):
        opt.step()
    assert opt.skipped_steps == 1 and opt.last_step_skipped
    for p, b in zip(list(gan.G.parameters()) + list(gan.D.parameters()), params_before):
        assert torch.equal(p.detach(), b)
    for k, v in opt.state.items():
        for n, t in v.items():
            if torch.is_tensor(t):
                assert torch.equal(t, state_before[k][n])
                assert torch.isfinite(t).all()
    # training goes on normally afterwards, and the count is checkpointed
    opt.zero_grad()
    opt.backward(*gan.losses())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()
    assert not opt.last_step_skipped
    assert opt.state_dict()["gameopt"]["skipped_steps"] == 1


def test_nan_policy_raise():
    opt, gan = make(nonfinite="raise")
    opt.zero_grad()
    opt.backward(*_nan_losses(gan))
    with pytest.raises(FloatingPointError, match="non-finite"):
        opt.step()
    assert len(opt.state) == 0
    with pytest.raises(ValueError, match="nonfinite must be"):
        make(nonfinite="maybe")


def test_alternating_nan_skips():
    gan = TinyGAN()
    opt = gameopt.AlternatingOptimizer(torch.optim.Adam, *gan.params(), lr=0.1)
    before = [p.detach().clone() for p in gan.D.parameters()]
    with pytest.warns(RuntimeWarning, match="discriminator"):
        opt.step(lambda: (gan.losses()[0], gan.losses()[1] * float("inf")))
    for p, b in zip(gan.D.parameters(), before):
        assert torch.equal(p.detach(), b)
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()


class _OnceDifferentiable(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


def test_op_without_double_backward_gets_actionable_error():
    opt, gan = make(gamma=1.0)
    fake = gan.G(gan.z)
    d_fake = gan.D(_OnceDifferentiable.apply(fake))
    lg = torch.nn.functional.softplus(-d_fake).mean()
    ld = torch.nn.functional.softplus(-gan.D(gan.x)).mean() + torch.nn.functional.softplus(d_fake).mean()
    with pytest.raises(RuntimeError, match="(?s)double backward.*sdpa_kernel.*cudnn.*gamma=0"):
        opt.backward(lg, ld)
    assert all(p.grad is None for p in list(gan.G.parameters()) + list(gan.D.parameters()))


def test_attention_default_kernel_error_names_the_math_backend():
    torch.manual_seed(0)
    q = torch.nn.Linear(8, 8)
    D = torch.nn.Linear(8, 1)
    x = torch.randn(2, 2, 16, 8)  # (batch, heads, seq, dim) float32: the fused CPU flash kernel
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, q.parameters(), D.parameters(), gamma=1.0, lr=0.1)

    def losses():
        h = q(x)
        a = torch.nn.functional.scaled_dot_product_attention(h, h, h)
        out = D(a).mean()
        return out, -out

    with pytest.raises(RuntimeError, match="(?s)does not support them.*SDPBackend.MATH"):
        opt.backward(*losses())
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel(SDPBackend.MATH):
        opt.zero_grad()
        opt.backward(*losses())
    assert q.weight.grad is not None


def test_cdist_double_backward_error_is_explained():
    opt, gan = make(gamma=1.0)
    fake = gan.G(gan.z)
    d_fake = gan.D(fake).squeeze(1)
    lg = torch.nn.functional.softplus(-d_fake).mean() + torch.cdist(fake, gan.x).mean()
    ld = torch.nn.functional.softplus(-gan.D(gan.x)).mean() + torch.nn.functional.softplus(d_fake).mean()
    with pytest.raises(RuntimeError, match="(?s)double backward.*_cdist_backward"):
        opt.backward(lg, ld)


@pytest.mark.parametrize("container", [set, frozenset])
def test_parameters_given_as_a_set_are_refused(container):
    """A set's order (by id) changes between runs, so checkpoints would load into the wrong
    parameters of equal shape; torch.optim refuses sets too."""
    gan = TinyGAN()
    gp, dp = gan.params()
    with pytest.raises(gameopt.GameInputError, match="player 'generator': parameters given as a set"):
        gameopt.ConsensusOptimizer(torch.optim.Adam, container(gp), dp, lr=0.1)
    with pytest.raises(gameopt.GameInputError, match="player 'discriminator': parameters given as a set"):
        gameopt.CompetitiveOptimizer(players={"generator": gp, "discriminator": container(dp)}, lr=0.1)
    with pytest.raises(gameopt.GameInputError, match="parameters given as a set"):
        gameopt.ConsensusOptimizer(torch.optim.Adam, [{"params": container(gp)}], dp, lr=0.1)
