"""Hugging Face accelerate: ``G, D, opt = accelerator.prepare(G, D, opt)``, then
``gameopt.backward(opt, gen_loss, disc_loss)`` and ``opt.step()``, in one process on CPU."""

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.state import AcceleratorState, GradientState

import gameopt
from conftest import mlp

BATCH, LR = 16, 1e-2


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one process-wide state; each test builds its own Accelerator."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def players(seed=0):
    return mlp([3, 8, 2], seed, torch.float32), mlp([2, 8, 1], seed + 1, torch.float32)


def make_optimizer(G, D, gamma=1.0):
    return gameopt.ConsensusOptimizer(torch.optim.Adam, G.parameters(), D.parameters(), gamma=gamma, lr=LR)


def losses(G, D, x, z):
    d_fake = D(G(z))
    return F.softplus(-d_fake).mean(), F.softplus(-D(x)).mean() + F.softplus(d_fake).mean()


def draw_batch():
    """Drawn from the global RNG, so a resumed run needs accelerate to restore it."""
    return torch.randn(BATCH, 2) + 1, torch.randn(BATCH, 3)


def flat(ts):
    return torch.cat([t.detach().reshape(-1) for t in ts])


def train(accelerator, G, D, opt, steps, sched=None, autocast=None, scaler=None):
    """Train ``steps`` steps; with ``accelerator`` None, the plain loop to compare with."""
    for _ in range(steps):
        x, z = draw_batch()
        with torch.autocast("cpu", dtype=autocast or torch.float32, enabled=autocast is not None):
            gen_loss, disc_loss = losses(G, D, x, z)
        opt.zero_grad()
        if accelerator is not None:
            gameopt.backward(opt, gen_loss, disc_loss)
            opt.step()
        elif scaler is not None:
            opt.backward(scaler.scale(gen_loss), scaler.scale(disc_loss), scaler=scaler)
            scaler.step(opt)
            scaler.update()
        else:
            opt.backward(gen_loss, disc_loss)
            opt.step()
        if sched is not None:
            sched.step()
    return flat([*G.parameters(), *D.parameters()])


def plain(steps, seed=1, **kw):
    torch.manual_seed(seed)
    G, D = players()
    opt = make_optimizer(G, D)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5) if kw.pop("scheduler", False) else None
    return train(None, G, D, opt, steps, sched=sched, **kw)


def test_prepared_optimizer_trains_like_the_plain_loop():
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(1)
    G, D = players()
    G, D, opt = accelerator.prepare(G, D, make_optimizer(G, D))
    assert isinstance(opt, AcceleratedOptimizer) and not hasattr(opt, "backward")
    got = train(accelerator, G, D, opt, 4)
    assert torch.equal(got, plain(4))
    assert opt.optimizer.skipped_steps == 0


def test_bf16_autocast_tracks_fp32():
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    torch.manual_seed(1)
    G, D = players()
    start = flat([*G.parameters(), *D.parameters()])
    G, D, opt = accelerator.prepare(G, D, make_optimizer(G, D))
    dtypes = []
    G[0].register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    got = train(accelerator, G, D, opt, 3)
    assert dtypes and set(dtypes) == {torch.bfloat16}  # accelerate's autocast was on
    want = plain(3)
    assert torch.isfinite(got).all()
    assert float((got - want).norm()) < 0.05 * float((want - start).norm())


def test_fp16_grad_scaler_path_equals_plain_scaler_loop():
    """accelerate creates a GradScaler for fp16 only on GPUs (mixed_precision="fp16" on CPU trains in
    fp32 with no scaler), so the CPU test gives the Accelerator a real CPU GradScaler before prepare:
    AcceleratedOptimizer.step then runs its scaler path, and gameopt.backward must scale the losses
    with that scaler, exactly as the plain GradScaler loop does."""
    accelerator = Accelerator(cpu=True)
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    torch.manual_seed(1)
    G, D = players()
    G, D, opt = accelerator.prepare(G, D, make_optimizer(G, D))
    assert opt.scaler is accelerator.scaler
    got = train(accelerator, G, D, opt, 4, autocast=torch.float16)
    ref_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    assert torch.equal(got, plain(4, autocast=torch.float16, scaler=ref_scaler))
    assert accelerator.scaler.get_scale() == ref_scaler.get_scale()


