"""Cost of one score-linearised trust-region discriminator step vs one Adam step.

DCGAN-like 32x32 discriminator without batch norm (the per-sample scores must be
independent): conv 3->64->128->256 (4x4, stride 2), LeakyReLU 0.2, linear -> 1 logit.
Batch n = 64 real + 64 fake. Both steps timed in the same run, alternating, after
warm-up; reports the ratio of medians (and the cost-linearised step too).

    python benchmarks/dual_step_cost.py [--device cuda] [--repeats 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gameopt import TrustRegionDualDiscriminator  # noqa: E402
from gameopt.solvers import solve_trust_region_dual  # noqa: E402


def dcgan_discriminator_no_bn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 64, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(128, 256, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(256 * 4 * 4, 1),
    )


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/dual_step_cost")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--budget-mib", type=int, default=512, help="jacobian_budget_bytes in MiB")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    dev = args.device
    torch.manual_seed(0)
    real = torch.randn(args.batch, 3, 32, 32, device=dev)
    fake = torch.randn(args.batch, 3, 32, 32, device=dev) * 0.5

    net_adam = dcgan_discriminator_no_bn().to(dev)
    net_score = dcgan_discriminator_no_bn().to(dev)
    net_cost = dcgan_discriminator_no_bn().to(dev)
    net_score.load_state_dict(net_adam.state_dict())
    net_cost.load_state_dict(net_adam.state_dict())
    adam = torch.optim.Adam(net_adam.parameters(), lr=2e-4, betas=(0.5, 0.999))
    C = 1e-4

    def adam_step():
        adam.zero_grad(set_to_none=True)
        out = net_adam(torch.cat([real, fake])).reshape(-1)
        n = real.shape[0]
        loss = (nn.functional.softplus(-out[:n]).mean() + nn.functional.softplus(out[n:]).mean()) / 2
        loss.backward()
        adam.step()

    score = TrustRegionDualDiscriminator(net_score, model="score", C=C, delta=1e-3,
                                         jacobian_budget_bytes=args.budget_mib * 2**20)
    cost = TrustRegionDualDiscriminator(net_cost, model="cost", C=C, delta=1e-3)
    x = torch.cat([real, fake])
    parts = {"kernel": [], "solve": []}

    def score_parts():
        with torch.no_grad():
            t0 = time.perf_counter()
            K, Jw, F = score.kernel(x)
            sync(dev)
            t1 = time.perf_counter()
            solve_trust_region_dual(K, Jw, F, 1.0, C, 1e-3, solver=score.solver)
            sync(dev)
            t2 = time.perf_counter()
        parts["kernel"].append(t1 - t0)
        parts["solve"].append(t2 - t1)

    steps = {"adam": adam_step, "score": lambda: score.step(real, fake), "cost": lambda: cost.step(real, fake)}
    times = {k: [] for k in steps}
    for fn in steps.values():  # warm-up (torch.func tracing, allocator)
        fn()
    score_parts()
    for _ in tqdm(range(args.repeats), desc="repeats"):
        for k, fn in steps.items():
            sync(dev)
            t = time.perf_counter()
            fn()
            sync(dev)
            times[k].append(time.perf_counter() - t)
        score_parts()

    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    res = {
        "median_ms": med,
        "score_over_adam": med["score"] / med["adam"],
        "cost_over_adam": med["cost"] / med["adam"],
        "score_parts_median_ms": {k: 1e3 * statistics.median(v) for k, v in parts.items()},
        "params": sum(p.numel() for p in net_adam.parameters()), "batch": args.batch, "device": dev,
        "threads": args.threads, "repeats": args.repeats, "last_score_stats": {
            k: getattr(score.last_stats, k) for k in ("accepted", "rho", "delta", "gap", "iterations")},
        "kernel_groups": len(score._param_groups(score._params(), 2 * args.batch)),
    }
    print(json.dumps(res, indent=1))
    with open(os.path.join(args.out, "results.json"), "w") as fh:
        json.dump(res, fh, indent=1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(med)
    ax.bar(names, [med[k] for k in names], color=["tab:gray", "tab:blue", "tab:orange"])
    ax.bar(["score parts"], [res["score_parts_median_ms"]["kernel"]], color="tab:green", label="kernel K=JJ^T")
    ax.bar(["score parts"], [res["score_parts_median_ms"]["solve"]], bottom=[res["score_parts_median_ms"]["kernel"]],
           color="tab:red", label="dual solve")
    ax.set_ylabel("ms per discriminator step (median)")
    ax.set_title(f"DCGAN-no-BN D, batch {args.batch}+{args.batch}, {dev}: score/Adam = {res['score_over_adam']:.2f}x")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "step_cost.png"), dpi=120)


if __name__ == "__main__":
    main()
