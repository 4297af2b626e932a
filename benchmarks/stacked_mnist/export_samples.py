"""Export 2000 samples of an image-runner checkpoint as uint8 ``<method>_s<seed>.npz`` (key ``images``).

    python benchmarks/stacked_mnist/export_samples.py runs/stacked_mnist/altga_s0 \\
        benchmarks/stacked_mnist/results/samples/dcgan28/altga_s0.npz

The generator is rebuilt from the checkpoint's recorded settings and sampled in eval mode from the
runner's fixed evaluation noise (seed 10000 + run seed), as the runner's final evaluation does (``--ema``: the run's EMA of G); the
file then goes to ``benchmarks/rescore_samples/rescore.py`` for the strict metrics and the grid.
``--legacy`` reads a checkpoint written before the runner recorded a checkpoint format (it
unpickles: use it only on your own files).
"""

from __future__ import annotations

import argparse
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from benchmarks.common import image_gan  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="the run's --out folder (holds checkpoint.pt)")
    ap.add_argument("out", type=Path, help="the .npz to write")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--ema", action="store_true", help="sample the EMA of G (a run with --ema) instead of G")
    ap.add_argument("--legacy", action="store_true", help="checkpoint of the runner before its format version")
    args = ap.parse_args(argv)
    ck = torch.load(args.run / image_gan.CHECKPOINT, map_location="cpu", weights_only=not args.legacy)
    settings = Namespace(**ck["settings"])
    shape = (3, 28, 28) if settings.data in ("stacked_mnist",) else (1, 28, 28)
    G, _ = image_gan.build_models(settings, shape)
    if args.ema:
        if "G_ema" not in ck:
            raise SystemExit(f"{args.run / image_gan.CHECKPOINT} holds no EMA of G: the run had no --ema")
        # AveragedModel's state: the wrapped module's under "module.", and its update count
        G.load_state_dict({k.removeprefix("module."): v for k, v in ck["G_ema"].items() if k != "n_averaged"})
    else:
        G.load_state_dict(ck["G"])
    G.eval()
    z = torch.randn(args.n, settings.z_dim, generator=torch.Generator().manual_seed(10_000 + settings.seed))
    with torch.no_grad():
        x = torch.cat([G(zb) for zb in z.split(500)])
    images = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, images=images)
    print(f"{args.out}: {images.shape} from step {ck['step']} of {args.run}")
    return args.out


if __name__ == "__main__":
    main()
