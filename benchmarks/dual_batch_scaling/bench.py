"""Cost of the score-linearised dual step against the batch size (batch 64, 256, 1024).

Question: how does one ``ScoreLinearisedDiscriminator.step`` scale with the batch, against a
consensus step on the same players, and where does the time go (kernel K = J J^T, dual solve,
the rest)?

Players: the 2-D toy (G: 4 -> 64 -> 64 -> 2 ReLU, D: 2 -> 64 -> 64 -> 1 ReLU, float32), n real
and n fake samples per step (m = 2n rows of K). For each n: the median time of ``--steps``
dual steps (after one warm-up step), of the kernel build alone and of the dual solve alone on
that kernel, and of ``--steps`` consensus steps (Adam, gamma 1) on the same batch.

    python benchmarks/dual_batch_scaling/bench.py --threads 1
    python benchmarks/dual_batch_scaling/bench.py --smoke --out /tmp/x.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from benchmarks.common.provenance import write_json  # noqa: E402

import gameopt  # noqa: E402
from gameopt.solvers import solve_trust_region_dual  # noqa: E402


def players(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    D = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    return G, D


def median_time(fn, steps: int) -> float:
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(n: int, steps: int) -> dict:
    g = torch.Generator().manual_seed(n)
    real = torch.randn(n, 2, generator=g) * 0.3 + 1.0
    z = torch.randn(n, 4, generator=g)
    G, D = players()
    d = gameopt.TrustRegionDualDiscriminator(D, model="score", C=1e-4, delta=1e-3)
    fake = G(z).detach()
    d.step(real, fake)  # warm-up
    dual_step = median_time(lambda: d.step(real, fake), steps)
    x = torch.cat([real, fake])
    kernel = median_time(lambda: d.kernel(x), steps)
    K, Jw, F = d.kernel(x)
    W = float(sum((p.detach().double() ** 2).sum() for p in D.parameters()))
    solve = median_time(lambda: solve_trust_region_dual(K, Jw, F, W, 1e-4, d.delta, solver=d.solver,
                                                        on_failure="ignore"), steps)
    res = solve_trust_region_dual(K, Jw, F, W, 1e-4, d.delta, solver=d.solver, on_failure="ignore")
    G2, D2 = players()
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, G2.parameters(), D2.parameters(), gamma=1.0, lr=1e-4)

    def losses():
        fk = G2(z)
        ld = nn.functional.softplus(-D2(real)).mean() + nn.functional.softplus(D2(fk)).mean()
        return nn.functional.softplus(-D2(fk)).mean(), ld

    opt.step(losses)
    consensus = median_time(lambda: opt.step(losses), max(steps, 3))
    return {"n": n, "m": 2 * n, "dual_step_ms": 1e3 * dual_step, "kernel_ms": 1e3 * kernel, "solve_ms": 1e3 * solve,
            "rest_ms": 1e3 * (dual_step - kernel - solve), "solver_iterations": int(res.iterations),
            "consensus_step_ms": 1e3 * consensus, "ratio_to_consensus": dual_step / consensus}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results.json"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", default="64,256,1024")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        args.batches, args.steps = "8,16", 1
    torch.set_num_threads(args.threads)
    rows = []
    for n in [int(b) for b in args.batches.split(",")]:
        rows.append(measure(n, args.steps if n < 1024 else 1))
        print(json.dumps(rows[-1]))
    for a, b in zip(rows, rows[1:]):
        b["growth_vs_previous"] = {k: b[k] / a[k] for k in ("dual_step_ms", "kernel_ms", "solve_ms", "consensus_step_ms")}
        b["batch_growth"] = b["n"] / a["n"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    out = {"meta": {"commit": commit, "command": " ".join(sys.argv), "python": platform.python_version(),
                    "torch": torch.__version__, "numpy": np.__version__, "threads": torch.get_num_threads(),
                    "device": "cpu", "cpu": platform.processor() or platform.machine(),
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
           "settings": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows}
    write_json(args.out, out, indent=1)
    return out


if __name__ == "__main__":
    main()
