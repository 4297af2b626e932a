"""Mixture of 8 Gaussians, consensus optimisation, trained by PyTorch Lightning.

The game and settings of ``examples/eight_gaussians.py`` (std 0.01 on the unit circle,
4x16 ReLU MLPs, z dim 16, batch 512, RMSProp lr 1e-4, gamma 10, non-saturating loss),
in a ``LightningModule`` with manual optimisation, the way Lightning's own GAN examples
train: ``opt = self.optimizers(); opt.zero_grad(); opt.backward(gen_loss, disc_loss);
opt.step()``. With the same seed the run follows the plain demo's consensus run step for
step, and prints the same metrics (modes reached and covered, high-quality fraction, KL).

    python examples/lightning_gan.py                       # 6000 steps, about a minute on 2 CPU cores
    python examples/lightning_gan.py --precision bf16-mixed
    python examples/lightning_gan.py --accelerator gpu --precision 16-mixed   # fp16 with Lightning's GradScaler
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch
import torch.nn.functional as F

import gameopt
from gameopt.toy_games import mixture_metrics, mlp, ring_centers, sample_mixture

STD = 0.01


class MixtureStream(torch.utils.data.IterableDataset):
    """Endless ``(x, z)`` batches: real samples, then latents, from one generator (as the plain demo draws them)."""

    def __init__(self, batch: int, z_dim: int, seed: int) -> None:
        self.batch, self.z_dim, self.seed = batch, z_dim, seed

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed)
        centers = ring_centers(8, 1.0)
        while True:
            x = sample_mixture(self.batch, centers, STD, gen)
            yield x, torch.randn(self.batch, self.z_dim, generator=gen)


class ConsensusGAN(L.LightningModule):
    """Generator and discriminator MLPs, one gameopt optimiser for both players."""

    def __init__(self, z_dim: int, gamma: float, lr: float, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.G, self.D = mlp(z_dim, 2), mlp(2, 1)
        self.gamma, self.lr = gamma, lr
        self.automatic_optimization = False  # a game has one loss per player

    def configure_optimizers(self):
        return gameopt.ConsensusOptimizer(
            torch.optim.RMSprop, self.G.parameters(), self.D.parameters(), gamma=self.gamma, lr=self.lr
        )

    def training_step(self, batch, batch_idx):
        x, z = batch
        d_fake = self.D(self.G(z))  # one D(fake) pass serves both losses; no .detach()
        gen_loss = F.softplus(-d_fake).mean()
        disc_loss = F.softplus(-self.D(x)).mean() + F.softplus(d_fake).mean()
        opt = self.optimizers()
        opt.zero_grad()
        opt.backward(gen_loss, disc_loss)  # or gameopt.backward(opt, gen_loss, disc_loss)
        opt.step()


class MixtureMetricsCallback(L.Callback):
    """Mode coverage of the generator's samples at the given global steps (and before training)."""

    def __init__(self, snapshots: list[int], eval_samples: int, z_dim: int, seed: int) -> None:
        self.snapshots = set(snapshots)
        self.z_eval = torch.randn(eval_samples, z_dim, generator=torch.Generator().manual_seed(seed))
        self.history: list[dict] = []
        self.samples: dict[int, torch.Tensor] = {}

    def _evaluate(self, trainer: L.Trainer, module: ConsensusGAN) -> None:
        with torch.no_grad():
            s = module.G(self.z_eval.to(module.device)).float().cpu()
        self.samples[trainer.global_step] = s
        self.history.append(mixture_metrics(s, ring_centers(8, 1.0), STD).as_dict() | {"step": trainer.global_step})

    def on_train_start(self, trainer, pl_module):
        if 0 in self.snapshots:
            self._evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step in self.snapshots:
            self._evaluate(trainer, pl_module)


def train(args: argparse.Namespace) -> dict:
    """Train and evaluate; returns the metric history, the final samples, seconds and skipped steps."""
    snapshots = sorted({0, args.steps // 4, args.steps // 2, args.steps})
    module = ConsensusGAN(args.z_dim, args.gamma, args.lr, args.seed)
    metrics = MixtureMetricsCallback(snapshots, args.eval_samples, args.z_dim, args.seed + 2)
    trainer = L.Trainer(
        max_steps=args.steps, accelerator=args.accelerator, devices=1, precision=args.precision,
        logger=False, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=not args.no_progress, callbacks=[metrics],
    )
    data = torch.utils.data.DataLoader(MixtureStream(args.batch, args.z_dim, args.seed + 1), batch_size=None)
    start = time.perf_counter()
    trainer.fit(module, data)
    seconds = time.perf_counter() - start
    return {"history": metrics.history, "samples": metrics.samples[args.steps], "seconds": seconds,
            "skipped_steps": module.optimizers().optimizer.skipped_steps, "global_step": trainer.global_step}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6000, help="training steps (the paper: 20000)")
    ap.add_argument("--gamma", type=float, default=10.0, help="consensus weight (0: SimGA)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--z-dim", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-samples", type=int, default=4000)
    ap.add_argument("--accelerator", default="cpu", help="Lightning accelerator: cpu, gpu, auto")
    ap.add_argument("--precision", default="32", help="32, bf16-mixed, or 16-mixed (GPU: fp16 with a GradScaler)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = train(args)
    for m in result["history"]:
        print(f"step {m['step']:6d}  modes reached {m['modes_reached']}/8  covered {m['modes_covered']}/8  "
              f"high-quality {m['high_quality']:.3f}  KL {m['kl']:.3f}")
    f = result["history"][-1]
    print(f"{'consensus' if args.gamma else 'simga':10s} modes reached {f['modes_reached']}/8  "
          f"covered {f['modes_covered']}/8  high-quality "
          f"{f['high_quality']:.3f}  KL {f['kl']:.3f}  ({result['seconds']:.0f} s, "
          f"{result['skipped_steps']} skipped steps)")
    return result


if __name__ == "__main__":
    main()
