"""The NaN/Inf policy holds for exactly what the base optimiser would apply."""

import math
import warnings

import pytest
import torch

import gameopt
from conftest import TinyGAN


def _params(gan):
    return [p for ps in gan.params() for p in ps]


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _unchanged(params, before):
    return all(torch.equal(p.detach(), b) for p, b in zip(params, before))


def _nan_losses(gan):
    lg, ld = gan.losses()
    return lg * float("nan"), ld


def _make(gamma=1.0, base=torch.optim.Adam, **kw):
    gan = TinyGAN(seed=1)
    opt = gameopt.ConsensusOptimizer(base, *gan.params(), gamma=gamma, lr=1e-2, **kw)
    return opt, gan


def _train_step(opt, gan):
    opt.zero_grad()
    opt.backward(*gan.losses())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_step_again_after_a_skip_without_new_backward_skips_again(gamma):
    opt, gan = _make(gamma)
    _train_step(opt, gan)
    params = _params(gan)
    before, state = _snapshot(params), {k: dict(v) for k, v in opt.state.items()}
    opt.zero_grad()
    opt.backward(*_nan_losses(gan))
    for count in (1, 2):  # the stale NaN p.grad must not be applied by a second step()
        with pytest.warns(RuntimeWarning, match="non-finite"):
            opt.step()
        assert opt.skipped_steps == count and opt.last_step_skipped
    assert _unchanged(params, before)
    assert all(torch.equal(opt.state[p]["exp_avg"], state[p]["exp_avg"]) for p in params)


def test_accumulated_backward_with_nan_first_is_skipped():
    opt, gan = _make()
    params = _params(gan)
    before = _snapshot(params)
    opt.zero_grad()
    opt.backward(*_nan_losses(gan))
    opt.backward(*gan.losses())  # accumulates on top of the NaN, no zero_grad
    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step()
    assert _unchanged(params, before) and len(opt.state) == 0


def test_nan_from_plain_backward_or_written_between_backward_and_step_is_skipped():
    opt, gan = _make()
    params = _params(gan)
    before = _snapshot(params)
    opt.zero_grad()
    (gan.losses()[0] * float("nan")).backward()  # plain autograd, not opt.backward
    with pytest.warns(RuntimeWarning, match=r"\['generator'"):
        opt.step()
    opt.zero_grad()
    opt.backward(*gan.losses())
    params[-1].grad[0] = float("inf")  # e.g. a hook or user code
    with pytest.warns(RuntimeWarning, match=r"\['discriminator'\]"):
        opt.step()
    assert _unchanged(params, before) and opt.skipped_steps == 2


def _fp16_bilinear(a=10.0, x=65.0, y=60.0):
    """gen_loss = a x y = -disc_loss: v = (a y, -a x), grad(1/2||v||^2) = (a^2 x, a^2 y)."""
    xs = torch.nn.Parameter(torch.tensor([x], dtype=torch.float16))
    ys = torch.nn.Parameter(torch.tensor([y], dtype=torch.float16))

    def losses():
        gen = (a * xs * ys).sum()
        return gen, -gen
    return xs, ys, losses


def test_v_and_regulariser_finite_but_their_fp16_sum_overflows_is_skipped():
    xs, ys, losses = _fp16_bilinear()
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, [xs], [ys], gamma=10.0, lr=1e-6)
    opt.zero_grad()
    stats = opt.backward(*losses())
    # v_x = a y = 600 and gamma (v'^T v)_x = 10 a^2 x = 65000 are finite in fp16 ...
    assert bool(stats.finite)
    assert not torch.isfinite(xs.grad).all()  # ... but their sum, 65600, is not
    assert torch.isfinite(ys.grad).all()
    with pytest.warns(RuntimeWarning, match=r"non-finite.*\['generator'\]"):
        opt.step()
    assert xs.item() == 65.0 and ys.item() == 60.0 and opt.skipped_steps == 1


def test_fp16_gradients_with_a_huge_l2_norm_but_finite_entries_are_applied():
    w = torch.nn.Parameter(torch.zeros(4, dtype=torch.float16))
    u = torch.nn.Parameter(torch.zeros(1, dtype=torch.float16))
    opt = gameopt.SimultaneousOptimizer(torch.optim.SGD, [w], [u], lr=1e-6)
    opt.zero_grad()
    opt.backward((w * 40000.0).sum() + (u * w).sum(), (u * u).sum() - (u * w).sum())
    assert torch.isfinite(w.grad).all() and math.isinf(float(w.grad.norm()))  # L2 norm 80000 > 65504
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()
    assert not opt.last_step_skipped and opt.skipped_steps == 0
    assert (w.detach() < 0).all()


