"""Cost of a discriminator step with an R1 gradient penalty against a plain discriminator step.

One run, one thread by default, every method on its own copy of the same DCGAN-like players,
steps interleaved round-robin so machine noise hits all methods alike:

  plain        D step: non-saturating loss on a real and a generated batch, backward, Adam step
  r1           the same plus gameopt.GradientPenalty("r1") on the real batch, every step
  r1_lazy      the same with every=16 (StyleGAN2's lazy R1): timed as the mean over whole
               16-step cycles (a median would hide the regularised step)
  consensus    a full game step of gameopt.ConsensusOptimizer (gamma 1), both players
  consensus_r1 the same with R1 in the discriminator's loss: consensus then differentiates
               the penalty once more (third derivatives)
  backprop     D(real).mean().backward() alone: one forward and backward of D on the real batch
  r1_only      GradientPenalty("r1")(D, real).backward() alone: the penalty's own cost (forward,
               backward with create_graph, double backward), reported against backprop

Ratios: per round (per 16-round block for r1_lazy), the method's time over plain's in the same
round, then the median; consensus_r1 is also reported against consensus. Each step is timed by
the wall clock and by the process's CPU time; with one thread the CPU-time ratios are the ones to
quote on a shared machine (other processes' load inflates wall times, not this process's CPU time). The published anchor
for eager double backprop is 5-7x a plain D step (StyleGAN2 reports R1 at every step as the
dominant cost, which lazy regularisation removes).

    python benchmarks/gradient_penalty_cost/cost.py --threads 1 --out benchmarks/gradient_penalty_cost/results
    python benchmarks/gradient_penalty_cost/cost.py --smoke --out /tmp/gp_smoke     # a few seconds
"""

from __future__ import annotations

import argparse
import copy
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
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
import gameopt  # noqa: E402
from benchmarks.common.provenance import write_json  # noqa: E402

METHODS = ["plain", "r1", "r1_lazy", "consensus", "consensus_r1", "backprop", "r1_only"]
LAZY = 16


def players(size: int, width: int, z_dim: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The DCGAN-like pair of the image benchmarks (the one place this study imports them from)."""
    from benchmarks.common.dcgan import dcgan_discriminator, dcgan_generator
    torch.manual_seed(0)
    return dcgan_generator(z_dim=z_dim, width=width, size=size), dcgan_discriminator(width=width, size=size)


class Method:
    """One method's players, optimiser and penalty; ``step(x, z)`` runs one timed step."""

    def __init__(self, name: str, G: torch.nn.Module, D: torch.nn.Module, every: int) -> None:
        self.name = name
        self.G, self.D = copy.deepcopy(G), copy.deepcopy(D)
        self.pen = gameopt.GradientPenalty("r1", gamma=10.0, every=every if name == "r1_lazy" else 1)
        if name.startswith("consensus"):
            self.opt = gameopt.ConsensusOptimizer(torch.optim.Adam, self.G.parameters(), self.D.parameters(),
                                                  gamma=1.0, lr=2e-4, betas=(0.5, 0.999))
        else:
            self.opt = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def step(self, x: torch.Tensor, z: torch.Tensor) -> None:
        if self.name.startswith("consensus"):
            d_fake = self.D(self.G(z))
            gen_loss = F.softplus(-d_fake).mean()
            disc_loss = F.softplus(-self.D(x)).mean() + F.softplus(d_fake).mean()
            if self.name == "consensus_r1":
                disc_loss = disc_loss + self.pen(self.D, real=x)
            self.opt.zero_grad()
            self.opt.backward(gen_loss, disc_loss)
            self.opt.step()
            return
        if self.name in ("backprop", "r1_only"):
            self.D.zero_grad()
            (self.D(x).mean() if self.name == "backprop" else self.pen(self.D, real=x)).backward()
            return
        with torch.no_grad():
            fake = self.G(z)
        loss = F.softplus(-self.D(x)).mean() + F.softplus(self.D(fake)).mean()
        if self.name != "plain":
            loss = loss + self.pen(self.D, real=x)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()


def metadata(argv: list[str], threads: int) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "commit": commit, "command": " ".join([Path(sys.executable).name, *argv]),
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "threads": threads, "device": "cpu", "cpu": platform.processor() or platform.machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    G, D = players(args.size, args.width, args.z_dim)
    names = args.methods.split(",")
    if "plain" not in names or any(n not in METHODS for n in names):
        raise SystemExit(f"--methods must include plain and name only {METHODS}")
    methods = {name: Method(name, G, D, args.every) for name in names}
    g = torch.Generator().manual_seed(1)
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.warmup + args.rounds):
        x = torch.rand(args.batch, 3, args.size, args.size, generator=g) * 2 - 1
        z = torch.randn(args.batch, args.z_dim, generator=g)
        for name, m in methods.items():
            c0, t0 = time.process_time(), time.perf_counter()
            m.step(x, z)
            elapsed, elapsed_cpu = time.perf_counter() - t0, time.process_time() - c0
            if r >= args.warmup:
                times[name].append(elapsed)
                cpu[name].append(elapsed_cpu)
    blocks = len(times["plain"]) // args.every
    return {
        "question": "cost of a D step with R1 (every 1, every 16) and of consensus + R1, against plain steps",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "players": f"benchmarks/common/dcgan.py DCGAN-like, {args.size}x{args.size}, width {args.width}, no batch norm",
        "median_seconds": {name: statistics.median(ts) for name, ts in times.items()},
        "median_cpu_seconds": {name: statistics.median(ts) for name, ts in cpu.items()},
        "ratios": ratios(times, args.every),
        "cpu_ratios": ratios(cpu, args.every),
        "rounds_timed": len(times["plain"]),
        "lazy_cycles": blocks,
        **metadata(sys.argv, args.threads),
    }


