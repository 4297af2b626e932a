"""Step cost and memory of CGD / ACGD against a plain simultaneous Adam step, measured in one run.

Game: zero-sum, f = softplus(-D(x)).mean() + softplus(D(G(z))).mean() is the discriminator's loss
(disc_loss = f) and the generator's is gen_loss = -f (gameopt's convention: both minimise).
Players: the 8-Gaussian MLPs (batch 512) and the DCGAN-like 32x32 players of benchmarks/common/dcgan.py
(batch 64). Every step draws the next batch from a fixed pool, so the CG warm start sees the
mini-batch noise it would see in training.

Methods (each on its own copy of the same players, steps interleaved round-robin so machine noise
hits all alike; ratios of medians against ``adam``):
  adam        plain torch: one backward of f for both players (D's gradient negated), torch.optim.Adam
              (betas 0.5, 0.999)
  cgd         gameopt.CompetitiveOptimizer(lr), defaults (tol 0.1, max_iter 10, no warm start)
  acgd        gameopt.CompetitiveOptimizer(lr, adaptive=True), defaults
  acgd_warm   ACGD with the warm start
  acgd_k1     ACGD with max_iter=1: one CG iteration, 3 Hessian-vector products, whatever the residual
  acgd_tight  ACGD with tol 1e-3, max_iter 100
CG iterations and Hessian-vector products per step are the means over the timed steps.
Memory (CPU): MB of tensors autograd saves for backward in one step (unique storages), as
benchmarks/consensus_step_cost/consensus_step_cost.py measures it, each method in a fresh subprocess; plus the
optimiser state's MB. CUDA: peak allocated MB above models and data over 3 steps.

    OMP_NUM_THREADS=1 python benchmarks/cgd_step_cost/cgd_step_cost.py --threads 1 --out runs/cgd_step_cost

Importable (e.g. from benchmarks/consensus_step_cost/consensus_step_cost.py): ``make_competitive_step(G, D, losses,
**settings)`` for any zero-sum ``losses() -> (gen_loss, disc_loss)``, ``SETTINGS`` (the methods'
CompetitiveOptimizer arguments), ``make_step(method, G, D, batches)``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: gameopt and benchmarks.common

import gameopt  # noqa: E402
from benchmarks.common.dcgan import dcgan_discriminator, dcgan_generator  # noqa: E402
from gameopt.toy_games import mlp  # noqa: E402
from benchmarks.common.provenance import write_json  # noqa: E402

METHODS = ["adam", "cgd", "acgd", "acgd_warm", "acgd_k1", "acgd_tight"]
#: CompetitiveOptimizer's arguments per method (lr 2e-4 everywhere, Adam's too)
SETTINGS = {
    "cgd": {},
    "acgd": {"adaptive": True},
    "acgd_warm": {"adaptive": True, "warm_start": True},
    "acgd_k1": {"adaptive": True, "max_iter": 1},
    "acgd_tight": {"adaptive": True, "tol": 1e-3, "max_iter": 100},
}
LR = 2e-4
POOL = 8  # batches cycled through


def build(model: str, device: str, seed: int = 0):
    """Players and a pool of (z, x) batches."""
    torch.manual_seed(seed)
    if model == "mlp":
        G, D = mlp(16, 2), mlp(2, 1)
        batches = [(torch.randn(512, 16), torch.randn(512, 2)) for _ in range(POOL)]
    else:
        G, D = dcgan_generator(), dcgan_discriminator()
        batches = [(torch.randn(64, 128), torch.rand(64, 3, 32, 32) * 2 - 1) for _ in range(POOL)]
    return G.to(device), D.to(device), [(z.to(device), x.to(device)) for z, x in batches]


def objective(G, D, z, x) -> torch.Tensor:
    """f: the discriminator's loss; the generator maximises it (gen_loss = -f)."""
    return F.softplus(-D(x)).mean() + F.softplus(D(G(z))).mean()


def make_competitive_step(G, D, losses: Callable[[], tuple], lr: float = LR, **settings
                          ) -> tuple[Callable[[], None], dict]:
    """One CompetitiveOptimizer training step on ``losses() -> (gen_loss, disc_loss)`` (zero-sum).

    Returns the step and a dict of lists it appends to: CG ``iterations`` and ``residual``
    (0-dim tensors) and Hessian-vector ``products`` (ints), one entry per step.
    """
    opt = gameopt.CompetitiveOptimizer(G.parameters(), D.parameters(), lr=lr, **settings)
    counts: dict = {"iterations": [], "products": [], "residual": []}

    def step():
        stats = opt.backward(*losses())
        opt.step()
        counts["iterations"].append(stats.cg_iterations)
        counts["products"].append(stats.hessian_products)
        counts["residual"].append(stats.cg_residual)
    return step, counts


