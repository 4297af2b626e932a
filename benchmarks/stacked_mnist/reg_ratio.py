"""How far consensus's regulariser outweighs the game at initialisation, with and without batch norm in D.

    python benchmarks/stacked_mnist/reg_ratio.py --out benchmarks/stacked_mnist/results/reg_ratio

For the standard-size 28x28 DCGAN (``--preset dcgan28``: ``dcgan28`` has batch norm in D,
``dcgan28_nobn_d`` does not; G has batch norm in both) at its DCGAN initialisation, one batch of
64 stacked-MNIST images and 64 latents, per player: ``||v||`` (the game's gradient of the
non-saturating losses), ``||grad (1/2 ||v||^2)||`` (consensus's regulariser before gamma), and
their ratio, the gamma at which the two weigh the same. The gradients come from
``gameopt.ConsensusOptimizer.backward`` (``opt.stats``), the thing a user would log. Writes
``reg_ratio.json``. A few seconds on one thread.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import gameopt  # noqa: E402
from benchmarks.common import image_gan  # noqa: E402
from benchmarks.common.image_methods import gan_losses  # noqa: E402
from benchmarks.common.provenance import write_json  # noqa: E402


def measure(model: str, seed: int, real: torch.Tensor, z: torch.Tensor, width: int | None) -> dict[str, float]:
    argv = ["--data", "stacked_mnist", "--preset", "dcgan28", "--model", model]
    args = image_gan.parse_args(argv + (["--width", str(width)] if width else []))
    torch.manual_seed(seed)
    G, D = image_gan.build_models(args, (3, 28, 28))
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, G.parameters(), D.parameters(), gamma=1.0, lr=0.0)
    opt.zero_grad()
    fake = G(z)
    opt.backward(*gan_losses(D(real).flatten(), D(fake).flatten()))
    row: dict[str, float] = {"model": model, "seed": seed}
    for player in ("generator", "discriminator"):
        v = float(opt.stats.grad_sq_norm[player].sqrt())
        reg = float(opt.stats.reg_grad_sq_norm[player].sqrt())
        row |= {f"v_{player}": v, f"reg_{player}": reg, f"ratio_{player}": reg / v}
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/stacked_mnist/results/reg_ratio"))
    ap.add_argument("--smoke", action="store_true", help="narrow players and random 'real' images: a test of the script")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.smoke:
        real, width = torch.rand(8, 3, 28, 28) * 2 - 1, 8
    else:
        game = image_gan.ImageGame(image_gan.parse_args(["--data", "stacked_mnist"]))
        real, width = game.sample(64, torch.Generator().manual_seed(5)), None
    z = torch.randn(len(real), 100, generator=torch.Generator().manual_seed(6))
    rows = [measure(m, int(s), real, z, width) for m in ("dcgan28", "dcgan28_nobn_d") for s in args.seeds.split(",")]
    for r in rows:
        print(f"{r['model']:15s} seed {r['seed']}: ratio G {r['ratio_generator']:8.1f}, D {r['ratio_discriminator']:8.1f}"
              f"  (|v| G {r['v_generator']:.3g}, D {r['v_discriminator']:.3g})")
    record = {"meta": {"batch": len(real), "gamma": 1.0, "smoke": args.smoke}, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "reg_ratio.json", record)
    return record


if __name__ == "__main__":
    main()
