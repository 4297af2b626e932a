"""Lightning's closure route, ``self.optimizers().step(closure=...)``, in fp32 and fp16 (a real Trainer)."""

import warnings

import pytest
import torch

import gameopt
from test_lightning import (  # noqa: F401 - helpers, not tests
    BATCH, LR, GameModule, MixedPrecision, flat, game_data, loader, losses, mlp, plain_loop, trainer,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers.*", "ignore:.*isinstance\\(treespec, LeafSpec\\).*",
    "ignore:.*number of training batches.*",
)


class ClosureModule(GameModule):
    """Hands the losses to the optimiser through Lightning's closure."""

    def training_step(self, batch, batch_idx):
        x, z = batch
        self.returned = self.optimizers().step(closure=lambda: losses(self.G, self.D, x, z))


@pytest.mark.parametrize("precision", ["32", "16-mixed"])
def test_closure_route_trains_like_the_plain_loop(precision):
    steps = 3
    module = ClosureModule(gamma=2.0)
    kw = {}
    ref_scaler = None
    if precision == "16-mixed":
        kw["plugins"] = [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**8))]
        ref_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    t = trainer(steps, **kw)
    t.fit(module, loader(*game_data()))   # 16-mixed used to fail: "Attempted unscale_ but _scale is None"
    want, want_grads, _ = plain_loop(steps, gamma=2.0, autocast=torch.float16 if ref_scaler else None,
                                     scaler=ref_scaler)
    assert t.global_step == steps
    # Lightning's hook sees the gradients the step applies (computed before it runs)
    for got, ref in zip(module.seen_grads, want_grads):
        assert torch.equal(got, ref)
    assert torch.equal(module.params(), want)
    assert all(not l.requires_grad for l in module.returned)


class AlternatingClosureModule(GameModule):
    def configure_optimizers(self):
        return gameopt.AlternatingOptimizer(torch.optim.Adam, self.G.parameters(), self.D.parameters(), lr=LR)

    def training_step(self, batch, batch_idx):
        x, z = batch
        self.optimizers().step(closure=lambda: losses(self.G, self.D, x, z))

    def on_before_optimizer_step(self, optimizer):
        pass


def test_alternating_under_fp16_gets_a_clear_error():
    """AltGA must evaluate the closure itself (once per player); Lightning's fp16 plugin calls it first."""
    module = AlternatingClosureModule()
    before = module.params()
    t = trainer(1, plugins=[MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))])
    with pytest.raises(gameopt.GameInputError, match=r"AlternatingOptimizer.*16-mixed.*bf16-mixed"):
        t.fit(module, loader(*game_data()))
    assert torch.equal(module.params(), before)
