"""Consensus gamma sweep on the 8-Gaussian game, with Adam and RMSProp (issue 12's gamma evidence).

    python benchmarks/gamma_sweep/gamma_sweep_gaussians.py --steps 6000 --seeds 0,1,2 --threads 1 \\
        --out benchmarks/gamma_sweep/results/eight_gaussians

The game of "The Numerics of GANs" (Mescheder et al. 2017, section 5; ``examples/eight_gaussians.py``):
8 Gaussians of std 0.01 on the unit circle, MLP players (4 hidden layers of 16 ReLU units), z 16,
batch 512, non-saturating loss, lr 1e-4 for both base optimisers (Adam with beta1 0.5, as the
image runner; RMSProp as the paper). ``gamma = 0`` is SimGA with the same base optimiser. Each
(optimiser, gamma, seed) run is one JSON line in ``runs.jsonl`` (a rerun skips finished ones);
``table.md`` gives the mean over seeds of modes covered (/8), the fraction of high-quality samples
(within 3 std of a mode) and KL(mode histogram || uniform) at the last step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: gameopt and benchmarks.common

import gameopt  # noqa: E402
from benchmarks.common.provenance import provenance  # noqa: E402
from gameopt.toy_games import mixture_metrics, mlp, ring_centers, sample_mixture  # noqa: E402

STD = 0.01
OPTIMS = {"adam": (torch.optim.Adam, {"betas": (0.5, 0.999)}), "rmsprop": (torch.optim.RMSprop, {})}


def train(optim: str, gamma: float, seed: int, steps: int, lr: float, batch: int = 512, z_dim: int = 16) -> dict:
    """One consensus run; returns the final mixture metrics and a few intermediate ones."""
    torch.manual_seed(seed)
    G, D = mlp(z_dim, 2), mlp(2, 1)
    centers = ring_centers(8, 1.0)
    gen = torch.Generator().manual_seed(seed + 1)
    base, kw = OPTIMS[optim]
    opt = gameopt.ConsensusOptimizer(base, G.parameters(), D.parameters(), gamma=gamma, lr=lr, **kw)
    z_eval = torch.randn(4000, z_dim, generator=torch.Generator().manual_seed(seed + 2))

    def losses():
        x = sample_mixture(batch, centers, STD, gen)
        fake = G(torch.randn(batch, z_dim, generator=gen))
        d_fake = D(fake)
        return F.softplus(-d_fake).mean(), F.softplus(-D(x)).mean() + F.softplus(d_fake).mean()

    curve = []
    for step in range(steps + 1):
        if step % (steps // 4) == 0:
            with torch.no_grad():
                s = G(z_eval)
            m = mixture_metrics(s, centers, STD).as_dict() if torch.isfinite(s).all() else {"diverged": True}
            curve.append({"step": step, **m})
        if step < steps:
            opt.step(losses)
    return {"optim": optim, "gamma": gamma, "seed": seed, "steps": steps, "lr": lr,
            "final": curve[-1], "curve": curve, "skipped_steps": opt.skipped_steps}


def table(rows: list[dict]) -> str:
    keys = sorted({(r["optim"], r["gamma"]) for r in rows})
    out = ["| optimiser | gamma | seeds | modes (/8) | high quality | KL |", "|---|---|---|---|---|---|"]
    for optim, gamma in keys:
        finals = [r["final"] for r in rows if (r["optim"], r["gamma"]) == (optim, gamma)]
        ok = [f for f in finals if not f.get("diverged")]

        def cell(k: str, fmt: str) -> str:
            vals = [f[k] for f in ok]
            if not vals:
                return "diverged"
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            return f"{fmt.format(statistics.mean(vals))} +- {fmt.format(sd)}"

        label = "0 (SimGA)" if gamma == 0 else f"{gamma:g}"
        out.append(f"| {optim} | {label} | {len(finals)} | {cell('modes_covered', '{:.1f}')} | "
                   f"{cell('high_quality', '{:.2f}')} | {cell('kl', '{:.2f}')} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--optims", default="adam,rmsprop")
    ap.add_argument("--gammas", default="0,0.1,0.3,1,3,10")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/gamma_sweep_gaussians")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "runs.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    done = {(r["optim"], r["gamma"], r["seed"], r["steps"]) for r in rows}
    for seed in map(int, args.seeds.split(",")):
        for optim in args.optims.split(","):
            for gamma in map(float, args.gammas.split(",")):
                if (optim, gamma, seed, args.steps) in done:
                    continue
                r = train(optim, gamma, seed, args.steps, args.lr)
                r["provenance"] = provenance()
                rows.append(r)
                with path.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                print(f"{optim} gamma {gamma:g} seed {seed}: {r['final']}", flush=True)
    md = table([r for r in rows if r["steps"] == args.steps])
    (out / "table.md").write_text(md + "\n")
    print(md)
    return md


if __name__ == "__main__":
    main()
