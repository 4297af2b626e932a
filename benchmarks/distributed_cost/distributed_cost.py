"""Communication volume and time per step of gameopt's data-parallel modes vs one process.

For each configuration, one process on the full batch is timed first, then R processes
(each with 1/R of the batch) run the same steps with ``distributed=True``; every
``torch.distributed`` collective gameopt calls is counted (calls, bytes of the result
per rank, time spent in it) by wrapping ``all_reduce`` / ``all_gather`` / ``broadcast``.

Configurations (8-Gaussian GAN MLPs, 4 hidden layers of ``width`` units, float32):
  simga        ConsensusOptimizer(gamma=0): one all-reduce of v (parameter size)
  consensus    gamma=10: + one all-reduce of J_r^T v (the consensus extra)
  consensus_pd consensus + PrimalDualRegularizer(distributed=True)
  dual_cost    TrustRegionDualDiscriminator("cost") step (small width only)
  dual_score   TrustRegionDualDiscriminator("score") step (small width only)

    python benchmarks/distributed_cost/distributed_cost.py                 # spawns 2 processes (gloo, 1 thread each)
    torchrun --nproc_per_node=2 benchmarks/distributed_cost/distributed_cost.py   # same, launched by torchrun

Uses NCCL and one GPU per rank when CUDA is available, unchanged. Writes
``results.json`` and ``distributed_cost.png`` to ``--out`` (default ``runs/distributed_cost``; the
committed copy is ``benchmarks/distributed_cost/results/``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: gameopt and benchmarks.common

import gameopt  # noqa: E402
from benchmarks.common.provenance import write_json  # noqa: E402
from gameopt.toy_games import mlp, ring_centers, sample_mixture  # noqa: E402

CONFIGS = ["simga", "consensus", "consensus_pd", "dual_cost", "dual_score"]
COLLECTIVES = ("all_reduce", "all_gather", "broadcast")


class CommLog:
    """Wraps torch.distributed collectives to count calls, bytes and seconds."""

    def __init__(self, sync) -> None:
        self.sync = sync
        self.records: list[tuple[str, int, float]] = []
        self._orig = {}

    def install(self) -> None:
        for name in COLLECTIVES:
            orig = getattr(dist, name)
            self._orig[name] = orig

            def wrapped(*args, _orig=orig, _name=name, **kwargs):
                t = args[0]
                nbytes = (sum(x.numel() * x.element_size() for x in t) if isinstance(t, list)
                          else t.numel() * t.element_size())
                self.sync()
                start = time.perf_counter()
                out = _orig(*args, **kwargs)
                self.sync()
                self.records.append((_name, nbytes, time.perf_counter() - start))
                return out

            setattr(dist, name, wrapped)

    def uninstall(self) -> None:
        for name, orig in self._orig.items():
            setattr(dist, name, orig)


def make_step(config: str, width: int, batch: int, rank: int, world: int, device, distributed: bool):
    """A closure doing one training step on this rank's share of a fixed global batch."""
    torch.manual_seed(0)
    G, D = mlp(16, 2, hidden=width).to(device), mlp(2, 1, hidden=width).to(device)
    gen = torch.Generator().manual_seed(1)
    x = sample_mixture(batch, ring_centers(8, 1.0), 0.01, gen)
    z = torch.randn(batch, 16, generator=gen)
    share = batch // world
    x, z = (t[rank * share:(rank + 1) * share].to(device) for t in (x, z))
    if config.startswith("dual"):
        disc = gameopt.TrustRegionDualDiscriminator(D, model=config.split("_")[1], C=1e-4, delta=1e-3,
                                                    distributed=distributed)
        with torch.no_grad():
            fake = G(z)

        def step():
            disc.step(x, fake)
        return step, sum(p.numel() for p in D.parameters())
    gamma = 0.0 if config == "simga" else 10.0
    opt = gameopt.ConsensusOptimizer(torch.optim.RMSprop, G.parameters(), D.parameters(), gamma=gamma, lr=1e-4,
                                     distributed=distributed)
    reg = gameopt.PrimalDualRegularizer("js", alpha=1.0, bandwidth=0.3, distributed=distributed) \
        if config == "consensus_pd" else None

    def step():
        fake = G(z)
        d_fake, d_real = D(fake), D(x)
        lg = F.softplus(-d_fake).mean()
        if reg is not None:
            lg = lg + reg(x, fake, d_real)
        ld = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        opt.zero_grad()
        opt.backward(lg, ld)
        opt.step()
    return step, sum(p.numel() for p in list(G.parameters()) + list(D.parameters()))


