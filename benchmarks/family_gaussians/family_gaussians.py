"""Every game optimiser on the 8-Gaussian game at equal wall time (three seeds), with a figure
of quality against wall time.

The game of "The Numerics of GANs" (Mescheder et al. 2017, section 5; ``examples/eight_gaussians.py``):
8 Gaussians of std 0.01 on the unit circle, MLP players (4 hidden layers of 16 ReLU units), z 16,
batch 512, non-saturating loss (CGD/ACGD, which need a zero-sum game: the minimax loss
``(-disc_loss, disc_loss)``), RMSProp lr 1e-4 as the paper (CGD: its own step, lr 1e-4; ACGD lr 1e-4).

Four sub-commands:

    # 1. per-step cost of every method, interleaved round-robin, 1 thread (on an otherwise idle machine)
    OMP_NUM_THREADS=1 python benchmarks/family_gaussians/family_gaussians.py cost --out benchmarks/family_gaussians/results
    # 2. one run: the step count is the budget (--budget consensus steps) times the cost ratio
    python benchmarks/family_gaussians/family_gaussians.py run --method sga --seed 0 --out benchmarks/family_gaussians/results
    # 3. the table (final metrics, mean +- std over seeds) and the figure (metrics against time)
    python benchmarks/family_gaussians/family_gaussians.py table --out benchmarks/family_gaussians/results
    # every stage on tiny settings, in seconds (the tests run it)
    python benchmarks/family_gaussians/family_gaussians.py smoke --out runs/family_smoke

Wall time in the figure and the table is *equivalent* time: steps times the method's median
step time from ``cost`` (measured in one run on an otherwise idle machine), never the runs' own clocks (they ran as
background jobs on a shared machine). Runs write ``runs/<method>_s<seed>.json``; the table reads them.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: gameopt and benchmarks.common

import gameopt  # noqa: E402
from gameopt.toy_games import mixture_metrics, mlp, ring_centers, sample_mixture  # noqa: E402
from benchmarks.common.provenance import write_json  # noqa: E402

STD = 0.01
Z_DIM = 16
BATCH = 512
LR = 1e-4
GAMMA = 10.0
METHODS = ["simga", "altga", "consensus", "consensus_lazy", "extragradient", "optimistic", "sga",
           "lookahead", "lookahead_eg", "cgd", "acgd", "r3gan", "consensus_r1"]
LABELS = {
    "simga": "SimGA", "altga": "AltGA", "consensus": "consensus (gamma 10)",
    "consensus_lazy": "consensus, every=4", "extragradient": "extragradient", "optimistic": "optimistic",
    "sga": "SGA (lam 1)", "lookahead": "lookahead (AltGA, k 5)", "lookahead_eg": "lookahead (extragradient, k 5)",
    "cgd": "CGD (zero-sum loss)", "acgd": "ACGD (zero-sum loss)",
    "r3gan": "RpGAN + R1 + R2 (SimGA)", "consensus_r1": "consensus + R1",
}
#: R1 / R2 weight of the practitioner's baselines (r3gan, consensus_r1); not tuned for this game.
PENALTY_GAMMA = 1.0
ZERO_SUM = {"cgd", "acgd"}


def build(method: str, G: torch.nn.Module, D: torch.nn.Module) -> Any:
    gp, dp = list(G.parameters()), list(D.parameters())
    rms = torch.optim.RMSprop
    if method in ("simga", "r3gan"):
        return gameopt.SimultaneousOptimizer(rms, gp, dp, lr=LR)
    if method == "altga":
        return gameopt.AlternatingOptimizer(rms, gp, dp, lr=LR)
    if method in ("consensus", "consensus_r1"):
        return gameopt.ConsensusOptimizer(rms, gp, dp, gamma=GAMMA, lr=LR)
    if method == "consensus_lazy":
        return gameopt.ConsensusOptimizer(rms, gp, dp, gamma=GAMMA, every=4, lr=LR)
    if method == "extragradient":
        return gameopt.ExtragradientOptimizer(rms, gp, dp, lr=LR)
    if method == "optimistic":
        return gameopt.OptimisticOptimizer(rms, gp, dp, lr=LR)
    if method == "sga":
        return gameopt.SGAOptimizer(rms, gp, dp, lam=1.0, lr=LR)
    if method == "lookahead":
        return gameopt.LookaheadMinmax(gameopt.AlternatingOptimizer(rms, gp, dp, lr=LR), k=5, alpha=0.5)
    if method == "lookahead_eg":
        return gameopt.LookaheadMinmax(gameopt.ExtragradientOptimizer(rms, gp, dp, lr=LR), k=5, alpha=0.5)
    if method in ("cgd", "acgd"):
        return gameopt.CompetitiveOptimizer(gp, dp, lr=LR, adaptive=method == "acgd")
    raise ValueError(f"unknown method {method!r}; use one of {METHODS}")


def game(seed: int, method: str) -> tuple[torch.nn.Module, torch.nn.Module, Callable[[], tuple], torch.Tensor]:
    torch.manual_seed(seed)
    G, D = mlp(Z_DIM, 2), mlp(2, 1)
    centers = ring_centers(8, 1.0)
    gen = torch.Generator().manual_seed(seed + 1)
    r1 = gameopt.GradientPenalty("r1", gamma=PENALTY_GAMMA)
    r2 = gameopt.GradientPenalty("r2", gamma=PENALTY_GAMMA)

    def losses() -> tuple[torch.Tensor, torch.Tensor]:
        x = sample_mixture(BATCH, centers, STD, gen)
        fake = G(torch.randn(BATCH, Z_DIM, generator=gen))
        d_fake = D(fake)
        if method == "r3gan":   # the practitioner's baseline (R3GAN): relativistic pairing loss, R1 + R2
            gen_loss, disc_loss = gameopt.relativistic_losses(D(x), d_fake)
            return gen_loss, disc_loss + r1(D, real=x) + r2(D, fake=fake)
        disc_loss = F.softplus(-D(x)).mean() + F.softplus(d_fake).mean()
        if method == "consensus_r1":
            disc_loss = disc_loss + r1(D, real=x)
        if method in ZERO_SUM:
            return -disc_loss, disc_loss
        return F.softplus(-d_fake).mean(), disc_loss

    return G, D, losses, centers


def cost(args: argparse.Namespace) -> None:
    methods = args.methods.split(",")
    built = {}
    for m in methods:
        G, D, losses, _ = game(0, m)
        built[m] = (build(m, G, D), losses)
    for opt, losses in built.values():
        for _ in range(args.warmup):
            opt.step(losses)
    times: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.rounds):
        for m in methods:
            opt, losses = built[m]
            t0 = time.perf_counter()
            for _ in range(args.steps):
                opt.step(losses)
            times[m].append((time.perf_counter() - t0) / args.steps)
    med = {m: statistics.median(v) for m, v in times.items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"torch": torch.__version__, "threads": torch.get_num_threads(), "rounds": args.rounds,
           "steps_per_round": args.steps,
           "ms_per_step": {m: 1e3 * v for m, v in med.items()},
           "ratio_vs_consensus": {m: v / med["consensus"] for m, v in med.items()} if "consensus" in med else {}}
    write_json(out / "step_cost.json", res)
    for m in methods:
        print(f"{m:16s} {1e3 * med[m]:8.2f} ms/step")


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    costs = json.loads((out / "step_cost.json").read_text())["ms_per_step"]
    steps = int(round(args.budget * costs["consensus"] / costs[args.method]))
    path = out / "runs" / f"{args.method}_s{args.seed}.json"
    if path.exists():
        print(f"{path} exists: skipping")
        return
    G, D, losses, centers = game(args.seed, args.method)
    opt = build(args.method, G, D)
    z_eval = torch.randn(4000, Z_DIM, generator=torch.Generator().manual_seed(args.seed + 2))
    marks = sorted({round(steps * i / args.points) for i in range(args.points + 1)})
    curve = []
    for step in range(steps + 1):
        if step in marks:
            with torch.no_grad():
                samples = G(z_eval)
            m = mixture_metrics(samples, centers, STD).as_dict()
            m.update(step=step, time_s=step * costs[args.method] / 1e3)
            curve.append(m)
        if step == steps:
            break
        opt.step(losses)
    with torch.no_grad():
        final_samples = G(z_eval[:1000]).tolist()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"method": args.method, "seed": args.seed, "steps": steps, "budget": args.budget,
                      "ms_per_step": costs[args.method], "curve": curve,
                      "skipped_steps": opt.skipped_steps, "samples": final_samples}, indent=None)
    f = curve[-1]
    print(f"{args.method} s{args.seed}: {steps} steps, modes {f['modes_covered']}/8, hq {f['high_quality']:.3f}, KL {f['kl']:.3f}")


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}"


def table(args: argparse.Namespace) -> None:
    out = Path(args.out)
    runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    by_method: dict[str, list[dict]] = {}
    for r in runs:
        by_method.setdefault(r["method"], []).append(r)
    order = [m for m in METHODS if m in by_method]
    lines = ["| method | steps | ms/step | seeds | modes (/8) | high-quality fraction | KL | per seed (modes, KL) |",
             "|---|---|---|---|---|---|---|---|"]
    summary = {}
    for m in order:
        rs = sorted(by_method[m], key=lambda r: r["seed"])
        finals = [r["curve"][-1] for r in rs]
        modes = [f["modes_covered"] for f in finals]
        hq = [f["high_quality"] for f in finals]
        kl = [f["kl"] for f in finals]
        per_seed = ", ".join(f"s{r['seed']}: {f['modes_covered']}, {f['kl']:.2f}" for r, f in zip(rs, finals))
        lines.append(f"| {LABELS[m]} | {rs[0]['steps']} | {rs[0]['ms_per_step']:.2f} | {len(rs)} | "
                     f"{_mean_std(modes)} | {_mean_std(hq)} | {_mean_std(kl)} | {per_seed} |")
        summary[m] = {"steps": rs[0]["steps"], "modes": modes, "high_quality": hq, "kl": kl}
    (out / "table.md").write_text("\n".join(lines) + "\n")
    write_json(out / "summary.json", summary)
    print("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, m in enumerate(order):
        rs = by_method[m]
        t = [p["time_s"] for p in rs[0]["curve"]]
        for ax, key in zip(axes, ("kl", "modes_covered")):
            vals = [[r["curve"][j][key] for r in rs] for j in range(len(t))]
            mean = [statistics.mean(v) for v in vals]
            ax.plot(t, mean, label=LABELS[m], color=plt.cm.tab20(i), ls="-" if i < 10 else "--")
    axes[0].set_ylabel("KL(mode histogram || uniform), mean of seeds (lower is better)")
    axes[1].set_ylabel("modes covered (/8), mean of seeds")
    for ax in axes:
        ax.set_xlabel("equivalent wall time (s): steps x measured ms/step")
    axes[1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "quality_vs_time.png", dpi=110)

    centers = ring_centers(8, 1.0).numpy()
    fig, axes = plt.subplots(1, len(order), figsize=(2.1 * len(order), 2.4), squeeze=False)
    for ax, m in zip(axes[0], order):
        r = next(r for r in by_method[m] if r["seed"] == 0) if any(r["seed"] == 0 for r in by_method[m]) else by_method[m][0]
        s = torch.tensor(r["samples"])
        ax.scatter(s[:, 0], s[:, 1], s=1, alpha=0.3)
        ax.scatter(centers[:, 0], centers[:, 1], s=10, color="tab:red", marker="x")
        ax.set_xlim(-1.6, 1.6)
        ax.set_ylim(-1.6, 1.6)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{LABELS[m]}\nseed {r['seed']}", fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=110)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--methods", default=",".join(METHODS))
    c.add_argument("--rounds", type=int, default=7)
    c.add_argument("--steps", type=int, default=30)
    c.add_argument("--warmup", type=int, default=10)
    r = sub.add_parser("run")
    r.add_argument("--method", choices=METHODS, required=True)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--budget", type=int, default=5000, help="consensus steps of wall time every method gets")
    r.add_argument("--points", type=int, default=12, help="evaluations along the run")
    t = sub.add_parser("table")
    s = sub.add_parser("smoke", help="cost, two runs and the table on tiny settings (a few seconds; the tests run it)")
    for p in (c, r, t, s):
        p.add_argument("--out", default="runs/family_gaussians")
        p.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    {"cost": cost, "run": run, "table": table, "smoke": smoke}[args.cmd](args)


def smoke(args: argparse.Namespace) -> None:
    """Every stage on tiny settings: checks the script end to end, not its numbers."""
    cost(argparse.Namespace(**vars(args), methods="consensus,simga", rounds=1, steps=2, warmup=1))
    for method in ("consensus", "simga"):
        run(argparse.Namespace(**vars(args), method=method, seed=0, budget=4, points=2))
    table(args)


if __name__ == "__main__":
    main()