def test_grad_scaler_at_a_huge_scale_decides_and_training_proceeds():
    """The float32 L2 norm of s v overflows at s = 2^100; the scaler sees finite gradients."""
    gan = TinyGAN(seed=3, dtype=torch.float32)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=1.0, lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)
    params = _params(gan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            before = _snapshot(params)
            opt.zero_grad()
            lg, ld = gan.losses()
            opt.backward(scaler.scale(lg), scaler.scale(ld), scaler=scaler)
            scaler.step(opt)
            scaler.update()
            assert not _unchanged(params, before)
    assert opt.skipped_steps == 0 and scaler.get_scale() == 2.0**100


def test_grad_scaler_that_overflows_backs_off_then_steps():
    gan = TinyGAN(seed=3, dtype=torch.float32)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=1.0, lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # s v overflows float32
    params = _params(gan)
    taken = 0
    for _ in range(40):
        before = _snapshot(params)
        opt.zero_grad()
        lg, ld = (1e3 * loss for loss in gan.losses())
        opt.backward(scaler.scale(lg), scaler.scale(ld), scaler=scaler)
        scaler.step(opt)  # the scaler's own inf check skips; gameopt never sees those steps
        scaler.update()
        taken += not _unchanged(params, before)
        if taken == 3:
            break
    assert taken == 3 and scaler.get_scale() < 2.0**127
    assert opt.skipped_steps == 0
    assert all(torch.isfinite(p).all() for p in params)


def test_lr_schedule_producing_nan_skips_the_step():
    opt, gan = _make(base=torch.optim.SGD)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if s < 1 else float("nan"))
    _train_step(opt, gan)
    sched.step()
    params = _params(gan)
    before = _snapshot(params)
    opt.zero_grad()
    opt.backward(*gan.losses())
    with pytest.warns(RuntimeWarning, match=r"non-finite learning rate for generator \(lr=nan\)"):
        opt.step()
    assert _unchanged(params, before) and opt.skipped_steps == 1


def test_tensor_lr_that_is_nan_skips_the_step():
    opt, gan = _make(base=torch.optim.SGD)
    opt.param_groups[1]["lr"] = torch.tensor(float("nan"))
    params = _params(gan)
    before = _snapshot(params)
    opt.zero_grad()
    opt.backward(*gan.losses())
    with pytest.warns(RuntimeWarning, match="learning rate for discriminator"):
        opt.step()
    assert _unchanged(params, before)


def test_raise_names_the_players_and_changes_nothing():
    opt, gan = _make(nonfinite="raise")
    params = _params(gan)
    before = _snapshot(params)
    opt.zero_grad()
    opt.backward(*_nan_losses(gan))
    with pytest.raises(FloatingPointError, match=r"\['generator'"):
        opt.step()
    assert _unchanged(params, before) and len(opt.state) == 0 and opt.skipped_steps == 0


def test_ignore_applies_what_it_is_given():
    opt, gan = _make(nonfinite="ignore", base=torch.optim.SGD)
    opt.zero_grad()
    opt.backward(*_nan_losses(gan))
    opt.step()
    assert not torch.isfinite(gan.G[0].weight).all()
    assert opt.skipped_steps == 0


class _HostReads:
    """Counts reads of tensor values on the host (the syncs a GPU step would pay)."""

    names = ("__bool__", "item", "__float__", "__int__", "tolist")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.names:
            original = getattr(torch.Tensor, name)

            def counted(t, *a, _original=original, **k):
                self.count += 1
                return _original(t, *a, **k)
            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.mark.parametrize("policy,reads", [("skip", 1), ("ignore", 0)])
@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_host_reads_per_step(monkeypatch, policy, reads, gamma):
    opt, gan = _make(gamma, base=torch.optim.SGD, nonfinite=policy)  # CPU Adam reads its step count
    _train_step(opt, gan)  # the first step checks the graph once
    counter = _HostReads(monkeypatch)
    for _ in range(3):
        opt.zero_grad()
        opt.backward(*gan.losses())
        opt.step()
        opt.step(gan.losses)
    assert counter.count == 6 * reads


def test_alternating_raise_and_skip_leave_no_nan_in_p_grad():
    for policy in ("raise", "skip"):
        gan = TinyGAN(seed=9)
        opt = gameopt.AlternatingOptimizer(torch.optim.SGD, *gan.params(), lr=0.1, nonfinite=policy)
        opt.step(gan.losses)
        stepped_on = [p.grad.clone() for p in _params(gan)]
        before = _snapshot(_params(gan))
        bad = lambda: (gan.losses()[0], gan.losses()[1] * float("nan"))  # noqa: E731
        if policy == "raise":
            with pytest.raises(FloatingPointError, match=r"\['discriminator'\]"):
                opt.step(bad)
            assert _unchanged(_params(gan), before)
        else:
            with pytest.warns(RuntimeWarning, match=r"\['discriminator'\]"):
                opt.step(bad)  # the discriminator skips, the generator steps
            assert opt.last_step_skipped and opt.skipped_steps == 1
        for p, g in zip(gan.D.parameters(), stepped_on[len(list(gan.G.parameters())):]):
            assert torch.isfinite(p.grad).all() and torch.equal(p.grad, g)


def test_a_subclass_built_on_apply_base_step_gets_the_policy_and_the_hooks():
    """The template new step rules follow: write p.grad, then call _apply_base_step."""

    class HalfStep(gameopt.GameOptimizer):
        def __init__(self, base, players, **kw):
            super().__init__(base, players, **kw)

        def step(self, closure=None):
            losses = closure()
            for loss, player in zip(losses, self.players):
                ps = self.player_params(player)
                for p, g in zip(ps, torch.autograd.grad(loss, ps, retain_graph=True)):
                    p.grad = 0.5 * g
            self._apply_base_step()
            return losses

    gan = TinyGAN(seed=10)
    opt = HalfStep(torch.optim.SGD, {"generator": gan.G.parameters(), "discriminator": gan.D.parameters()}, lr=0.1)
    posts = []
    opt.register_step_post_hook(lambda *a: posts.append(1))
    opt.step(gan.losses)
    assert posts == [1]
    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step(lambda: _nan_losses(gan))
    assert posts == [1] and opt.skipped_steps == 1