def time_steps(step, sync, warmup: int, reps: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def plan(args) -> list[tuple[str, int]]:
    out = []
    for width in args.widths:
        for config in CONFIGS:
            if config.startswith("dual") and width > args.dual_max_width:
                continue
            out.append((config, width))
    return out


def device_and_sync(rank: int):
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        return torch.device("cuda", local), torch.cuda.synchronize
    torch.set_num_threads(1)
    return torch.device("cpu"), (lambda: None)


def distributed_part(rank: int, world: int, args) -> list[dict] | None:
    device, sync = device_and_sync(rank)
    log = CommLog(sync)
    log.install()
    rows = []
    try:
        for config, width in plan(args):
            step, n_params = make_step(config, width, args.batch, rank, world, device, True)
            for _ in range(args.warmup):
                step()
            log.records.clear()
            dist.barrier()
            times = time_steps(step, sync, 0, args.reps)
            recs = list(log.records)
            per_step = {}
            for name in COLLECTIVES:
                mine = [r for r in recs if r[0] == name]
                per_step[name] = {"calls": len(mine) / args.reps, "bytes": sum(r[1] for r in mine) / args.reps}
            comm_s = sum(r[2] for r in recs) / args.reps
            # the ranks' times: report the slowest rank's median (the step ends when every rank is done)
            med = torch.tensor([statistics.median(times), comm_s], dtype=torch.float64)
            log.uninstall()
            dist.all_reduce(med, op=dist.ReduceOp.MAX)
            log.install()
            rows.append({"config": config, "width": width, "params": n_params, "world": world,
                         "step_s": float(med[0]), "comm_s": float(med[1]), "collectives": per_step})
            if rank == 0:
                print(f"[{world} procs] {config:13s} width {width:4d}: {float(med[0]) * 1e3:8.2f} ms/step, "
                      f"comm {float(med[1]) * 1e3:7.2f} ms, "
                      + ", ".join(f"{k} {v['calls']:.0f}x {v['bytes'] / 1e3:.1f} kB" for k, v in per_step.items()
                                  if v["calls"]), flush=True)
    finally:
        log.uninstall()
    return rows if rank == 0 else None


def single_part(args) -> list[dict]:
    device, sync = device_and_sync(0)
    rows = []
    for config, width in plan(args):
        step, n_params = make_step(config, width, args.batch, 0, 1, device, False)
        times = time_steps(step, sync, args.warmup, args.reps)
        rows.append({"config": config, "width": width, "params": n_params, "step_s": statistics.median(times)})
        print(f"[1 proc ] {config:13s} width {width:4d}: {rows[-1]['step_s'] * 1e3:8.2f} ms/step", flush=True)
    return rows


def exit_rank() -> None:
    """End this rank at once, its results already written, without finalising the interpreter.

    After the last collective, gloo's worker thread may still be freeing that collective's tensors
    when Python finalises; the free needs the GIL, and the process aborts ("terminate called without
    an active exception", SIGABRT) though all its work is done: 4 exits in 30 on a busy 2-core
    machine (torch 2.13; a core dump shows ``ProcessGroupGloo::runLoop`` freeing an
    ``AsyncAllreduceWork``). A barrier first does not stop it (3 in 30): gloo has several workers.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _spawned(rank: int, world: int, init_file: str, args, out_file: str) -> None:
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        rows = distributed_part(rank, world, args)
        if rows is not None:
            Path(out_file).write_text(json.dumps(rows))
    finally:
        dist.destroy_process_group()
    exit_rank()


def report(args, single: list[dict], multi: list[dict], backend: str) -> None:
    by_key = {(r["config"], r["width"]): r for r in single}
    for r in multi:
        s = by_key[(r["config"], r["width"])]
        r["single_step_s"] = s["step_s"]
        r["speedup"] = s["step_s"] / r["step_s"]
    extra = {}
    for width in args.widths:
        rows = {r["config"]: r for r in multi if r["width"] == width}
        if "simga" in rows and "consensus" in rows:
            extra[str(width)] = {
                "consensus_extra_comm_s": rows["consensus"]["comm_s"] - rows["simga"]["comm_s"],
                "consensus_extra_bytes": rows["consensus"]["collectives"]["all_reduce"]["bytes"]
                - rows["simga"]["collectives"]["all_reduce"]["bytes"],
                "consensus_step_s": rows["consensus"]["step_s"],
            }
    meta = {"backend": backend, "world": multi[0]["world"], "batch": args.batch, "reps": args.reps,
            "threads_per_process": 1 if backend == "gloo" else None, "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", {"meta": meta, "rows": multi, "consensus_extra": extra}, indent=1,
               device="cuda" if backend == "nccl" else "cpu")
    print(json.dumps(extra, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(args.widths), figsize=(5.5 * len(args.widths), 4), squeeze=False)
    for ax, width in zip(axes[0], args.widths):
        rows = [r for r in multi if r["width"] == width]
        xs = range(len(rows))
        ax.bar([i - 0.2 for i in xs], [r["single_step_s"] * 1e3 for r in rows], 0.4, label="1 process, full batch")
        ax.bar([i + 0.2 for i in xs], [r["step_s"] * 1e3 for r in rows], 0.4, label=f"{meta['world']} processes")
        ax.bar([i + 0.2 for i in xs], [r["comm_s"] * 1e3 for r in rows], 0.4, label="of which collectives",
               color="k", alpha=0.5)
        ax.set_xticks(list(xs), [r["config"] for r in rows], rotation=20)
        ax.set_ylabel("ms per step")
        ax.set_title(f"width {width} ({rows[0]['params']} params), batch {args.batch}, {backend}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "distributed_cost.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nproc", type=int, default=2, help="processes to spawn (ignored under torchrun)")
    ap.add_argument("--batch", type=int, default=512, help="global batch")
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 256])
    ap.add_argument("--dual-max-width", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--out", default="runs/distributed_cost",
                    help="folder for results.json and distributed_cost.png (committed copy: benchmarks/distributed_cost/results)")
    ap.add_argument("--smoke", action="store_true", help="a few seconds on tiny settings: checks the script end to end (the tests run it), not its numbers")
    args = ap.parse_args()
    if args.smoke:
        args.batch, args.widths, args.dual_max_width, args.warmup, args.reps = 16, [4], 4, 1, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if "RANK" in os.environ:  # under torchrun: rank 0 also times the single process first
        dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        single = single_part(args) if rank == 0 else None
        dist.barrier()
        multi = distributed_part(rank, world, args)
        if rank == 0:
            report(args, single, multi, backend)
        dist.destroy_process_group()
        exit_rank()
    import torch.multiprocessing as mp

    single = single_part(args)
    with tempfile.TemporaryDirectory() as tmp:
        out_file = os.path.join(tmp, "rows.json")
        mp.spawn(_spawned, args=(args.nproc, os.path.join(tmp, "init"), args, out_file), nprocs=args.nproc)
        multi = json.loads(Path(out_file).read_text())
    report(args, single, multi, backend)


if __name__ == "__main__":
    main()
