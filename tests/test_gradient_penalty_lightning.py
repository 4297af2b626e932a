"""GradientPenalty in PyTorch Lightning (a real Trainer, manual optimisation): the usual two-Adam
GAN and a gameopt optimiser train exactly as a plain loop, the lazy call count travels in the
Trainer's checkpoint, and under fp16 the penalty takes the Trainer's GradScaler."""

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

BATCH, N_BATCHES, LR = 16, 4, 1e-2


def game_data():
    g = torch.Generator().manual_seed(5)
    return torch.randn(N_BATCHES * BATCH, 2, generator=g) + 1, torch.randn(N_BATCHES * BATCH, 3, generator=g)


def loader():
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*game_data()), batch_size=BATCH)


def flat(ts):
    return torch.cat([t.detach().reshape(-1) for t in ts])


def players():
    return mlp([3, 8, 2], 0, torch.float32), mlp([2, 8, 1], 1, torch.float32)


def penalty():
    return gameopt.GradientPenalty("r1", gamma=5.0, every=2)


def d_loss(G, D, x, z, pen, scaler=None):
    return F.softplus(-D(x)).mean() + F.softplus(D(G(z).detach())).mean() + pen(D, real=x, scaler=scaler)


def g_loss(G, D, z):
    return F.softplus(-D(G(z))).mean()


class TwoAdamGAN(L.LightningModule):
    """The Lightning-GAN-example pattern: two torch optimisers, manual_backward for each player."""

    def __init__(self, use_scaler=False):
        super().__init__()
        self.G, self.D = players()
        self.pen = penalty()
        self.use_scaler = use_scaler
        self.automatic_optimization = False

    def configure_optimizers(self):
        return torch.optim.Adam(self.G.parameters(), lr=LR), torch.optim.Adam(self.D.parameters(), lr=LR)

    def training_step(self, batch, batch_idx):
        x, z = batch
        opt_g, opt_d = self.optimizers()
        # under fp16, manual_backward scales the loss with the Trainer's scaler: the penalty gets it too
        scaler = self.trainer.precision_plugin.scaler if self.use_scaler else None
        opt_d.zero_grad()
        self.manual_backward(d_loss(self.G, self.D, x, z, self.pen, scaler))
        opt_d.step()
        opt_g.zero_grad()
        self.manual_backward(g_loss(self.G, self.D, z))
        opt_g.step()

    def on_save_checkpoint(self, checkpoint):
        checkpoint["r1"] = self.pen.state_dict()

    def on_load_checkpoint(self, checkpoint):
        self.pen.load_state_dict(checkpoint["r1"])


def plain_loop(steps, autocast=None, scaler=None):
    G, D = players()
    opt_g, opt_d = torch.optim.Adam(G.parameters(), lr=LR), torch.optim.Adam(D.parameters(), lr=LR)
    pen = penalty()
    x_all, z_all = game_data()
    for step in range(steps):
        i = step % N_BATCHES
        x, z = x_all[i * BATCH:(i + 1) * BATCH], z_all[i * BATCH:(i + 1) * BATCH]
        for opt, loss_fn in ((opt_d, lambda: d_loss(G, D, x, z, pen, scaler)), (opt_g, lambda: g_loss(G, D, z))):
            # as Lightning's precision plugin: no cast cache
            with torch.autocast("cpu", dtype=autocast or torch.float32, enabled=autocast is not None,
                                cache_enabled=False):
                loss = loss_fn()
            opt.zero_grad()
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
    return flat([*G.parameters(), *D.parameters()]), pen


def trainer(max_steps, **kw):
    return L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, enable_progress_bar=False, logger=False,
                     enable_checkpointing=False, enable_model_summary=False, **kw)


def test_two_adam_gan_with_lazy_r1_equals_the_plain_loop_and_checkpoints_the_count(tmp_path):
    module = TwoAdamGAN()
    t = trainer(5 * 2)   # Lightning counts each optimiser's step
    t.fit(module, loader())
    want, pen = plain_loop(5)
    assert torch.equal(flat(module.parameters()), want)
    assert module.pen.calls == pen.calls == 5
    t.save_checkpoint(tmp_path / "gan.ckpt")
    resumed = TwoAdamGAN()
    resumed.on_load_checkpoint(torch.load(tmp_path / "gan.ckpt", weights_only=True))
    assert resumed.pen.state_dict() == pen.state_dict()


def test_fp16_with_the_trainers_scaler_equals_the_plain_loop():
    steps = 3
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    module = TwoAdamGAN(use_scaler=True)
    t = trainer(steps * 2, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    t.fit(module, loader())
    ref_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    want, _ = plain_loop(steps, autocast=torch.float16, scaler=ref_scaler)
    assert scaler.get_scale() == ref_scaler.get_scale()
    assert torch.equal(flat(module.parameters()), want)
    fp32, _ = plain_loop(steps)
    assert not torch.equal(want, fp32)   # fp16 autocast was on, and it stays close to float32
    assert torch.isfinite(want).all() and float((want - fp32).norm()) < 0.05 * float(fp32.norm())


class ConsensusGAN(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.G, self.D = players()
        self.pen = penalty()
        self.automatic_optimization = False

    def configure_optimizers(self):
        return gameopt.ConsensusOptimizer(torch.optim.Adam, self.G.parameters(), self.D.parameters(), gamma=1.0,
                                          lr=LR)

    def training_step(self, batch, batch_idx):
        x, z = batch
        opt = self.optimizers()
        d_fake = self.D(self.G(z))
        gen_loss = F.softplus(-d_fake).mean()
        disc_loss = F.softplus(-self.D(x)).mean() + F.softplus(d_fake).mean() + self.pen(self.D, real=x)
        opt.zero_grad()
        opt.backward(gen_loss, disc_loss)
        opt.step()


def test_consensus_with_r1_in_a_trainer_equals_the_plain_loop():
    steps = 4
    module = ConsensusGAN()
    trainer(steps).fit(module, loader())
    G, D = players()
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, G.parameters(), D.parameters(), gamma=1.0, lr=LR)
    pen = penalty()
    x_all, z_all = game_data()
    for step in range(steps):
        x, z = x_all[step * BATCH:(step + 1) * BATCH], z_all[step * BATCH:(step + 1) * BATCH]
        d_fake = D(G(z))
        opt.zero_grad()
        opt.backward(F.softplus(-d_fake).mean(), F.softplus(-D(x)).mean() + F.softplus(d_fake).mean() + pen(D, real=x))
        opt.step()
    assert torch.equal(flat(module.parameters()), flat([*G.parameters(), *D.parameters()]))