def make_step(method: str, G, D, batches) -> tuple[Callable[[], None], dict]:
    """A callable doing one training step of ``method``, and a dict it fills with CG counts."""
    it = iter(range(10**9))

    def batch():
        return batches[next(it) % len(batches)]

    if method == "adam":
        gp, dp = list(G.parameters()), list(D.parameters())
        opt = torch.optim.Adam(gp + dp, lr=LR, betas=(0.5, 0.999))

        def step():
            z, x = batch()
            f = objective(G, D, z, x)
            grads = torch.autograd.grad(f, gp + dp)
            for p, g in zip(gp, grads[: len(gp)]):
                p.grad = -g
            for p, g in zip(dp, grads[len(gp):]):
                p.grad = g
            opt.step()
        return step, {}

    def losses():
        ld = objective(G, D, *batch())
        return -ld, ld
    return make_competitive_step(G, D, losses, **SETTINGS[method])


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_methods(model, device, rounds, warmup, methods, progress):
    G, D, batches = build(model, device)
    steps, counts = {}, {}
    for m in methods:
        steps[m], counts[m] = make_step(m, copy.deepcopy(G), copy.deepcopy(D), batches)
    for m in methods:
        for _ in range(warmup):
            steps[m]()
        for values in counts[m].values():
            values.clear()
    sync(device)
    times = {m: [] for m in methods}
    for _ in progress(range(rounds), desc=model):
        for m in methods:
            t0 = time.perf_counter()
            steps[m]()
            sync(device)
            times[m].append(time.perf_counter() - t0)
    med = {m: statistics.median(v) for m, v in times.items()}
    out = {}
    for m in methods:
        out[m] = {"median_ms": 1e3 * med[m], "ratio_vs_adam": med[m] / med["adam"]}
        if counts[m].get("products"):
            out[m]["cg_iterations_mean"] = float(torch.stack(counts[m]["iterations"]).double().mean())
            out[m]["hessian_products_mean"] = statistics.mean(counts[m]["products"])
            out[m]["cg_residual_median"] = float(torch.stack(counts[m]["residual"]).median())
    return out


def state_mb(opt_like) -> float:
    return sum(t.numel() * t.element_size() for st in opt_like.state.values()
               for t in st.values() if torch.is_tensor(t)) / 2**20


def memory_child(model, device, method) -> None:
    G, D, batches = build(model, device)
    step, _ = make_step(method, G, D, batches)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            st = t.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()
            return t

        step()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            step()
        peak_mb = sum(storages.values()) / 2**20
    print(json.dumps({"peak_mb": peak_mb}))


def measure_memory(model, device, methods, threads):
    out = {}
    for m in methods:
        res = subprocess.run(
            [sys.executable, __file__, "--memory-child", m, "--model", model, "--device", device,
             "--threads", str(threads)],
            capture_output=True, text=True, check=True,
        )
        out[m] = json.loads(res.stdout.strip().splitlines()[-1])["peak_mb"]
    return out


def plot(table, path) -> None:
    """Time and memory ratios against Adam, one panel per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(table), figsize=(5.5 * len(table), 3.6), squeeze=False)
    for ax, (model, entry) in zip(axes[0], table.items()):
        methods = list(entry["time"])
        mem = entry.get("saved_mb", entry.get("peak_mb", {}))
        xs = range(len(methods))
        ax.bar([x - 0.2 for x in xs], [entry["time"][m]["ratio_vs_adam"] for m in methods], 0.4, label="time")
        if mem:
            ax.bar([x + 0.2 for x in xs], [mem[m] / mem["adam"] for m in methods], 0.4, label="saved memory")
        ax.axhline(3.0, color="tab:red", lw=0.8, ls="--", label="goal: 3x time")
        ax.axhline(1.0, color="k", lw=0.5)
        ax.set_xticks(list(xs), methods, rotation=30)
        ax.set_title(model)
        ax.set_ylabel("x plain Adam step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["mlp", "dcgan", "both"], default="both")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=0, help="timed steps per method (0: 100 mlp, 20 dcgan)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset (adam is always run)")
    ap.add_argument("--out", default="runs/cgd_step_cost")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true", help="a few seconds on tiny settings: checks the script end to end (the tests run it), not its numbers")
    args = ap.parse_args()
    if args.smoke:
        args.model, args.rounds, args.methods, args.no_memory = "mlp", 2, "adam,cgd", True
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.model, args.device, args.memory_child)
        return
    try:
        from tqdm import tqdm as progress
    except ImportError:  # pragma: no cover
        def progress(it, **_):
            return it
    models = ["mlp", "dcgan"] if args.model == "both" else [args.model]
    methods = ["adam"] + [m for m in args.methods.split(",") if m in METHODS and m != "adam"]
    table = {}
    for model in models:
        rounds = args.rounds or (100 if model == "mlp" else 20)
        warmup = 1 if args.smoke else (10 if model == "mlp" else 3)
        entry = {"time": time_methods(model, args.device, rounds, warmup, methods, progress), "rounds": rounds}
        if not args.no_memory:
            entry["saved_mb" if args.device == "cpu" else "peak_mb"] = measure_memory(
                model, args.device, methods, args.threads)
        table[model] = entry
    results = {
        "device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "lr": LR, "settings": SETTINGS, "pool_batches": POOL,
        "memory_measure": "peak allocated MB above models and data (CUDA)" if args.device.startswith("cuda")
        else "MB of tensors autograd saves for backward in one step (CPU)",
        "results": table,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "cgd_step_cost.json", results, device=args.device)
    plot(table, out / "cgd_step_cost.png")
    print(f"{'model':6s} {'method':11s} {'ms/step':>9s} {'x adam':>7s} {'CG it':>6s} {'HVPs':>5s} {'mem MB':>7s} {'x adam':>7s}")
    for model, entry in table.items():
        mem = entry.get("saved_mb", entry.get("peak_mb", {}))
        for m, t in entry["time"].items():
            mm = mem.get(m, float("nan"))
            print(f"{model:6s} {m:11s} {t['median_ms']:9.2f} {t['ratio_vs_adam']:7.2f} "
                  f"{t.get('cg_iterations_mean', 0):6.2f} {t.get('hessian_products_mean', 0):5.2f} "
                  f"{mm:7.2f} {mm / mem.get('adam', float('nan')):7.2f}")
    print(f"wrote {out}/cgd_step_cost.json and .png")


if __name__ == "__main__":
    main()
