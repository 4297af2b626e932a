"""The family inside PyTorch Lightning's manual optimisation (the way its GAN examples train)."""

import warnings

import pytest
import torch
import torch.nn.functional as F

import gameopt

L = pytest.importorskip("lightning")


class _GAN(L.LightningModule):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.G = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        self.D = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        self.automatic_optimization = False

    def configure_optimizers(self):
        gp, dp = self.G.parameters(), self.D.parameters()
        if self.kind == "extragradient":
            return gameopt.ExtragradientOptimizer(torch.optim.Adam, gp, dp, lr=1e-3)
        if self.kind == "lookahead":
            return gameopt.LookaheadMinmax(gameopt.OptimisticOptimizer(torch.optim.Adam, gp, dp, lr=1e-3), k=2)
        cls = {"optimistic": gameopt.OptimisticOptimizer, "sga": gameopt.SGAOptimizer}[self.kind]
        return cls(torch.optim.Adam, gp, dp, lr=1e-3)

    def losses(self, x):
        d_fake = self.D(self.G(torch.randn(len(x), 4)))
        return F.softplus(-d_fake).mean(), F.softplus(-self.D(x)).mean() + F.softplus(d_fake).mean()

    def training_step(self, batch, index):
        (x,) = batch
        opt = self.optimizers()
        if self.kind == "extragradient":   # two evaluations: a closure returning the losses
            opt.step(lambda: self.losses(x))
        else:
            opt.zero_grad()
            opt.backward(*self.losses(x))
            opt.step()


@pytest.mark.parametrize("kind", ["optimistic", "sga", "extragradient", "lookahead"])
def test_manual_optimisation_trains_and_counts_steps(kind):
    torch.manual_seed(0)
    model = _GAN(kind)
    before = [p.detach().clone() for p in model.parameters()]
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 2)), batch_size=16)
    trainer = L.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, data)
    assert trainer.global_step == 4
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    opt = trainer.optimizers[0]
    inner = opt.inner if isinstance(opt, gameopt.LookaheadMinmax) else opt
    assert all(s["step"].item() == (8 if kind == "extragradient" else 4) for s in inner.state.values())


class _ScaledGAN(L.LightningModule):
    """``opt.backward`` called on Lightning's wrapper under fp16 with the Trainer's GradScaler."""

    def __init__(self, make, route):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.G = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        self.D = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.make, self.route = make, route
        self.automatic_optimization = False

    def configure_optimizers(self):
        return self.make(self.G.parameters(), self.D.parameters())

    def training_step(self, batch, index):
        x, z = batch
        d_fake = self.D(self.G(z))
        gen_loss = F.softplus(-d_fake).mean()
        disc_loss = F.softplus(-self.D(x)).mean() + F.softplus(d_fake).mean()
        opt = self.optimizers()
        opt.zero_grad()
        if self.route == "method":
            opt.backward(gen_loss, disc_loss)
        else:
            gameopt.backward(opt, gen_loss, disc_loss)
        opt.step()


_ADAM = {"lr": 1e-2}
MAKERS = {
    "simultaneous": lambda g, d: gameopt.SimultaneousOptimizer(torch.optim.Adam, g, d, **_ADAM),
    "consensus": lambda g, d: gameopt.ConsensusOptimizer(torch.optim.Adam, g, d, gamma=1.0, **_ADAM),
    "optimistic": lambda g, d: gameopt.OptimisticOptimizer(torch.optim.Adam, g, d, **_ADAM),
    "sga": lambda g, d: gameopt.SGAOptimizer(torch.optim.Adam, g, d, **_ADAM),
    "lookahead": lambda g, d: gameopt.LookaheadMinmax(
        gameopt.OptimisticOptimizer(torch.optim.Adam, g, d, **_ADAM), k=2),
    "competitive": lambda g, d: gameopt.CompetitiveOptimizer(g, d, lr=1e-2),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_backward_on_lightnings_wrapper_under_fp16_scaler_is_gameopt_backward(name):
    """Under "16-mixed" with a GradScaler, ``opt.backward(...)`` on Lightning's wrapper must scale the
    losses with the Trainer's scaler, exactly as ``gameopt.backward(opt, ...)`` does; unscaled, the
    Trainer's unscale step would shrink every gradient by the loss scale and training would stall."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    g = torch.Generator().manual_seed(5)
    x, z = torch.randn(64, 2, generator=g) + 1, torch.randn(64, 4, generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, z), batch_size=16)
    params = {}
    for route in ("method", "gameopt.backward"):
        model = _ScaledGAN(MAKERS[name], route)
        if name == "competitive":   # CGD takes one zero-sum loss
            model.training_step = _zero_sum_step.__get__(model)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, accelerator="cpu",
                            plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(model, data)
        assert trainer.global_step == 3
        params[route] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert torch.equal(params["method"], params["gameopt.backward"])


def _zero_sum_step(self, batch, index):
    x, z = batch
    d_fake = self.D(self.G(z))
    gen_loss = F.softplus(-d_fake).mean() - F.softplus(-self.D(x)).mean()
    opt = self.optimizers()
    opt.zero_grad()
    if self.route == "method":
        opt.backward(gen_loss)
    else:
        gameopt.backward(opt, gen_loss)
    opt.step()
