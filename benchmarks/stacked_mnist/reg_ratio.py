"""How far consensus's regulariser outweighs the game at initialisation, with and without batch norm in D.

    python benchmarks/stacked_mnist/reg_ratio.py --out benchmarks/stacked_mnist/results/reg_ratio

For the standard-size 28x28 DCGAN (``--preset dcgan28``: ``dcgan28`` has batch norm in D,
``dcgan28_nobn_d`` does not; G has batch norm in both) at its DCGAN initialisation, one batch of
64 stacked-MNIST images and 64 latents, per player: ``||v||`` (the game's gradient of the
non-saturating losses), ``||grad (1/2 ||v||^2)||`` (consensus's regulariser before gamma), and
their ratio, the gamma at which the two weigh the same. The gradients come from
``gameopt.ConsensusOptimizer.backward`` (``opt.stats``), the thing a user would log. Writes
``reg_ratio.json``. A few seconds on one thread.

    python benchmarks/stacked_mnist/reg_ratio.py --runs runs/stacked_mnist/dcgan28/simga_s0 ... \
        --out benchmarks/stacked_mnist/results/reg_ratio_trained

measures the same at a trained point instead: the players of each run's ``checkpoint.pt`` (any
method; train mode, as in training), on one batch of that run's data and latents (``--at-init``: fresh
players of the run's settings, seeded with its seed). Rows then also name the run, method and step.
"""

from __future__ import annotations

import argparse
import sys
from argparse import Namespace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import gameopt  # noqa: E402
from benchmarks.common import image_gan  # noqa: E402
from benchmarks.common.image_methods import gan_losses  # noqa: E402
from benchmarks.common.provenance import write_json  # noqa: E402


def measure(model: str, seed: int, real: torch.Tensor, z: torch.Tensor, width: int | None) -> dict[str, Any]:
    argv = ["--data", "stacked_mnist", "--preset", "dcgan28", "--model", model]
    args = image_gan.parse_args(argv + (["--width", str(width)] if width else []))
    torch.manual_seed(seed)
    G, D = image_gan.build_models(args, (3, 28, 28))
    return {"model": model, "seed": seed, **ratios(G, D, real, z)}


def measure_run(run: Path, at_init: bool, smoke: bool) -> dict[str, Any]:
    """The ratios at ``run``'s checkpoint (or, ``at_init``, at fresh players of its settings)."""
    ck = image_gan.load_checkpoint(run / image_gan.CHECKPOINT, torch.device("cpu"))
    settings = Namespace(**{**vars(image_gan.parse_args([])), **ck["settings"]})
    game = image_gan.ImageGame(settings)
    torch.manual_seed(settings.seed)
    G, D = image_gan.build_models(settings, game.shape)
    if not at_init:
        G.load_state_dict(ck["G"])
        D.load_state_dict(ck["D"])
    batch = 8 if smoke else 64
    real = game.sample(batch, torch.Generator().manual_seed(5))
    z = torch.randn(batch, settings.z_dim, generator=torch.Generator().manual_seed(6))
    return {"run": str(run), "model": settings.model, "method": settings.method, "seed": settings.seed,
            "step": 0 if at_init else int(ck["step"]), **ratios(G, D, real, z)}


def ratios(G: torch.nn.Module, D: torch.nn.Module, real: torch.Tensor, z: torch.Tensor) -> dict[str, float]:
    """Per player: ``||v||``, ``||grad (1/2 ||v||^2)||`` and their ratio, on one batch (train mode)."""
    G.train()
    D.train()
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, G.parameters(), D.parameters(), gamma=1.0, lr=0.0)
    opt.zero_grad()
    fake = G(z)
    opt.backward(*gan_losses(D(real).flatten(), D(fake).flatten()))
    row: dict[str, float] = {}
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
    ap.add_argument("--runs", type=Path, nargs="+", default=None,
                    help="measure at these runs' checkpoints (image-runner --out folders) instead")
    ap.add_argument("--at-init", action="store_true", help="with --runs: fresh players of each run's settings")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.runs:
        rows = [measure_run(run, args.at_init, args.smoke) for run in args.runs]
        for r in rows:
            print(f"{r['run']} (step {r['step']}): ratio G {r['ratio_generator']:8.1f}, D {r['ratio_discriminator']:8.1f}"
                  f"  (|v| G {r['v_generator']:.3g}, D {r['v_discriminator']:.3g})")
        record = {"meta": {"gamma": 1.0, "at_init": args.at_init}, "rows": rows}
        write_json(args.out / "reg_ratio.json", record)
        return record
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
