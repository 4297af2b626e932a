"""GradientPenalty and relativistic_losses: closed forms for linear and quadratic
discriminators (values and gradients w.r.t. D's parameters), lazy scaling, the call count
in checkpoints, and every bad input."""

import io
import math
import os

import pytest
import torch
import torch.nn.functional as F

import gameopt

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
DT = torch.float64


class Linear(torch.nn.Module):
    """D(x) = <w, x> + b over every non-batch dimension: grad_x D = w for every sample."""

    def __init__(self, shape, seed=0, out_2d=False):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(shape, generator=g, dtype=DT))
        self.b = torch.nn.Parameter(torch.randn((), generator=g, dtype=DT))
        self.out_2d = out_2d

    def forward(self, x):
        s = (x * self.w).flatten(1).sum(1) + self.b
        return s.unsqueeze(1) if self.out_2d else s


class Quadratic(torch.nn.Module):
    """D(x) = x^T A x + <w, x>: grad_x D = (A + A^T) x + w."""

    def __init__(self, d, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = torch.nn.Parameter(torch.randn(d, d, generator=g, dtype=DT))
        self.w = torch.nn.Parameter(torch.randn(d, generator=g, dtype=DT))

    def forward(self, x):
        return torch.einsum("bi,ij,bj->b", x, self.A, x) + x @ self.w


def data(shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def grads(value, module):
    return torch.autograd.grad(value, list(module.parameters()), allow_unused=True)


@pytest.mark.parametrize("kind,arg", [("r1", "real"), ("r2", "fake")])
@pytest.mark.parametrize("shape,out_2d", [((5, 3), False), ((4, 2, 3, 3), True)])
def test_linear_d_closed_form(kind, arg, shape, out_2d):
    """Linear D: the penalty is gamma/2 ||w||^2 (norm over all non-batch dims), its gradient gamma w, none for b."""
    D = Linear(shape[1:], out_2d=out_2d)
    pen = gameopt.GradientPenalty(kind, gamma=3.0)
    value = pen(D, **{arg: data(shape)})
    assert value.shape == () and value.dtype == DT
    torch.testing.assert_close(value, 1.5 * D.w.detach().pow(2).sum(), rtol=1e-13, atol=0)
    gw, gb = grads(value, D)
    torch.testing.assert_close(gw, 3.0 * D.w.detach(), rtol=1e-13, atol=0)
    assert gb is None or torch.all(gb == 0)


def test_quadratic_d_r1_closed_form():
    """R1 = gamma/2 mean ||S x_i + w||^2 with S = A + A^T; d/dw = gamma mean r_i, d/dA = gamma mean (r_i x_i^T + x_i r_i^T)."""
    D, x, gamma = Quadratic(3), data((6, 3)), 0.7
    value = gameopt.GradientPenalty("r1", gamma=gamma)(D, real=x)
    S = (D.A + D.A.T).detach()
    r = x @ S.T + D.w.detach()
    torch.testing.assert_close(value, gamma / 2 * r.pow(2).sum(1).mean(), rtol=1e-13, atol=0)
    gA, gw = grads(value, D)
    torch.testing.assert_close(gw, gamma * r.mean(0), rtol=1e-12, atol=1e-14)
    want_A = gamma * (torch.einsum("bi,bj->ij", r, x) + torch.einsum("bi,bj->ij", x, r)) / x.shape[0]
    torch.testing.assert_close(gA, want_A, rtol=1e-12, atol=1e-14)


def test_quadratic_d_wgan_gp_closed_form():
    """WGAN-GP = gamma mean (||r_i|| - 1)^2 at x_hat = eps real + (1 - eps) fake, eps from the given generator."""
    D, real, fake, gamma = Quadratic(3), data((6, 3), 1), data((6, 3), 2), 10.0
    pen = gameopt.GradientPenalty("wgan-gp", gamma=gamma, generator=torch.Generator().manual_seed(7))
    value = pen(D, real=real, fake=fake)
    eps = torch.rand((6, 1), generator=torch.Generator().manual_seed(7), dtype=DT)
    assert ((eps > 0) & (eps < 1)).all() and eps.std() > 0.1   # per sample, not one eps
    x_hat = eps * real + (1 - eps) * fake
    r = x_hat @ (D.A + D.A.T).detach().T + D.w.detach()
    n = r.norm(dim=1)
    torch.testing.assert_close(value, gamma * (n - 1).pow(2).mean(), rtol=1e-13, atol=0)
    _, gw = grads(value, D)
    torch.testing.assert_close(gw, 2 * gamma * ((n - 1) / n).unsqueeze(1).mul(r).mean(0), rtol=1e-12, atol=1e-14)


def test_linear_d_wgan_gp_closed_form():
    D = Linear((4,))
    value = gameopt.GradientPenalty("wgan-gp", gamma=2.0)(D, real=data((5, 4), 1), fake=data((5, 4), 2))
    n = D.w.detach().norm()
    torch.testing.assert_close(value, 2.0 * (n - 1) ** 2, rtol=1e-13, atol=0)
    gw, _ = grads(value, D)
    torch.testing.assert_close(gw, 4.0 * (n - 1) * D.w.detach() / n, rtol=1e-12, atol=0)


def test_gradient_reaches_only_d_and_inputs_are_untouched():
    G = torch.nn.Linear(2, 3).double()
    D = Quadratic(3)
    z = data((4, 2))
    fake = G(z)
    x = data((4, 3)).requires_grad_(True)
    before = x.detach().clone()
    loss = gameopt.GradientPenalty("r2")(D, fake=fake) + gameopt.GradientPenalty("r1")(D, real=x)
    loss.backward()
    assert all(p.grad is None for p in G.parameters())
    assert x.grad is None and torch.equal(x.detach(), before)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters())


class Counting(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_lazy_penalty_is_every_kth_call_times_k_and_skips_d_otherwise():
    D = Counting(Quadratic(3))
    x = data((5, 3))
    eager = gameopt.GradientPenalty("r1", gamma=2.0)(D, real=x).detach()
    D.calls = 0
    lazy = gameopt.GradientPenalty("r1", gamma=2.0, every=3)
    got = []
    for i in range(7):
        assert lazy.computes_next == (i % 3 == 0)
        got.append(lazy(D, real=x))
    assert D.calls == 3 and lazy.calls == 7
    for i, v in enumerate(got):
        if i % 3 == 0:
            torch.testing.assert_close(v.detach(), 3 * eager, rtol=1e-14, atol=0)
            assert v.requires_grad
        else:
            assert v.shape == () and v.item() == 0.0 and not v.requires_grad and v.dtype == DT
    # the mean over a full period is the eager penalty
    torch.testing.assert_close(sum(v.detach() for v in got[:3]) / 3, eager, rtol=1e-14, atol=0)


def test_call_count_checkpoint_resumes_the_lazy_schedule():
    D, x = Quadratic(3), data((5, 3))
    a = gameopt.GradientPenalty("r2", gamma=1.0, every=4)
    for _ in range(5):
        a(D, fake=x)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = gameopt.GradientPenalty("r2", gamma=5.0, every=2)   # settings come from the checkpoint
    b.load_state_dict(torch.load(buf))
    assert b.state_dict() == a.state_dict() == {"kind": "r2", "gamma": 1.0, "every": 4, "calls": 5}
    for _ in range(6):
        va, vb = a(D, fake=x), b(D, fake=x)
        assert torch.equal(va, vb)
    assert a.calls == b.calls == 11


@pytest.mark.parametrize("bad", [
    {"kind": "r1", "gamma": 1.0, "every": 4},                            # missing key
    {"kind": "r1", "gamma": 1.0, "every": 4, "calls": 2, "x": 0},        # extra key
    {"kind": "r2", "gamma": 1.0, "every": 4, "calls": 2},                # another kind
    {"kind": "r1", "gamma": -1.0, "every": 4, "calls": 2},
    {"kind": "r1", "gamma": 1.0, "every": 0, "calls": 2},
    {"kind": "r1", "gamma": 1.0, "every": 4, "calls": -1},
    {"kind": "r1", "gamma": 1.0, "every": 4, "calls": 1.5},
    [("calls", 1)],
])
def test_bad_checkpoint_is_refused_and_changes_nothing(bad):
    pen = gameopt.GradientPenalty("r1", gamma=3.0, every=2)
    pen(Quadratic(3), real=data((2, 3)))
    before = pen.state_dict()
    with pytest.raises(gameopt.GameInputError):
        pen.load_state_dict(bad)
    assert pen.state_dict() == before


@pytest.mark.parametrize("kw,match", [
    ({"kind": "r3"}, r"unknown gradient penalty 'r3'.*\['r1', 'r2', 'wgan-gp'\]"),
    ({"kind": None}, "unknown gradient penalty"),
    ({"kind": "r1", "gamma": -1.0}, "gamma must be a finite number >= 0"),
    ({"kind": "r1", "gamma": float("nan")}, "gamma must be a finite number >= 0"),
    ({"kind": "r1", "gamma": float("inf")}, "gamma must be a finite number >= 0"),
    ({"kind": "r1", "gamma": "10"}, "gamma must be a finite number >= 0"),
    ({"kind": "r1", "every": 0}, "every must be an integer >= 1"),
    ({"kind": "r1", "every": -3}, "every must be an integer >= 1"),
    ({"kind": "r1", "every": 2.5}, "every must be an integer >= 1"),
    ({"kind": "r1", "every": True}, "every must be an integer >= 1"),
    ({"kind": "wgan-gp", "generator": 0}, "generator must be a torch.Generator"),
])
def test_bad_construction(kw, match):
    with pytest.raises(gameopt.GameInputError, match=match):
        gameopt.GradientPenalty(**kw)


def test_kind_is_case_insensitive_and_gamma_zero_is_allowed():
    pen = gameopt.GradientPenalty("R1", gamma=0)
    assert pen.kind == "r1" and pen(Quadratic(3), real=data((2, 3))).item() == 0.0


@pytest.mark.parametrize("kind,kw,match", [
    ("r1", {}, r"'r1' penalty needs real samples: call pen\(D, real=\.\.\.\)"),
    ("r1", {"fake": data((4, 3))}, "needs real samples"),
    ("r2", {"real": data((4, 3))}, r"'r2' penalty needs fake samples: call pen\(D, fake=\.\.\.\)"),
    ("r1", {"real": data((4, 3)), "fake": data((4, 3))}, r"does not use fake samples.*GradientPenalty\('r2'\)"),
    ("r2", {"real": data((4, 3)), "fake": data((4, 3))}, r"does not use real samples.*GradientPenalty\('r1'\)"),
    ("wgan-gp", {"real": data((4, 3))}, r"needs fake samples: call pen\(D, real=\.\.\., fake=\.\.\.\)"),
    ("wgan-gp", {"fake": data((4, 3))}, "needs real samples"),
    ("wgan-gp", {"real": data((4, 3)), "fake": data((5, 3))}, r"same shape.*\(4, 3\).*\(5, 3\)"),
    ("r1", {"real": torch.ones(4, 3, dtype=torch.long)}, "floating-point tensor"),
    ("r1", {"real": [[0.0, 1.0, 2.0]]}, "floating-point tensor.*list"),
    ("r1", {"real": torch.tensor(1.0, dtype=DT)}, "floating-point tensor"),
    ("r1", {"real": data((4, 3)), "scaler": object()}, "scaler must be the torch.amp.GradScaler"),
])
def test_missing_or_bad_samples(kind, kw, match):
    pen = gameopt.GradientPenalty(kind, every=2)
    with pytest.raises(gameopt.GameInputError, match=match):
        pen(Quadratic(3), **kw)
    assert pen.calls == 0   # a refused call does not advance the lazy schedule


@pytest.mark.parametrize("D,match", [
    (lambda x: x @ torch.ones(3, 2, dtype=DT), r"one score per sample, shape \(4,\) or \(4, 1\), got shape \(4, 2\)"),
    (lambda x: (x @ torch.ones(3, dtype=DT)).sum(), r"one score per sample.*got shape \(\)"),
    (lambda x: (x @ torch.ones(3, dtype=DT))[:2], r"one score per sample.*got shape \(2,\)"),
    (lambda x: x.sum(1).reshape(4, 1, 1), r"one score per sample.*got shape \(4, 1, 1\)"),
    (lambda x: (x.sum(1), x.sum(1)), "one score per sample.*tuple"),
    (lambda x: x.sum(1).detach(), "do not depend on its input"),
    (lambda x: torch.zeros(4, dtype=DT, requires_grad=True) * 2, "do not depend on its input"),
])
def test_d_output_not_one_score_per_sample(D, match):
    pen = gameopt.GradientPenalty("r1", every=2)
    with pytest.raises(gameopt.GameInputError, match=match):
        pen(D, real=data((4, 3)))
    assert pen.calls == 0   # a refused call does not advance the lazy schedule


def test_no_grad_context_is_explained():
    with torch.no_grad(), pytest.raises(gameopt.GameInputError, match="torch.no_grad"):
        gameopt.GradientPenalty("r1")(Quadratic(3), real=data((4, 3)))


class _OnceDifferentiable(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        return g * 2


def test_once_differentiable_d_is_refused_at_the_call():
    D = Quadratic(3)
    with pytest.raises(gameopt.GameInputError, match="(?s)second derivatives.*once_differentiable"):
        gameopt.GradientPenalty("r1")(lambda x: D(_OnceDifferentiable.apply(x)), real=data((4, 3)))


def test_fused_attention_is_refused_and_the_math_kernel_works():
    torch.manual_seed(0)
    q, head = torch.nn.Linear(8, 8), torch.nn.Linear(8, 1)

    def D(x):   # (batch, heads, seq, dim) float32: the fused CPU flash kernel
        h = q(x)
        return head(F.scaled_dot_product_attention(h, h, h)).mean((1, 2, 3))

    x = torch.randn(2, 2, 16, 8)
    pen = gameopt.GradientPenalty("r1")
    with pytest.raises(gameopt.GameInputError, match="(?s)second derivatives.*SDPBackend.MATH"):
        pen(D, real=x)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel(SDPBackend.MATH):
        pen(D, real=x).backward()
    assert q.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_d_is_refused_naming_the_uncompiled_module(backend):
    torch._dynamo.reset()
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    D = torch.compile(plain, backend=backend)
    x = torch.randn(4, 3)
    with pytest.raises(gameopt.GameInputError, match="(?s)torch.compile.*_orig_mod"):
        gameopt.GradientPenalty("r1")(D, real=x)
    gameopt.GradientPenalty("r1")(D._orig_mod, real=x).backward()   # the fix works
    assert plain[0].weight.grad is not None


def test_relativistic_losses_closed_form_and_gradients():
    d_real = data((6,), 1).requires_grad_(True)
    d_fake = data((6,), 2).requires_grad_(True)
    gen_loss, disc_loss = gameopt.relativistic_losses(d_real, d_fake)
    diff = (d_real - d_fake).detach()
    torch.testing.assert_close(disc_loss, F.softplus(-diff).mean(), rtol=1e-14, atol=0)
    torch.testing.assert_close(gen_loss, F.softplus(diff).mean(), rtol=1e-14, atol=0)
    # d disc_loss / d d_real_i = -sigmoid(-diff_i) / B = -d disc_loss / d d_fake_i
    gr, gf = torch.autograd.grad(disc_loss, (d_real, d_fake))
    torch.testing.assert_close(gr, -torch.sigmoid(-diff) / 6, rtol=1e-14, atol=0)
    torch.testing.assert_close(gf, torch.sigmoid(-diff) / 6, rtol=1e-14, atol=0)
    # (B, 1) logits give the same values
    g2, d2 = gameopt.relativistic_losses(d_real.unsqueeze(1), d_fake.unsqueeze(1))
    assert torch.equal(g2, gen_loss) and torch.equal(d2, disc_loss)
    # equal logits: both losses log 2
    g0, d0 = gameopt.relativistic_losses(torch.zeros(3), torch.zeros(3))
    assert g0.item() == pytest.approx(math.log(2)) and d0.item() == pytest.approx(math.log(2))


@pytest.mark.parametrize("d_real,d_fake,match", [
    (torch.zeros(4), torch.zeros(5), r"same shape.*\(4,\) and \(5,\)"),
    (torch.zeros(4, 1), torch.zeros(4), "same shape"),
    (torch.zeros(4, 2), torch.zeros(4, 2), r"one logit per sample.*\(4, 2\)"),
    (torch.zeros(()), torch.zeros(()), "one logit per sample"),
    (torch.zeros(4, dtype=torch.long), torch.zeros(4), "floating-point tensor"),
    ([0.0], torch.zeros(1), "floating-point tensor.*list"),
])
def test_relativistic_losses_bad_input(d_real, d_fake, match):
    with pytest.raises(gameopt.GameInputError, match=match):
        gameopt.relativistic_losses(d_real, d_fake)


def test_lazy_adam_settings():
    got = gameopt.lazy_adam_settings(2e-3, (0.0, 0.99), every=16)
    c = 16 / 17
    assert got["lr"] == pytest.approx(2e-3 * c, rel=1e-15)
    assert got["betas"] == (0.0, pytest.approx(0.99 ** c, rel=1e-15))
    torch.optim.Adam([torch.zeros(1, requires_grad=True)], **got)   # usable as Adam's keywords
    for args, match in [((0.0, (0.0, 0.99), 4), "lr must be"), ((float("nan"), (0.0, 0.99), 4), "lr must be"),
                        ((1e-3, (0.0, 1.0), 4), "betas must be"), ((1e-3, (0.9,), 4), "betas must be"),
                        ((1e-3, (0.0, 0.99), 0), "every must be")]:
        with pytest.raises(gameopt.GameInputError, match=match):
            gameopt.lazy_adam_settings(*args)
