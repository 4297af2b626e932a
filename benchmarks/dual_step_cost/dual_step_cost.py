"""Cost of one score-linearised trust-region discriminator step vs one Adam step.

DCGAN-like 32x32 discriminator without batch norm (the per-sample scores must be
independent): conv 3->64->128->256 (4x4, stride 2), LeakyReLU 0.2, linear -> 1 logit.
Batch n = 64 real + 64 fake. Both steps timed in the same run, alternating, after
warm-up; reports the ratio of medians (and the cost-linearised step too).

Where the score step's time goes is measured with torch.profiler over separate,
profiled steps (the library marks its phases with ``record_function``):
``kernel.passes`` (the forward and backward pass that give the scores and every layer's
inputs and output gradients), ``kernel.blocks`` (the rest of K = J J^T and J w),
``solve`` (the trust-region dual), ``jt_eta`` (J^T eta, the step), ``acceptance`` (the
forward pass at w + s) and ``other`` (what the step does besides).

    python benchmarks/dual_step_cost/dual_step_cost.py [--device cuda] [--repeats 10] [--threads 1]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: gameopt and benchmarks.common

from gameopt import TrustRegionDualDiscriminator  # noqa: E402
from benchmarks.common.provenance import write_json  # noqa: E402


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


PHASES = ("kernel.passes", "kernel", "solve", "jt_eta", "acceptance")


def score_phases(score, real, fake, device: str, steps: int) -> dict[str, float]:
    """Mean ms per score step in each phase, from torch.profiler's record_function ranges."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            with torch.profiler.record_function("gameopt.dual.step"):
                score.step(real, fake)
            sync(device)
    total = {e.key: e.cpu_time_total / 1e3 / steps for e in prof.key_averages() if e.key.startswith("gameopt.dual.")}
    out = {
        "kernel.passes": total.get("gameopt.dual.kernel.passes", 0.0),
        "kernel.blocks": total.get("gameopt.dual.kernel", 0.0) - total.get("gameopt.dual.kernel.passes", 0.0),
    }
    for name in PHASES[2:]:
        out[name] = total.get(f"gameopt.dual.{name}", 0.0)
    out["other"] = total.get("gameopt.dual.step", 0.0) - sum(out.values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/dual_step_cost")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--budget-mib", type=int, default=512, help="jacobian_budget_bytes in MiB")
    ap.add_argument("--profile-steps", type=int, default=3, help="profiled score steps for the phase breakdown")
    ap.add_argument("--replot", action="store_true", help="only redraw step_cost.png from --out/results.json")
    ap.add_argument("--smoke", action="store_true", help="a few seconds on tiny settings: checks the script end to end (the tests run it), not its numbers")
    args = ap.parse_args()
    if args.smoke:
        args.batch, args.repeats, args.profile_steps = 4, 1, 1
    if args.replot:
        with open(os.path.join(args.out, "results.json")) as fh:
            plot(json.load(fh), os.path.join(args.out, "step_cost.png"))
        return
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

    steps = {"adam": adam_step, "score": lambda: score.step(real, fake), "cost": lambda: cost.step(real, fake)}
    times = {k: [] for k in steps}
    for fn in steps.values():  # warm-up (allocator, lazy init)
        fn()
    for _ in tqdm(range(args.repeats), desc="repeats"):
        for k, fn in steps.items():
            sync(dev)
            t = time.perf_counter()
            fn()
            sync(dev)
            times[k].append(time.perf_counter() - t)

    phases = score_phases(score, real, fake, dev, args.profile_steps)
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    ratios = [s / a for s, a in zip(times["score"], times["adam"])]
    res = {
        "median_ms": med,
        "score_over_adam": med["score"] / med["adam"],
        "cost_over_adam": med["cost"] / med["adam"],
        "score_over_adam_per_repeat_range": [min(ratios), max(ratios)],
        "score_phases_ms_per_step": phases,
        "params": sum(p.numel() for p in net_adam.parameters()), "batch": args.batch, "device": dev,
        "threads": args.threads, "repeats": args.repeats, "profile_steps": args.profile_steps,
        "per_sample_route": "hooks" if score.jacobian.uses_hooks() else "func",
        "torch": torch.__version__,
        "last_score_stats": {
            k: getattr(score.last_stats, k) for k in ("accepted", "rho", "delta", "gap", "iterations")},
    }
    print(json.dumps(res, indent=1))
    write_json(os.path.join(args.out, "results.json"), res, indent=1, device=args.device)

    plot(res, os.path.join(args.out, "step_cost.png"))


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med, phases = res["median_ms"], res["score_phases_ms_per_step"]
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(med)
    ax.bar(names, [med[k] for k in names], color=["0.55", "0.25", "0.4"])
    bottom = 0.0
    for (phase, ms), color in zip(phases.items(), plt.cm.tab10.colors):
        ax.bar(["score phases\n(profiled)"], [ms], bottom=[bottom], color=color, label=phase)
        bottom += ms
    ax.set_ylabel("ms per discriminator step (median)")
    ax.set_title(f"DCGAN-no-BN D, batch {res['batch']}+{res['batch']}, {res['device']}: "
                 f"score/Adam = {res['score_over_adam']:.2f}x")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
