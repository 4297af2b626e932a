"""Mixture of 8 Gaussians, consensus optimisation, trained with Hugging Face accelerate.

The game and settings of ``examples/eight_gaussians.py`` (std 0.01 on the unit circle,
4x16 ReLU MLPs, z dim 16, batch 512, RMSProp lr 1e-4, gamma 10, non-saturating loss).
After ``G, D, opt = accelerator.prepare(G, D, opt)`` the optimiser is accelerate's
wrapper, which has no ``backward``: ``gameopt.backward(opt, gen_loss, disc_loss)`` finds
the gameopt optimiser inside it (and, with ``--mixed-precision fp16`` on a GPU, scales
the losses with accelerate's GradScaler). With the same seed the run follows the plain
demo's consensus run step for step, and prints the same metrics.

    python examples/accelerate_gan.py                         # 6000 steps, about a minute on 2 CPU cores
    python examples/accelerate_gan.py --mixed-precision bf16
    accelerate launch examples/accelerate_gan.py --mixed-precision fp16   # on a GPU
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from accelerate import Accelerator

import gameopt
from gameopt.toy_games import mixture_metrics, mlp, ring_centers, sample_mixture

STD = 0.01


def train(args: argparse.Namespace) -> dict:
    """Train and evaluate; returns the metric history, the final samples, seconds and skipped steps."""
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision)
    torch.manual_seed(args.seed)
    G, D = mlp(args.z_dim, 2), mlp(2, 1)
    opt = gameopt.ConsensusOptimizer(torch.optim.RMSprop, G.parameters(), D.parameters(), gamma=args.gamma, lr=args.lr)
    G, D, opt = accelerator.prepare(G, D, opt)

    centers = ring_centers(8, 1.0)
    gen = torch.Generator().manual_seed(args.seed + 1)
    z_eval = torch.randn(args.eval_samples, args.z_dim, generator=torch.Generator().manual_seed(args.seed + 2))
    snapshots = sorted({0, args.steps // 4, args.steps // 2, args.steps})
    history, samples = [], None
    try:
        from tqdm import tqdm
        steps = tqdm(range(args.steps + 1), disable=args.no_progress or not accelerator.is_local_main_process)
    except ImportError:  # pragma: no cover
        steps = range(args.steps + 1)
    start = time.perf_counter()
    for step in steps:
        if step in snapshots:
            with torch.no_grad():
                samples = G(z_eval.to(accelerator.device)).float().cpu()
            history.append(mixture_metrics(samples, centers, STD).as_dict() | {"step": step})
        if step == args.steps:
            break
        x = sample_mixture(args.batch, centers, STD, gen).to(accelerator.device)
        z = torch.randn(args.batch, args.z_dim, generator=gen).to(accelerator.device)
        d_fake = D(G(z))  # one D(fake) pass serves both losses; no .detach()
        gen_loss = F.softplus(-d_fake).mean()
        disc_loss = F.softplus(-D(x)).mean() + F.softplus(d_fake).mean()
        opt.zero_grad()
        gameopt.backward(opt, gen_loss, disc_loss)  # in place of accelerator.backward(loss)
        opt.step()
    seconds = time.perf_counter() - start
    return {"history": history, "samples": samples, "seconds": seconds,
            "skipped_steps": opt.optimizer.skipped_steps}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6000, help="training steps (the paper: 20000)")
    ap.add_argument("--gamma", type=float, default=10.0, help="consensus weight (0: SimGA)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--z-dim", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-samples", type=int, default=4000)
    ap.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"],
                    help="accelerate's mixed precision (fp16 needs a GPU; on CPU accelerate trains it in fp32)")
    ap.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
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
