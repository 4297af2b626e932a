"""Cost of the primal-dual term: generator step with vs without it, batch 64, one process.

Cases:
  2d    : the 8-Gaussian networks of appendix 7.4 (G 256-128-128-2, D 2-128-1).
  3072d : image-sized samples (G 128-512-3072, D 3072-512-1) with the kernel in a
          fixed 64-dim random projection (eq. 17, gameopt.primal_dual.RandomProjection).
A step = sample z, G forward, D forward, loss, backward, Adam step (and, with the
term, D on the data batch, the regulariser and reg.step()).  The two variants are
timed alternately (interleaved) and compared as the ratio of medians (target <= 1.3).

--memory-check (also on with --full) runs the term once, forward + backward, on 8192
data x 8192 generated samples of dimension 3072 (no feature map) in a fresh process
and records its peak resident memory; the (n, m, d) difference tensor would be 824 GB.

Writes <out>/primal_dual_cost.json and .png.

    python benchmarks/primal_dual_cost/primal_dual_cost.py
    python benchmarks/primal_dual_cost/primal_dual_cost.py --full
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
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

from gameopt.primal_dual import PrimalDualRegularizer, RandomProjection, get_divergence  # noqa: E402


def build(case: str):
    torch.manual_seed(0)
    if case == "2d":
        zdim, dim = 256, 2
        G = nn.Sequential(nn.Linear(zdim, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, dim))
        D = nn.Sequential(nn.Linear(dim, 128), nn.ReLU(), nn.Linear(128, 1))
        fmap, sigma = None, 0.3
    else:
        zdim, dim = 128, 3072
        G = nn.Sequential(nn.Linear(zdim, 512), nn.ReLU(), nn.Linear(512, dim), nn.Tanh())
        D = nn.Sequential(nn.Linear(dim, 512), nn.LeakyReLU(0.2), nn.Linear(512, 1))
        fmap, sigma = RandomProjection(dim, 64, seed=0), 20.0
    return zdim, dim, G, D, fmap, sigma


def time_case(case: str, reps: int, warmup: int, batch: int) -> dict:
    zdim, dim, G, D, fmap, sigma = build(case)
    js = get_divergence("js")
    reg = PrimalDualRegularizer(js, alpha=1.0, bandwidth=sigma, feature_map=fmap)
    opt = torch.optim.Adam(G.parameters(), lr=1e-4)
    real = torch.rand(batch, dim) * 2 - 1

    def step(with_term: bool) -> float:
        t0 = time.perf_counter()
        fake = G(torch.randn(batch, zdim))
        loss = js.generator_loss(D(fake))
        if with_term:
            with torch.no_grad():
                d_real = D(real)
            loss = loss + reg(real, fake, d_real)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if with_term:
            reg.step()
        return time.perf_counter() - t0

    for _ in range(warmup):
        step(False)
        step(True)
    base, term = [], []
    for _ in tqdm(range(reps), desc=case, leave=False):
        base.append(step(False))
        term.append(step(True))
    mb, mt = statistics.median(base), statistics.median(term)
    return {"median_ms_without": mb * 1e3, "median_ms_with": mt * 1e3, "ratio": mt / mb,
            "times_ms_without": [t * 1e3 for t in base], "times_ms_with": [t * 1e3 for t in term]}


def _memory_child(q) -> None:
    torch.set_num_threads(1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.manual_seed(0)
    n, d = 8192, 3072
    real = torch.rand(n, d)
    fake = (torch.rand(n, d) * 0.9).requires_grad_()
    reg = PrimalDualRegularizer("js", alpha=1.0, bandwidth=25.0, chunk_size=1024)
    t0 = time.perf_counter()
    v = reg(real, fake, torch.full((n,), 2.0))
    v.backward()
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    q.put({"n": n, "m": n, "d": d, "chunk_size": 1024, "seconds": secs,
           "peak_rss_mb": peak / 1024, "rss_before_mb": before / 1024,
           "inputs_and_grad_mb": 3 * n * d * 4 / 2**20,
           "finite": bool(torch.isfinite(v) and torch.isfinite(fake.grad).all())})


def memory_check() -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_memory_child, args=(q,))
    p.start()
    out = q.get()
    p.join()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/primal_dual_cost")
    p.add_argument("--full", action="store_true", help="more repetitions and the 8192x8192x3072 memory check")
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--memory-check", action="store_true")
    p.add_argument("--smoke", action="store_true", help="a few seconds on tiny settings: checks the script end to end (the tests run it), not its numbers")
    args = p.parse_args()
    if args.full:
        args.reps, args.memory_check = 1000, True
    if args.smoke:
        args.reps, args.warmup, args.batch = 2, 1, 4
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    results = {case: time_case(case, args.reps, args.warmup, args.batch) for case in tqdm(("2d", "3072d"), desc="cases")}
    payload = {"settings": vars(args), "torch": torch.__version__, "threads": 1, "results": results}
    if args.memory_check:
        payload["memory_check"] = memory_check()
    write_json(os.path.join(args.out, "primal_dual_cost.json"), payload, indent=None)

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, (case, r) in zip(axes, results.items()):
        ax.boxplot([r["times_ms_without"], r["times_ms_with"]], showfliers=False)
        ax.set_xticks([1, 2], ["without term", "with term"])
        ax.set(ylabel="generator step (ms)", title=f"{case}, batch {args.batch}: ratio of medians {r['ratio']:.2f}")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "primal_dual_cost.png"), dpi=80)
    summary = {c: {k: round(v, 3) for k, v in r.items() if not k.startswith("times")} for c, r in results.items()}
    if args.memory_check:
        summary["memory_check"] = payload["memory_check"]
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
