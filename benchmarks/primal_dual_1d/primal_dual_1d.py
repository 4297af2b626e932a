"""1-D toy of Fig. 1 in Chen, Wang & Ge (ICLR 2018): data at x = 1, generator starting near -3.

Methods (appendix 7.3): one-hidden-layer ReLU networks of width 64, batch 32,
  gan       : sigmoid discriminator, Algorithm 1 losses for JS (saturating log(2(1 - D))), Adam 1e-4
  gan_ns    : same, non-saturating generator loss -log D (extra reference, not in the paper)
  wgan      : ReLU critic output, weights clipped to [-1, 1], RMSProp 1e-4
  primaldual: gan + PrimalDualRegularizer(js), bandwidth 0.5 then 0.1 after 2000 iterations
  primaldual_wide: same with a wider first bandwidth (--wide-sigma0, default 2.0) then 0.1
Records the central 90% interval (5%-95% quantiles) and median of 1000 generated
samples over iterations, and D(x) on a grid at a few iterations.  Writes
<out>/primal_dual_1d.json and .png.

    python benchmarks/primal_dual_1d/primal_dual_1d.py            # 3000 iterations
    python benchmarks/primal_dual_1d/primal_dual_1d.py --full     # 8000 iterations (Fig. 1 length)
"""

from __future__ import annotations

import argparse
import json
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

from gameopt.primal_dual import PrimalDualRegularizer, StepBandwidth, get_divergence  # noqa: E402

METHODS = ("gan", "gan_ns", "wgan", "primaldual", "primaldual_wide")


def mlp(out_act: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(1, 64), nn.ReLU(), nn.Linear(64, 1)]
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


def make_generator(init_center: float, init_scale: float) -> nn.Module:
    g = mlp()
    with torch.no_grad():  # samples start concentrated around init_center
        g[2].weight.mul_(init_scale)
        g[2].bias.fill_(init_center)
    return g


def flatten_left(d: nn.Sequential, edge: float) -> None:
    """Make every hidden ReLU unit of D inactive for x < edge, so D is exactly constant there.

    This is the situation Fig. 1 describes (the discriminator hardly changes around the
    generated samples): with a randomly initialised D the 1-D toy is not flat at -3 and
    all methods converge, see the note in the README section.
    """
    with torch.no_grad():
        w = d[0].weight.abs().clamp_min(0.1)  # positive slopes
        kinks = edge + torch.rand(w.shape[0], 1) * (3.0 - edge)  # kinks in [edge, 3]
        d[0].weight.copy_(w)
        d[0].bias.copy_((-w * kinks).reshape(-1))


