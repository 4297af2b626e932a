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
