"""Mixture of 8 Gaussians (Chen, Wang & Ge 2018, Fig. 2 and appendix 7.4): baseline vs primal-dual.

Settings (appendix 7.4): 8 Gaussians of std 0.02 evenly on a circle of radius 2;
noise z ~ N(0, I_256); generator 256-128-128-2 (ReLU), discriminator 2-128-1 (ReLU,
sigmoid output -> we keep the raw logit and use the JS losses of Algorithm 1);
Xavier weights, zero biases; one D and one G step per iteration (k0 = 1); Adam,
lr 8e-4 (D) and 4e-4 (G); batch 64.  Kernel bandwidth sigma^2 = 0.1 at the start,
decaying geometrically (x0.8 per 1/20 of the run; the paper's exact rate is illegible).

Methods: ``gan`` = Algorithm 1 without the term (saturating generator loss
log(2(1 - D))), ``gan_ns`` = non-saturating -log D (common practice, extra), and
``primaldual`` = ``gan`` + PrimalDualRegularizer("js", alpha), and ``primaldual_ns`` =
``gan_ns`` + the same term (extra).  The paper gives no alpha (see --alpha).

Metrics on 2500 samples: high-quality fraction = share within 3 std (0.06) of the
nearest mode; a mode is covered when at least 1% of all samples are high-quality
samples of that mode.  Writes <out>/primal_dual_mixture.json and .png.

    python benchmarks/primal_dual_mixture/primal_dual_mixture.py            # 3 seeds x 10k iterations
    python benchmarks/primal_dual_mixture/primal_dual_mixture.py --full --jobs 2  # 3 seeds x 40k iterations (Fig. 2 length)
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # run from a checkout

import matplotlib  # noqa: E402
from benchmarks.common.provenance import write_json  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from gameopt.primal_dual import ExponentialBandwidth, PrimalDualRegularizer, get_divergence  # noqa: E402

STD, RADIUS, N_MODES = 0.02, 2.0, 8
MODES = torch.tensor([[RADIUS * math.cos(2 * math.pi * k / N_MODES), RADIUS * math.sin(2 * math.pi * k / N_MODES)]
                      for k in range(N_MODES)])


def sample_data(n: int, gen: torch.Generator | None = None) -> torch.Tensor:
    idx = torch.randint(0, N_MODES, (n,), generator=gen)
    return MODES[idx] + STD * torch.randn(n, 2, generator=gen)


def xavier(net: nn.Module) -> nn.Module:
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def evaluate(x: torch.Tensor) -> dict:
    d = torch.cdist(x, MODES)
    dist, mode = d.min(1)
    hq = dist < 3 * STD
    counts = torch.bincount(mode[hq], minlength=N_MODES)
    return {
        "high_quality": hq.float().mean().item(),
        "modes": int((counts >= 0.01 * x.shape[0]).sum()),
        "per_mode_hq_counts": counts.tolist(),
    }


def run(method: str, seed: int, args: argparse.Namespace) -> dict:
    torch.manual_seed(seed)
    G = xavier(nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2)))
    D = xavier(nn.Sequential(nn.Linear(2, 128), nn.ReLU(), nn.Linear(128, 1)))
    opt_d = torch.optim.Adam(D.parameters(), lr=8e-4)
    opt_g = torch.optim.Adam(G.parameters(), lr=4e-4)
    js = get_divergence("js")
    decay_every = max(1, args.iters // 20)
    reg = PrimalDualRegularizer(
        js, alpha=args.alpha,
        bandwidth=ExponentialBandwidth(math.sqrt(args.sigma2), math.sqrt(0.8), every=decay_every),
    )
    z_eval = torch.randn(2500, 256, generator=torch.Generator().manual_seed(999))
    history = []
    for it in tqdm(range(args.iters + 1), desc=f"{method} s{seed}", leave=False):
        if it % args.eval_every == 0:
            with torch.no_grad():
                history.append({"iter": it, **evaluate(G(z_eval))})
        if it == args.iters:
            break
        real = sample_data(args.batch)
        fake = G(torch.randn(args.batch, 256))
        loss_d = js.discriminator_loss(D(real), D(fake.detach()))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()

        d_fake = D(fake)
        if method in ("gan_ns", "primaldual_ns"):
            loss_g = nn.functional.softplus(-d_fake).mean()
        else:
            loss_g = js.generator_loss(d_fake)
        if method.startswith("primaldual"):
            with torch.no_grad():
                d_real = D(real)
            loss_g = loss_g + reg(real, fake, d_real)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        reg.step()
    with torch.no_grad():
        final_samples = G(z_eval[:1000])
    return {"history": history, "final": history[-1], "samples": final_samples.tolist()}


def _worker(job: tuple) -> dict:
    torch.set_num_threads(1)
    return run(*job)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/primal_dual_mixture")
    p.add_argument("--full", action="store_true", help="40k iterations as in Fig. 2")
    p.add_argument("--iters", type=int, default=10000)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default="gan,gan_ns,primaldual")
    p.add_argument("--alpha", type=float, default=10.0, help="dual step size (not given in the paper)")
    p.add_argument("--jobs", type=int, default=1, help="parallel worker processes (one thread each)")
    p.add_argument("--sigma2", type=float, default=0.1, help="initial sigma^2")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--smoke", action="store_true", help="a few seconds on tiny settings: checks the script end to end (the tests run it), not its numbers")
    args = p.parse_args()
    if args.smoke:
        args.iters, args.eval_every, args.seeds, args.jobs = 20, 10, "0", 1
    if args.full:
        args.iters = 40000
        args.eval_every = 2000
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    t0 = time.time()
    results: dict = {m: {} for m in methods}
    jobs = [(m, s) for s in seeds for m in methods]
    if args.jobs > 1:
        ctx = mp.get_context("spawn")
        with ctx.Pool(args.jobs) as pool:
            outs = list(tqdm(pool.imap(_worker, [(m, s, args) for m, s in jobs]), total=len(jobs), desc="runs"))
    else:
        outs = [run(m, s, args) for m, s in tqdm(jobs, desc="runs")]
    for (m, s), r in zip(jobs, outs):
        results[m][str(s)] = r
    table = {m: {s: {k: r["final"][k] for k in ("modes", "high_quality")} for s, r in rs.items()} for m, rs in results.items()}
    payload = {"settings": vars(args), "seconds": time.time() - t0, "final": table, "results": results}
    write_json(os.path.join(args.out, "primal_dual_mixture.json"), payload, indent=None)

    fig, axes = plt.subplots(len(methods), len(seeds) + 1, figsize=(3.3 * (len(seeds) + 1), 3.2 * len(methods)), squeeze=False)
    ref = sample_data(1000, torch.Generator().manual_seed(7))
    for i, m in enumerate(methods):
        for j, s in enumerate(seeds):
            ax = axes[i][j]
            r = results[m][str(s)]
            x = torch.tensor(r["samples"])
            ax.scatter(ref[:, 0], ref[:, 1], s=2, c="C0", alpha=0.5)
            ax.scatter(x[:, 0], x[:, 1], s=2, c="C1", alpha=0.5)
            ax.set(xlim=(-3, 3), ylim=(-3, 3), xticks=[], yticks=[],
                   title=f"{m} seed {s}: {r['final']['modes']} modes, HQ {r['final']['high_quality']:.2f}")
            ax.title.set_fontsize(8)
        ax = axes[i][-1]
        for s in seeds:
            h = results[m][str(s)]["history"]
            ax.plot([e["iter"] for e in h], [e["modes"] for e in h], label=f"seed {s}")
        ax.set(ylim=(-0.5, 8.5), xlabel="iteration", ylabel="modes covered", title=m)
        ax.legend(fontsize=7)
    fig.suptitle(f"8 Gaussians (std 0.02, radius 2), {args.iters} iterations, alpha {args.alpha}, sigma^2 {args.sigma2} decaying")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "primal_dual_mixture.png"), dpi=80)
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