def run(method: str, args: argparse.Namespace, grid: torch.Tensor) -> dict:
    torch.manual_seed(args.seed)
    G = make_generator(args.init_center, args.init_scale)
    D = mlp(nn.ReLU() if method == "wgan" else None)  # JS variants: raw logit, sigmoid inside the loss
    if args.d_init == "flat":
        flatten_left(D, args.flat_edge)
    if method == "wgan":
        opt_d = torch.optim.RMSprop(D.parameters(), lr=args.lr)
        opt_g = torch.optim.RMSprop(G.parameters(), lr=args.lr)
    else:
        opt_d = torch.optim.Adam(D.parameters(), lr=args.lr)
        opt_g = torch.optim.Adam(G.parameters(), lr=args.lr)
    js = get_divergence("js")
    sigma0 = args.wide_sigma0 if method == "primaldual_wide" else args.sigma0
    reg = PrimalDualRegularizer(js, alpha=args.alpha, bandwidth=StepBandwidth([sigma0, args.sigma1], [args.switch]))
    real = torch.ones(args.batch, 1)
    z_eval = torch.randn(1000, 1, generator=torch.Generator().manual_seed(1234))
    trace = {"iter": [], "q05": [], "q50": [], "q95": []}
    d_curves = {}
    snap = sorted({0, args.iters // 4, args.iters // 2, args.iters})

    def record(it: int) -> None:
        with torch.no_grad():
            x = G(z_eval).reshape(-1)
            q = torch.quantile(x, torch.tensor([0.05, 0.5, 0.95]))
        trace["iter"].append(it)
        for k, v in zip(("q05", "q50", "q95"), q.tolist()):
            trace[k].append(v)
        if it in snap:
            with torch.no_grad():
                out = D(grid.reshape(-1, 1)).reshape(-1)
                d_curves[str(it)] = (out if method == "wgan" else torch.sigmoid(out)).tolist()

    for it in tqdm(range(args.iters), desc=method, leave=False):
        if it % args.record_every == 0:
            record(it)
        for _ in range(args.d_steps):
            fake = G(torch.randn(args.batch, 1)).detach()
            if method == "wgan":
                loss_d = -(D(real).mean() - D(fake).mean())
            else:
                loss_d = js.discriminator_loss(D(real), D(fake))
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            if method == "wgan":
                with torch.no_grad():
                    for p in D.parameters():
                        p.clamp_(-1.0, 1.0)
        fake = G(torch.randn(args.batch, 1))
        d_fake = D(fake)
        if method == "wgan":
            loss_g = -d_fake.mean()
        elif method == "gan_ns":
            loss_g = torch.nn.functional.softplus(-d_fake).mean()  # -log D(G(z))
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
    record(args.iters)
    with torch.no_grad():
        d1 = D(torch.ones(1, 1)).item()
    return {"trace": trace, "d_curves": d_curves, "final_D_at_1": d1 if method == "wgan" else float(torch.sigmoid(torch.tensor(d1)))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/primal_dual_1d")
    p.add_argument("--full", action="store_true", help="8000 iterations as in Fig. 1")
    p.add_argument("--iters", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--sigma0", type=float, default=0.5)
    p.add_argument("--wide-sigma0", type=float, default=2.0)
    p.add_argument("--sigma1", type=float, default=0.1)
    p.add_argument("--switch", type=int, default=2000)
    p.add_argument("--d-steps", type=int, default=1, help="k0 of Algorithm 1")
    p.add_argument("--init-center", type=float, default=-3.0)
    p.add_argument("--init-scale", type=float, default=1.0, help="scale of the generator's output weights")
    p.add_argument("--d-init", choices=("flat", "default"), default="flat",
                   help="flat: D exactly constant for x < --flat-edge at start (Fig. 1 situation)")
    p.add_argument("--flat-edge", type=float, default=-1.0)
    p.add_argument("--record-every", type=int, default=50)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--smoke", action="store_true", help="a few seconds on tiny settings: checks the script end to end (the tests run it), not its numbers")
    args = p.parse_args()
    if args.full:
        args.iters = 8000
    if args.smoke:
        args.iters, args.switch, args.record_every = 20, 10, 10
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    grid = torch.linspace(-5, 3, 161)
    results = {}
    t0 = time.time()
    for m in tqdm(args.methods.split(","), desc="methods"):
        results[m] = run(m, args, grid)
    summary = {
        m: {"final_q05": r["trace"]["q05"][-1], "final_median": r["trace"]["q50"][-1], "final_q95": r["trace"]["q95"][-1],
            "final_D_at_1": r["final_D_at_1"]}
        for m, r in results.items()
    }
    payload = {"settings": vars(args), "seconds": time.time() - t0, "summary": summary, "grid": grid.tolist(), "results": results}
    write_json(os.path.join(args.out, "primal_dual_1d.json"), payload, indent=None)

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    colors = {"gan": "C0", "gan_ns": "C2", "wgan": "C1", "primaldual": "C3", "primaldual_wide": "C4"}
    ax = axes[0]
    for m, r in results.items():
        t = r["trace"]
        ax.fill_between(t["iter"], t["q05"], t["q95"], color=colors[m], alpha=0.25)
        ax.plot(t["iter"], t["q50"], color=colors[m], label=m)
    ax.axhline(1.0, color="k", ls=":", lw=1)
    ax.set(xlabel="iteration", ylabel="generated x (median, 5-95%)", title="(a) generated samples")
    ax.legend(loc="center right", fontsize=8)
    for ax, m, title in zip(axes[1:], ("primaldual_wide", "gan", "wgan"), ("(b) primal-dual (wide sigma) D(x)", "(c) GAN D(x)", "(d) WGAN critic")):
        if m not in results:
            ax.set_visible(False)
            continue
        for it, curve in results[m]["d_curves"].items():
            ax.plot(grid, curve, label=f"iter {it}")
        ax.axvline(1.0, color="k", ls=":", lw=1)
        ax.set(xlabel="x", title=title)
        ax.legend(fontsize=7)
    fig.suptitle(f"1-D toy, D init {args.d_init}, seed {args.seed}, {args.iters} iterations, sigma {args.sigma0} (wide {args.wide_sigma0})->{args.sigma1} at {args.switch}, alpha {args.alpha}")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "primal_dual_1d.png"), dpi=90)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