def test_fp16_overflow_is_skipped_by_the_scaler():
    accelerator = Accelerator(cpu=True)
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)  # overflows fp16 at first
    torch.manual_seed(1)
    G, D = players()
    G, D, opt = accelerator.prepare(G, D, make_optimizer(G, D))
    before = flat([*G.parameters(), *D.parameters()])
    train(accelerator, G, D, opt, 1, autocast=torch.float16)
    assert opt.step_was_skipped and accelerator.scaler.get_scale() == 2.0**39
    assert torch.equal(flat([*G.parameters(), *D.parameters()]), before)


@pytest.mark.parametrize("scaled", [False, True])
def test_save_state_load_state_resumes_bit_for_bit(tmp_path, scaled):
    """accelerator.save_state / load_state (models, gameopt's state, scheduler, RNG, loss scale)."""
    def run(steps, seed, load=None, save=None):
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        accelerator = Accelerator(cpu=True)
        if scaled:
            accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
        torch.manual_seed(1)
        G, D = players(seed)
        opt = make_optimizer(G, D)
        sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
        G, D, opt, sched = accelerator.prepare(G, D, opt, sched)
        if load:
            accelerator.load_state(load)
        out = train(accelerator, G, D, opt, steps, sched=sched, autocast=torch.float16 if scaled else None)
        if save:
            accelerator.save_state(save)
        return out, opt.optimizer, accelerator

    full, full_opt, full_acc = run(6, seed=0)
    run(3, seed=0, save=tmp_path / "state")
    resumed, resumed_opt, resumed_acc = run(3, seed=9, load=tmp_path / "state")  # other weights
    assert torch.equal(resumed, full)
    a, b = resumed_opt.state_dict(), full_opt.state_dict()
    assert a["param_groups"] == b["param_groups"] and a["gameopt"] == b["gameopt"]
    for key in a["state"]:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(a["state"][key][name], b["state"][key][name])
    if scaled:
        assert resumed_acc.scaler.get_scale() == full_acc.scaler.get_scale()


def test_nan_gradient_is_skipped_through_the_wrapper():
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(1)
    G, D = players()
    G, D, opt = accelerator.prepare(G, D, make_optimizer(G, D))
    before = flat([*G.parameters(), *D.parameters()])
    x, z = draw_batch()
    x[0, 0] = float("nan")
    opt.zero_grad()
    gameopt.backward(opt, *losses(G, D, x, z))
    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step()
    assert opt.optimizer.skipped_steps == 1 and not opt.optimizer.state
    assert torch.equal(flat([*G.parameters(), *D.parameters()]), before)


def test_gradient_accumulation_is_refused():
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    torch.manual_seed(1)
    G, D = players()
    G, D, opt = accelerator.prepare(G, D, make_optimizer(G, D))
    grads_before = [p.grad for p in G.parameters()]
    with pytest.raises(gameopt.GameInputError, match="gradient_accumulation_steps=2"):
        gameopt.backward(opt, *losses(G, D, *draw_batch()))
    assert grads_before == [p.grad for p in G.parameters()] == [None] * len(grads_before)


def test_a_prepared_plain_optimizer_is_named_in_the_error():
    accelerator = Accelerator(cpu=True)
    G, D = players()
    G, D, opt = accelerator.prepare(G, D, torch.optim.SGD([*G.parameters(), *D.parameters()], lr=0.1))
    with pytest.raises(gameopt.GameInputError, match="AcceleratedOptimizer -> SGD"):
        gameopt.backward(opt, *losses(G, D, *draw_batch()))
