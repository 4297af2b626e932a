"""Float32 against float64 (and Ipopt) for the score-linearised trust-region dual.

Question: how accurate and how fast is the float32 path of the batched Newton solver, with
float64 refinement of the problems float32 cannot certify (``promote``), against float64 and
Ipopt, on the kernels a discriminator step really produces?

Problems: K = J J^T, J w, F and ||w||^2 from per-sample score gradients of small MLP
discriminators (2-D inputs, one hidden layer, tanh) on mixed real/fake batches of n real
and n fake points, one network per problem (seeds 0..B-1), C = 1e-4 and two radii (a
binding 1e-3 and inf). Each method solves the batch of B problems in one call (Ipopt one
by one); the time is the best of ``--repeats`` calls. Accuracy: the duality gap (the
certificate), the dual value's difference from float64, and the relative difference of the
step's dual variables from float64.

    python benchmarks/dual_precision/bench.py --threads 1            # the committed results
    python benchmarks/dual_precision/bench.py --smoke --out /tmp/x   # seconds (the test suite)
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from benchmarks.common.provenance import write_json  # noqa: E402

import gameopt  # noqa: E402
from gameopt.solvers import TorchNewtonSolver, solve_trust_region_dual  # noqa: E402


def problems(B: int, n: int, hidden: int, device: str) -> tuple[torch.Tensor, ...]:
    """(K, Jw, F, W) of B discriminators, stacked: (B, 2n, 2n), (B, 2n), (B, 2n), (B,)."""
    Ks, Jws, Fs, Ws = [], [], [], []
    for seed in range(B):
        torch.manual_seed(seed)
        D = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
        d = gameopt.TrustRegionDualDiscriminator(D, model="score", C=1e-4)
        real = torch.randn(n, 2) * 0.3 + torch.tensor([1.0, 0.0])
        fake = torch.randn(n, 2) * 0.5
        K, Jw, F = d.kernel(torch.cat([real, fake]))
        Ks.append(K), Jws.append(Jw), Fs.append(F)
        Ws.append(sum(float((p.detach().double() ** 2).sum()) for p in D.parameters()))
    return (torch.stack(Ks).to(device), torch.stack(Jws).to(device), torch.stack(Fs).to(device),
            torch.tensor(Ws, dtype=torch.float64, device=device))


def timed(fn, device: str, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return out, best


def summary(res, ref) -> dict:
    gap = res.gap.double().cpu()
    out = {"gap_max": float(gap.max()), "gap_median": float(gap.median()),
           "converged": int(res.converged.sum()), "problems": int(gap.numel())}
    if ref is not None:
        e = torch.cat([res.lam, res.mu], -1).double().cpu()
        e64 = torch.cat([ref.lam, ref.mu], -1).double().cpu()
        out["dual_rel_diff_max"] = float(((e - e64).norm(dim=-1) / e64.norm(dim=-1)).max())
        out["dual_value_diff_max"] = float((res.dual_value.double().cpu() - ref.dual_value.double().cpu()).abs().max())
    return out


def meta(args) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = None
    return {"commit": commit, "command": " ".join(sys.argv), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "threads": torch.get_num_threads(),
            "device": args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(),
            "cpu": platform.processor() or platform.machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results.json"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64, help="problems per batch B")
    ap.add_argument("--n", type=int, default=64, help="real (and fake) samples per problem: m = 2n")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ipopt", type=int, default=16, help="problems solved by Ipopt (one at a time); 0: none")
    ap.add_argument("--smoke", action="store_true", help="tiny setting (seconds), for the test suite")
    args = ap.parse_args(argv)
    if args.smoke:
        args.batch, args.n, args.hidden, args.repeats, args.ipopt = 3, 6, 8, 1, 1
    torch.set_num_threads(args.threads)
    K, Jw, F, W = problems(args.batch, args.n, args.hidden, args.device)
    rows = []
    for delta in (1e-3, float("inf")):
        solvers = {
            "float64": TorchNewtonSolver(dtype=torch.float64),
            "float32": TorchNewtonSolver(dtype=torch.float32, promote=False),
            "float32+promote": TorchNewtonSolver(dtype=torch.float32, promote=True),
        }
        ref = None
        for name, slv in solvers.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res, t = timed(lambda: solve_trust_region_dual(K, Jw, F, W, 1e-4, delta, solver=slv, on_failure="ignore"),
                               args.device, args.repeats)
            row = {"delta": delta, "solver": name, "tol": slv.tol, "seconds": t, "ms_per_problem": 1e3 * t / args.batch,
                   **summary(res, ref)}
            if name == "float64":
                ref = res
            if name == "float32+promote":
                row["iterations_mean"] = float(res.iterations.double().mean())
            rows.append(row)
            print(json.dumps(row))
        if args.ipopt:
            k = min(args.ipopt, args.batch)
            try:
                slv = gameopt.solvers.get_solver("ipopt")
            except ImportError:
                slv = None
            if slv is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res, t = timed(lambda: solve_trust_region_dual(K[:k].cpu(), Jw[:k].cpu(), F[:k].cpu(), W[:k].cpu(),
                                                                   1e-4, delta, solver=slv, on_failure="ignore"),
                                   "cpu", 1)
                sub = solve_trust_region_dual(K[:k], Jw[:k], F[:k], W[:k], 1e-4, delta, solver=solvers["float64"])
                row = {"delta": delta, "solver": "ipopt", "tol": slv.tol, "seconds": t, "ms_per_problem": 1e3 * t / k,
                       **summary(res, sub)}
                rows.append(row)
                print(json.dumps(row))
    for delta in (1e-3, float("inf")):
        base = next(r for r in rows if r["delta"] == delta and r["solver"] == "float64")
        for r in rows:
            if r["delta"] == delta:
                r["speed_vs_float64"] = base["ms_per_problem"] / r["ms_per_problem"]
    out = {"meta": meta(args), "settings": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows}
    write_json(args.out, out, indent=1)
    return out


if __name__ == "__main__":
    main()
