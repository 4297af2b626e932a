"""PyTorch Lightning, manual optimisation (the way Lightning's GAN examples train), with a real Trainer.

Every run is compared with the same game trained by a plain loop: the Trainer must add
nothing to gameopt's step (fp32 and bf16: bit for bit), and in fp16 its GradScaler must
see gradients scaled consistently (the loop uses the same scaler the same way).
"""

import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.precision import MixedPrecision

import gameopt
from conftest import mlp

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers.*", "ignore:.*isinstance\\(treespec, LeafSpec\\).*",
    "ignore:.*number of training batches.*",
)

BATCH, N_BATCHES = 16, 4
LR = 1e-2


def game_data(n_batches=N_BATCHES, nan_batch=None):
    """Fixed (x, z) batches, so no random numbers are drawn inside training_step."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n_batches * BATCH, 2, generator=g) + 1
    z = torch.randn(n_batches * BATCH, 3, generator=g)
    if nan_batch is not None:
        x[nan_batch * BATCH] = float("nan")
    return x, z


def loader(x, z):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, z), batch_size=BATCH, shuffle=False)


def losses(G, D, x, z):
    d_fake = D(G(z))
    return F.softplus(-d_fake).mean(), F.softplus(-D(x)).mean() + F.softplus(d_fake).mean()


def make_optimizer(G, D, gamma):
    return gameopt.ConsensusOptimizer(torch.optim.Adam, G.parameters(), D.parameters(), gamma=gamma, lr=LR)


def make_scheduler(opt):
    return torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)


def flat(ts):
    return torch.cat([t.detach().reshape(-1) for t in ts])


class GameModule(L.LightningModule):
    """A consensus GAN trained the Lightning-GAN-example way: opt.zero_grad/backward/step."""

    def __init__(self, route="method", gamma=1.0, scheduler=False, seed=0):
        super().__init__()
        self.G = mlp([3, 8, 2], seed, torch.float32)
        self.D = mlp([2, 8, 1], seed + 1, torch.float32)
        self.automatic_optimization = False
        self.route, self.gamma, self.scheduler = route, gamma, scheduler
        self.seen_grads: list[torch.Tensor] = []

    def configure_optimizers(self):
        opt = make_optimizer(self.G, self.D, self.gamma)
        if self.scheduler:
            return {"optimizer": opt, "lr_scheduler": make_scheduler(opt)}
        return opt

    def training_step(self, batch, batch_idx):
        x, z = batch
        gen_loss, disc_loss = losses(self.G, self.D, x, z)
        opt = self.optimizers()
        opt.zero_grad()
        if self.route == "method":
            opt.backward(gen_loss, disc_loss)
        else:
            gameopt.backward(opt, gen_loss, disc_loss)
        opt.step()
        if self.scheduler:
            self.lr_schedulers().step()

    def on_before_optimizer_step(self, optimizer):
        self.seen_grads.append(flat(p.grad for p in self.parameters()).clone())

    def params(self):
        return flat(self.parameters())


def trainer(max_steps, tmp_path=None, **kw):
    return L.Trainer(
        max_steps=max_steps, accelerator="cpu", devices=1, enable_progress_bar=False, logger=False,
        enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path, **kw,
    )


def plain_loop(steps, gamma=1.0, autocast=None, scaler=None, scheduler=False, data=None):
    """The same game in a plain torch loop; returns the parameters and the gradients each step applied."""
    G, D = mlp([3, 8, 2], 0, torch.float32), mlp([2, 8, 1], 1, torch.float32)
    opt = make_optimizer(G, D, gamma)
    sched = make_scheduler(opt) if scheduler else None
    x, z = data if data is not None else game_data()
    grads = []
    for step in range(steps):
        i = step % N_BATCHES
        xb, zb = x[i * BATCH:(i + 1) * BATCH], z[i * BATCH:(i + 1) * BATCH]
        # as Lightning's precision plugin does: no cast cache, so each use of a weight casts it anew
        with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None, cache_enabled=False):
            gen_loss, disc_loss = losses(G, D, xb, zb)
            opt.zero_grad()
            if scaler is None:
                opt.backward(gen_loss, disc_loss)
            else:
                opt.backward(scaler.scale(gen_loss), scaler.scale(disc_loss), scaler=scaler)
        if scaler is None:
            grads.append(flat(p.grad for p in [*G.parameters(), *D.parameters()]).clone())
            opt.step()
        else:
            scaler.unscale_(opt)
            grads.append(flat(p.grad for p in [*G.parameters(), *D.parameters()]).clone())
            scaler.step(opt)
            scaler.update()
        if sched is not None:
            sched.step()
    return flat([*G.parameters(), *D.parameters()]), grads, opt


@pytest.mark.parametrize("route", ["method", "gameopt.backward"])
def test_manual_optimisation_fp32_equals_plain_loop(route):
    """opt.backward / gameopt.backward + opt.step inside training_step, unchanged: a real Trainer
    run equals the plain loop bit for bit, and on_before_optimizer_step sees the applied gradients."""
    steps = 5
    module = GameModule(route=route)
    t = trainer(steps)
    t.fit(module, loader(*game_data()))
    want, want_grads, want_opt = plain_loop(steps)
    assert t.global_step == steps
    assert torch.equal(module.params(), want)
    assert len(module.seen_grads) == steps
    for got, ref in zip(module.seen_grads, want_grads):
        assert torch.equal(got, ref)
    real = module.optimizers().optimizer
    assert isinstance(real, gameopt.ConsensusOptimizer) and real.skipped_steps == 0
    assert all(s["step"].item() == steps for s in real.state.values())  # Adam counted every step


@pytest.mark.parametrize("route", ["method", "gameopt.backward"])
def test_bf16_mixed_equals_plain_autocast_loop_and_tracks_fp32(route):
    steps = 3
    module = GameModule(route=route)
    t = trainer(steps, precision="bf16-mixed")
    t.fit(module, loader(*game_data()))
    want, _, _ = plain_loop(steps, autocast=torch.bfloat16)
    assert torch.equal(module.params(), want)
    fp32, _, _ = plain_loop(steps)
    start = GameModule().params()
    # bf16 moved the parameters like fp32 did (Adam's first steps are about lr * sign(grad))
    assert float((module.params() - fp32).norm()) < 0.05 * float((fp32 - start).norm())


def test_16_mixed_on_cpu_is_bf16_in_lightning():
    """Lightning turns precision="16-mixed" on CPU into bf16 (no scaler); the fp16 path needs the plugin."""
    with pytest.warns(UserWarning, match="AMP with fp16 is not supported on CPU"):
        t = trainer(1, precision="16-mixed")
    assert t.precision_plugin.precision == "bf16-mixed" and t.precision_plugin.scaler is None


@pytest.mark.parametrize("route", ["method", "gameopt.backward"])
def test_fp16_grad_scaler_path(route):
    """fp16 with Lightning's GradScaler (MixedPrecision("16-mixed", "cpu")): the losses are scaled
    by the Trainer's scaler and gameopt is told so, so after the Trainer unscales, the gradient
    hooks see the true v + gamma v'^T v, equal to a plain loop with the same scaler."""
    steps = 4
    init_scale = 2.0**8
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    module = GameModule(route=route, gamma=2.0)
    t = trainer(steps, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    t.fit(module, loader(*game_data()))
    ref_scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    want, want_grads, _ = plain_loop(steps, gamma=2.0, autocast=torch.float16, scaler=ref_scaler)
    assert t.global_step == steps
    assert scaler.get_scale() == ref_scaler.get_scale()
    for got, ref in zip(module.seen_grads, want_grads):
        assert torch.equal(got, ref)
    assert torch.equal(module.params(), want)
    # and the gradients are the unscaled consensus gradient, as in fp32 (fp16 rounding aside)
    _, fp32_grads, _ = plain_loop(1, gamma=2.0)
    assert float((module.seen_grads[0] - fp32_grads[0]).norm()) < 2e-2 * float(fp32_grads[0].norm())


def test_max_steps_global_step_and_lr_scheduler():
    """max_steps stops the run; global_step counts optimiser steps across epochs; a scheduler from
    configure_optimizers, stepped in training_step, drives the real optimiser's param groups."""
    steps = 7  # two epochs of 4 batches, the second cut short
    module = GameModule(route="gameopt.backward", scheduler=True)
    t = trainer(steps, max_epochs=5)
    t.fit(module, loader(*game_data()))
    want, _, want_opt = plain_loop(steps, scheduler=True)
    assert t.global_step == steps
    assert torch.equal(module.params(), want)
    real = module.optimizers().optimizer
    assert [g["lr"] for g in real.param_groups] == [LR * 0.5 ** (steps // 2)] * 2
    assert [g["lr"] for g in real.param_groups] == [g["lr"] for g in want_opt.param_groups]


@pytest.mark.parametrize("precision", ["32", "16-mixed scaler"])
def test_checkpoint_resume_is_bit_for_bit(tmp_path, precision):
    """Trainer checkpoint after one epoch, then a new Trainer with ckpt_path: the resumed run
    (optimiser moments, scheduler, loss scale) equals an uninterrupted one bit for bit.

    At an epoch's end: resuming mid-epoch, Lightning restarts a plain DataLoader's iteration."""
    def kwargs():
        if precision == "32":
            return {}
        return {"plugins": [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**8))]}

    route = "method" if precision == "32" else "gameopt.backward"
    full = GameModule(route=route, scheduler=True)
    trainer(-1, max_epochs=2, **kwargs()).fit(full, loader(*game_data()))

    first = GameModule(route=route, scheduler=True)
    t1 = trainer(-1, max_epochs=1, **kwargs())
    t1.fit(first, loader(*game_data()))
    ckpt = tmp_path / "half.ckpt"
    t1.save_checkpoint(ckpt)

    resumed = GameModule(route=route, scheduler=True, seed=7)  # other weights: the checkpoint must replace them
    t2 = trainer(-1, max_epochs=2, **kwargs())
    t2.fit(resumed, loader(*game_data()), ckpt_path=ckpt)
    assert t2.global_step == 2 * N_BATCHES
    assert torch.equal(resumed.params(), full.params())
    a, b = resumed.optimizers().optimizer.state_dict(), full.optimizers().optimizer.state_dict()
    for key in a["state"]:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(a["state"][key][name], b["state"][key][name])
    assert a["param_groups"] == b["param_groups"]


@pytest.mark.parametrize("route", ["method", "gameopt.backward"])
def test_nan_gradient_is_skipped_by_the_real_optimiser(route):
    """A NaN batch through the Lightning wrapper: the real optimiser skips the step (parameters and
    Adam's moments untouched), counts it, and training goes on. Lightning's global_step counts every
    opt.step() call, applied or skipped, as it does for a GradScaler's skipped steps."""
    steps, nan_batch = 4, 2
    module = GameModule(route=route)
    real_steps = []

    class Recorder(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            real_steps.append(pl_module.params().clone())

    t = trainer(steps, callbacks=[Recorder()])
    with pytest.warns(RuntimeWarning, match="non-finite"):
        t.fit(module, loader(*game_data(nan_batch=nan_batch)))
    real = module.optimizers().optimizer
    assert real.skipped_steps == 1
    assert t.global_step == steps
    assert torch.isfinite(module.params()).all()
    real_steps.append(module.params())
    assert torch.equal(real_steps[nan_batch], real_steps[nan_batch + 1])  # the NaN step moved nothing
    assert not torch.equal(real_steps[nan_batch + 1], real_steps[nan_batch + 2])  # the next one did
    assert all(s["step"].item() == steps - 1 for s in real.state.values())


def test_post_step_hook_fires_once_per_applied_step():
    steps, nan_batch = 4, 1
    module = GameModule(route="method")
    calls = []

    class Hooks(L.Callback):
        def on_train_start(self, trainer, pl_module):
            pl_module.optimizers().optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append(1))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        trainer(steps, callbacks=[Hooks()]).fit(module, loader(*game_data(nan_batch=nan_batch)))
    assert len(calls) == steps - 1


class AlternatingModule(GameModule):
    """AltGA re-evaluates the losses between the players' updates: it trains through opt.step(closure)."""

    def configure_optimizers(self):
        return gameopt.AlternatingOptimizer(torch.optim.Adam, self.G.parameters(), self.D.parameters(), lr=LR)

    def training_step(self, batch, batch_idx):
        x, z = batch
        self.optimizers().step(closure=lambda: losses(self.G, self.D, x, z))

    def on_before_optimizer_step(self, optimizer):
        self.seen_grads.append(None)


def test_alternating_optimizer_steps_through_lightnings_closure():
    steps = 3
    module = AlternatingModule()
    t = trainer(steps)
    t.fit(module, loader(*game_data()))
    G, D = mlp([3, 8, 2], 0, torch.float32), mlp([2, 8, 1], 1, torch.float32)
    opt = gameopt.AlternatingOptimizer(torch.optim.Adam, G.parameters(), D.parameters(), lr=LR)
    x, z = game_data()
    for i in range(steps):
        opt.step(lambda: losses(G, D, x[i * BATCH:(i + 1) * BATCH], z[i * BATCH:(i + 1) * BATCH]))
    assert t.global_step == steps
    assert torch.equal(module.params(), flat([*G.parameters(), *D.parameters()]))
    # Lightning's hook runs inside its closure: once per loss evaluation, i.e. once per player
    assert len(module.seen_grads) == 2 * steps


class AutomaticModule(GameModule):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = True

    def training_step(self, batch, batch_idx):
        return sum(losses(self.G, self.D, *batch))


def test_automatic_optimisation_is_refused_with_a_clear_error():
    """Automatic optimisation hands step() a closure that returns the single loss it differentiated."""
    module = AutomaticModule()
    before = module.params()
    with pytest.raises(gameopt.GameInputError, match="one per player"):
        trainer(1).fit(module, loader(*game_data()))
    assert torch.equal(module.params(), before)