def ratios(times: dict[str, list[float]], every: int) -> dict[str, float]:
    """Median per-round ratios against plain (per whole lazy cycle for r1_lazy) and consensus_r1 / consensus."""
    plain = np.array(times["plain"])

    def median_ratio(a: str, b: str) -> float:
        return float(np.median(np.array(times[a]) / np.array(times[b])))

    out = {name: median_ratio(name, "plain") for name in ("r1", "consensus", "consensus_r1") if name in times}
    if "r1_lazy" in times:   # whole cycles of `every` rounds from a computing call (warmup: a multiple of every)
        blocks = len(plain) // every
        lazy = np.array(times["r1_lazy"][: blocks * every]).reshape(blocks, every).sum(1)
        out["r1_lazy"] = float(np.median(lazy / plain[: blocks * every].reshape(blocks, every).sum(1)))
    if "consensus" in times and "consensus_r1" in times:
        out["consensus_r1_over_consensus"] = median_ratio("consensus_r1", "consensus")
    if "backprop" in times and "r1_only" in times:
        out["r1_term_over_backprop"] = median_ratio("r1_only", "backprop")
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=64, help="timed rounds (a multiple of --every)")
    p.add_argument("--warmup", type=int, default=16, help="untimed rounds (a multiple of --every)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--z-dim", type=int, default=128)
    p.add_argument("--every", type=int, default=LAZY, help="the lazy penalty's interval")
    p.add_argument("--methods", default="plain,r1,r1_lazy,consensus,consensus_r1",
                   help=f"comma-separated, from {','.join(METHODS)}; plain is the unit")
    p.add_argument("--smoke", action="store_true", help="tiny players and few rounds: a few seconds")
    p.add_argument("--out", type=Path, default=None, help="folder for results.json")
    args = p.parse_args(argv)
    if args.smoke:
        args.rounds, args.warmup, args.batch, args.size, args.width, args.z_dim, args.every = 4, 2, 8, 8, 8, 8, 2
    if args.rounds % args.every or args.warmup % args.every:
        p.error("--rounds and --warmup must be multiples of --every")
    result = run(args)
    print(json.dumps({k: result[k] for k in ("median_cpu_seconds", "ratios", "cpu_ratios")}, indent=1))
    if args.out is not None:
        write_json(args.out / "results.json", result, indent=1)
    return result


if __name__ == "__main__":
    main()
