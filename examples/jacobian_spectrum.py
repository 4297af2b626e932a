"""Eigenvalues of the game's Jacobian before and after consensus training (paper Fig. 3).

The 8-Gaussian game of examples/eight_gaussians.py is trained with consensus
optimisation; at the start and at the end the full spectra of v'(x) (plain field) and of
the consensus field's Jacobian are computed exactly on a fixed batch. gameopt's
convention is "every player minimises": stable directions have eigenvalues with
*positive* real part (the paper plots the ascent field, i.e. mirrored). Near the
equilibrium v' has eigenvalues close to the imaginary axis; consensus moves them right.

    python examples/jacobian_spectrum.py --out runs/jacobian_spectrum
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: gameopt and benchmarks.common

import gameopt  # noqa: E402
from benchmarks.common.provenance import write_json  # noqa: E402
from gameopt.diagnostics import GameField, summarize_spectrum  # noqa: E402
from gameopt.toy_games import mixture_metrics, mlp, ring_centers, sample_mixture  # noqa: E402

STD = 0.01


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6000, help="consensus training steps (paper: 20000)")
    ap.add_argument("--gamma", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--eval-batch", type=int, default=256, help="fixed batch the spectrum is computed on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/jacobian_spectrum")
    ap.add_argument("--smoke", action="store_true", help="a few seconds on tiny settings: checks the script end to end (the tests run it), not its numbers")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.batch, args.eval_batch = 4, 32, 16
    try:
        from tqdm import tqdm as progress
    except ImportError:  # pragma: no cover
        def progress(it, **_):
            return it

    torch.manual_seed(args.seed)
    G, D = mlp(16, 2), mlp(2, 1)
    centers = ring_centers(8, 1.0)
    gen = torch.Generator().manual_seed(args.seed + 1)
    opt = gameopt.ConsensusOptimizer(torch.optim.RMSprop, G.parameters(), D.parameters(), gamma=args.gamma, lr=1e-4)
    z_fix = torch.randn(args.eval_batch, 16, generator=gen)
    x_fix = sample_mixture(args.eval_batch, centers, STD, gen)

    def losses(z, x):
        d_fake = D(G(z))
        return F.softplus(-d_fake).mean(), F.softplus(-D(x)).mean() + F.softplus(d_fake).mean()

    def spectra() -> dict[str, np.ndarray]:
        closure = lambda: losses(z_fix, x_fix)  # noqa: E731
        return {
            "v'": GameField(closure, opt).eigenvalues(),
            "consensus field'": GameField(closure, opt, gamma=args.gamma).eigenvalues(),
        }

    print("spectra at initialisation ...")
    before = spectra()
    for _ in progress(range(args.steps), desc="consensus training"):
        opt.step(lambda: losses(torch.randn(args.batch, 16, generator=gen), sample_mixture(args.batch, centers, STD, gen)))
    print("spectra after training ...")
    after = spectra()
    with torch.no_grad():
        metrics = mixture_metrics(G(torch.randn(4000, 16, generator=gen)), centers, STD).as_dict()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 7))
    summary: dict[str, dict] = {"settings": vars(args), "final_mixture_metrics": metrics}
    for r, (when, spec) in enumerate((("before training", before), (f"after {args.steps} steps", after))):
        for c, (name, lam) in enumerate(spec.items()):
            ax = axes[r][c]
            ax.scatter(lam.real, lam.imag, s=4, alpha=0.5)
            ax.axvline(0, color="k", lw=0.5)
            ax.set_title(f"{name}, {when}", fontsize=9)
            ax.set_xlabel("real part")
            ax.set_ylabel("imaginary part")
            s = summarize_spectrum(lam, zero_tol=1e-6).as_dict()
            summary[f"{name} / {when}"] = s
    fig.tight_layout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "spectrum.png", dpi=100)
    write_json(out / "spectrum.json", summary, default=float)
    for k, v in summary.items():
        print(k, v)
    print(f"wrote {out / 'spectrum.png'} and {out / 'spectrum.json'}")


if __name__ == "__main__":
    main()
