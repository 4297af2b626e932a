"""Speed and accuracy of the linear-dual solvers: Ipopt (accurate settings) vs torch Newton.

For each (n, d, C): ms per problem for Ipopt, the torch solver at batch 1 and at
batch 64 (time of one batched call / 64), and the duality gap of each. Writes
results.json and speed.png to --out.

    python benchmarks/dual_solver_speed/dual_solver_speed.py                 # default grid (a few minutes, CPU)
    python benchmarks/dual_solver_speed/dual_solver_speed.py --full          # full grid, more instances
    python benchmarks/dual_solver_speed/dual_solver_speed.py --device cuda   # same script on a GPU
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: gameopt and benchmarks.common

from gameopt.solvers import get_solver, solve_linear_dual  # noqa: E402
from benchmarks.common.provenance import write_json  # noqa: E402


def problem(B: int, n: int, d: int, seed: int, device: str):
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(B, n, d, generator=g, dtype=torch.float64)
    fake = torch.randn(B, n, d, generator=g, dtype=torch.float64) + 0.5
    return real.to(device), fake.to(device)


def timed(fn, device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/dual_solver_speed")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    ap.add_argument("--full", action="store_true", help="full grid with more instances per configuration")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--smoke", action="store_true", help="a few seconds on tiny settings: checks the script end to end (the tests run it), not its numbers")
    args = ap.parse_args()
    if args.smoke:
        args.batch = 4
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)

    ns, ds, Cs = ([8], [2], [1e-2]) if args.smoke else ([32, 64, 100, 256], [2, 100, 1000], [1e-4, 1e-2, 1.0])
    n_ipopt = 5 if args.full else (1 if args.smoke else 2)  # Ipopt instances per configuration
    n_single = 5 if args.full else 3  # torch batch-1 instances (after one warm-up)
    ipopt, torch_solver = get_solver("ipopt"), get_solver("torch")
    rows = []
    grid = list(itertools.product(ns, ds, Cs))
    for n, d, C in tqdm(grid, desc="configs"):
        seed = hash((n, d, C)) % 2**31
        real, fake = problem(max(args.batch, n_ipopt, n_single), n, d, seed, args.device)
        cpu_r, cpu_f = real.cpu(), fake.cpu()
        ip_t, ip_gap = [], []
        for i in range(n_ipopt):
            res, t = timed(lambda: solve_linear_dual(cpu_r[i], cpu_f[i], C, solver=ipopt), "cpu")
            ip_t.append(t)
            ip_gap.append(float(res.gap))
        solve_linear_dual(real[0], fake[0], C, solver=torch_solver)  # warm-up
        t1, g1 = [], []
        for i in range(n_single):
            res, t = timed(lambda: solve_linear_dual(real[i], fake[i], C, solver=torch_solver), args.device)
            t1.append(t)
            g1.append(float(res.gap))
        resb, tb = timed(lambda: solve_linear_dual(real[: args.batch], fake[: args.batch], C, solver=torch_solver),
                         args.device)
        row = {
            "n": n, "d": d, "C": C,
            "ipopt_ms": 1e3 * statistics.median(ip_t), "ipopt_gap_max": max(ip_gap),
            "torch_b1_ms": 1e3 * statistics.median(t1), "torch_b1_gap_max": max(g1),
            "torch_b64_ms": 1e3 * tb / args.batch, "torch_b64_gap_max": float(resb.gap.max()),
            "torch_b64_iters_max": int(resb.iterations.max()),
        }
        row["speedup_b1"] = row["ipopt_ms"] / row["torch_b1_ms"]
        row["speedup_b64"] = row["ipopt_ms"] / row["torch_b64_ms"]
        rows.append(row)
        tqdm.write(f"n={n:3d} d={d:4d} C={C:.0e}: ipopt {row['ipopt_ms']:8.2f} ms (gap {row['ipopt_gap_max']:.1e}) | "
                   f"torch b1 {row['torch_b1_ms']:7.2f} ms x{row['speedup_b1']:6.1f} | b{args.batch} "
                   f"{row['torch_b64_ms']:7.3f} ms x{row['speedup_b64']:7.1f} (gap {row['torch_b64_gap_max']:.1e})")

    summary = {
        "median_speedup_b1": statistics.median(r["speedup_b1"] for r in rows),
        "median_speedup_b64": statistics.median(r["speedup_b64"] for r in rows),
        "min_speedup_b64": min(r["speedup_b64"] for r in rows),
        "max_torch_gap": max(max(r["torch_b1_gap_max"], r["torch_b64_gap_max"]) for r in rows),
        "max_ipopt_gap": max(r["ipopt_gap_max"] for r in rows),
        "configs": len(rows), "ipopt_instances_per_config": n_ipopt, "batch": args.batch,
        "device": args.device, "threads": args.threads, "torch": torch.__version__, "machine": platform.processor(),
    }
    write_json(os.path.join(args.out, "results.json"), {"summary": summary, "rows": rows}, indent=1, device=args.device)
    print(json.dumps(summary, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    labels = [f"{r['n']}/{r['d']}/{r['C']:.0e}" for r in rows]
    x = range(len(rows))
    ax[0].semilogy(x, [r["ipopt_ms"] for r in rows], "o-", label="Ipopt (accurate)")
    ax[0].semilogy(x, [r["torch_b1_ms"] for r in rows], "s-", label="torch batch 1")
    ax[0].semilogy(x, [r["torch_b64_ms"] for r in rows], "^-", label=f"torch batch {args.batch} (per problem)")
    ax[0].set_ylabel("ms per problem")
    ax[0].legend()
    ax[1].semilogy(x, [max(r["ipopt_gap_max"], 1e-20) for r in rows], "o", label="Ipopt")
    ax[1].semilogy(x, [max(r["torch_b64_gap_max"], 1e-20) for r in rows], "^", label="torch")
    ax[1].axhline(1e-10, color="k", ls="--", lw=0.8)
    ax[1].set_ylabel("duality gap (max over instances)")
    ax[1].legend()
    for a in ax:
        a.set_xticks(list(x))
        a.set_xticklabels(labels, rotation=90, fontsize=6)
        a.set_xlabel("n / d / C")
    fig.suptitle(f"Linear dual: median speed-up x{summary['median_speedup_b1']:.1f} (batch 1), "
                 f"x{summary['median_speedup_b64']:.1f} (batch {args.batch}) over Ipopt, {args.device}")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "speed.png"), dpi=120)


if __name__ == "__main__":
    main()
