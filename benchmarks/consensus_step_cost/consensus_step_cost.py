"""Step cost of consensus optimisation vs a plain simultaneous step, measured in one run.

Methods (each on its own copy of the same players, steps interleaved round-robin so
machine noise hits all alike; ratios of medians against the plain step):
  plain          plain torch simultaneous step: first gradients of both players, base step
  gameopt_sim    gameopt.SimultaneousOptimizer (gamma = 0)
  reference      straightforward consensus: grads with create_graph, L = 1/2||v||^2,
                 autograd.grad(L, params), base step
  gameopt        gameopt.ConsensusOptimizer (gamma = 10)
  gameopt_smooth gameopt.ConsensusOptimizer(smoothing=True)
  gameopt_lazy   gameopt.ConsensusOptimizer(every=4): the correction every 4th step, scaled by 4
                 (the median over steps would hide the regularised ones: its time is the mean)
  gameopt_compiled gameopt.ConsensusOptimizer(compile=True), step(closure); compile
                 time is excluded from the timings and reported separately
  extragradient  gameopt.ExtragradientOptimizer, step(closure) (two evaluations per step)
  optimistic     gameopt.OptimisticOptimizer
  sga            gameopt.SGAOptimizer(lam=1, align=True)
  lookahead      gameopt.LookaheadMinmax(SimultaneousOptimizer, k=5): the wrapper's own cost
                 (lookahead over any method X costs X plus this difference)
  cgd, acgd      gameopt.CompetitiveOptimizer (adaptive=False / True), zero-sum case only
Memory: each method in a fresh subprocess. CUDA: peak allocated above models and data over 3
steps. CPU (no allocator statistics; peak RSS is dominated by allocator and thread-pool overhead,
identical for every method): the MB of tensors autograd saves for backward in one evaluation of
the losses (the largest, for methods that evaluate twice), and separately the MB of optimiser
state (the base optimiser's plus the method's own per-parameter tensors: the optimistic
method's previous update, lookahead's slow weights) and of transient parameter copies taken
during a step (extragradient's z_t, the optimistic method's z before the base step).

    python benchmarks/consensus_step_cost/consensus_step_cost.py --model both --out runs/consensus_step_cost
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: gameopt and benchmarks.common

import gameopt  # noqa: E402
from benchmarks.common.dcgan import dcgan_discriminator, dcgan_generator  # noqa: E402
from gameopt.toy_games import mlp  # noqa: E402
from benchmarks.common.provenance import write_json  # noqa: E402

METHODS = ["plain", "gameopt_sim", "reference", "gameopt", "gameopt_smooth", "gameopt_compiled",
           "gameopt_lazy", "extragradient", "optimistic", "sga", "lookahead", "cgd", "acgd"]
ZERO_SUM_ONLY = {"cgd", "acgd"}
#: Methods whose step cost varies from step to step: reported by the mean over steps.
MEAN_TIMED = {"gameopt_lazy"}
#: Parameter-sized copies a method takes during a step and frees at its end.
TRANSIENT_COPIES = {"extragradient": 1, "optimistic": 1}
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
GAMMA = 10.0


def build(model: str, device: str, seed: int = 0):
    torch.manual_seed(seed)
    if model == "mlp":
        G, D = mlp(16, 2), mlp(2, 1)
        z = torch.randn(512, 16)
        x = torch.randn(512, 2)
    else:
        G, D = dcgan_generator(), dcgan_discriminator()
        z = torch.randn(64, 128)
        x = torch.rand(64, 3, 32, 32) * 2 - 1
    return G.to(device), D.to(device), z.to(device), x.to(device)


def losses(G, D, z, x, kind):
    fake = G(z)
    d_fake = D(fake)
    if kind == "zerosum":
        ld = F.softplus(-D(x)).mean() + F.softplus(d_fake).mean()
        return -ld, ld
    # non-saturating; D's loss reuses D(fake) undetached (consensus needs dv_D/dtheta)
    return F.softplus(-d_fake).mean(), F.softplus(-D(x)).mean() + F.softplus(d_fake).mean()


def make_step(method: str, G, D, z, x, kind: str):
    gp, dp = list(G.parameters()), list(D.parameters())
    if method in ("plain", "reference"):
        base = torch.optim.RMSprop([{"params": gp}, {"params": dp}], lr=1e-4)

        def step():
            lg, ld = losses(G, D, z, x, kind)
            cg = method == "reference"
            vg = torch.autograd.grad(lg, gp, create_graph=cg, retain_graph=True)
            vd = torch.autograd.grad(ld, dp, create_graph=cg)
            if cg:
                L = 0.5 * sum((t * t).sum() for t in vg + vd)
                r = torch.autograd.grad(L, gp + dp)
                grads = [v.detach() + GAMMA * t for v, t in zip(vg + vd, r)]
            else:
                grads = list(vg + vd)
            for p, g in zip(gp + dp, grads):
                p.grad = g
            base.step()
        return step
    if method in ("extragradient", "lookahead"):
        if method == "extragradient":
            opt = gameopt.ExtragradientOptimizer(torch.optim.RMSprop, gp, dp, lr=1e-4)
        else:
            opt = gameopt.LookaheadMinmax(gameopt.SimultaneousOptimizer(torch.optim.RMSprop, gp, dp, lr=1e-4), k=5)

        def step():
            opt.step(lambda: losses(G, D, z, x, kind))
        step.opt = opt
        return step
    if method == "gameopt_sim":
        opt = gameopt.SimultaneousOptimizer(torch.optim.RMSprop, gp, dp, lr=1e-4)
    elif method in ("cgd", "acgd"):
        opt = gameopt.CompetitiveOptimizer(gp, dp, lr=1e-4, adaptive=method == "acgd")
    elif method == "gameopt_lazy":
        opt = gameopt.ConsensusOptimizer(torch.optim.RMSprop, gp, dp, gamma=GAMMA, every=4, lr=1e-4)
    elif method == "optimistic":
        opt = gameopt.OptimisticOptimizer(torch.optim.RMSprop, gp, dp, lr=1e-4)
    elif method == "sga":
        opt = gameopt.SGAOptimizer(torch.optim.RMSprop, gp, dp, lam=1.0, lr=1e-4)
    else:
        opt = gameopt.ConsensusOptimizer(
            torch.optim.RMSprop, gp, dp, gamma=GAMMA, lr=1e-4, smoothing=method == "gameopt_smooth",
            compile=method == "gameopt_compiled",
        )
    if method == "gameopt_compiled":
        def step():
            opt.step(lambda: losses(G, D, z, x, kind))
        step.opt = opt
        return step

    def step():
        opt.zero_grad(set_to_none=True)
        opt.backward(*losses(G, D, z, x, kind))
        opt.step()
    step.opt = opt
    return step


def state_mb(opt, params) -> float:
    """MB of optimiser state: the base optimiser's per-parameter tensors and the method's own."""
    tensors = [t for st in opt.state.values() for t in st.values() if isinstance(t, torch.Tensor)]
    for st in getattr(getattr(opt, "inner", opt), "game_state", {}).values():
        tensors += list(st.values())
    tensors += list(getattr(opt, "slow", {}).values())
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_methods(model, kind, device, rounds, warmup, methods, progress):
    G, D, z, x = build(model, device)
    steps = {}
    for m in methods:
        g, d = copy.deepcopy(G), copy.deepcopy(D)
        steps[m] = make_step(m, g, d, z, x, kind)
    compile_s = {}
    for m in methods:
        t0 = time.perf_counter()
        for _ in range(warmup):
            steps[m]()
        sync(device)
        compile_s[m] = time.perf_counter() - t0
    sync(device)
    times = {m: [] for m in methods}
    for _ in progress(range(rounds), desc=f"{model}/{kind}"):
        for m in methods:
            t0 = time.perf_counter()
            steps[m]()
            sync(device)
            times[m].append(time.perf_counter() - t0)
    med = {m: (statistics.mean(v) if m in MEAN_TIMED else statistics.median(v)) for m, v in times.items()}
    out = {m: {"median_ms": 1e3 * med[m], "ratio_vs_plain": med[m] / med["plain"]} for m in methods}
    if "gameopt_compiled" in out:
        out["gameopt_compiled"]["warmup_incl_compile_s"] = compile_s["gameopt_compiled"]
    return out


def memory_child(model, kind, device, method) -> None:
    """Peak memory of training steps above what the models and data already hold."""
    G, D, z, x = build(model, device)
    phases: list[dict[int, int]] = [{}]
    if device == "cpu":   # a new phase at each evaluation of the losses (extragradient has two)
        global losses
        plain_losses = losses

        def losses(*a, **kw):   # noqa: F811
            phases.append({})
            return plain_losses(*a, **kw)
    step = make_step(method, G, D, z, x, kind)
    params = list(G.parameters()) + list(D.parameters())
    param_mb = sum(p.numel() * p.element_size() for p in params) / 2**20
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        # CPU has no allocator statistics and RSS is dominated by allocator and thread-pool
        # overhead (the same for every method), so count what differs between methods:
        # the bytes autograd keeps for backward during one step (unique storages).
        def pack(t: torch.Tensor) -> torch.Tensor:
            st = t.untyped_storage()
            phases[-1][st.data_ptr()] = st.nbytes()
            return t

        step()
        phases.clear()
        phases.append({})
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            for _ in range(4 if method in MEAN_TIMED else 1):   # every=4: one regularised step
                step()
        peak_mb = max(sum(ph.values()) for ph in phases) / 2**20
    opt = getattr(step, "opt", None)
    print(json.dumps({"peak_mb": peak_mb,
                      "state_mb": state_mb(opt, params) if opt is not None else None,
                      "transient_mb": TRANSIENT_COPIES.get(method, 0) * param_mb}))


def measure_memory(model, kind, device, methods):
    out = {}
    for m in methods:
        if m == "gameopt_compiled":
            continue  # peak RSS would be the compiler's, not the step's
        res = subprocess.run(
            [sys.executable, __file__, "--memory-child", m, "--model", model, "--kind", kind, "--device", device],
            capture_output=True, text=True, check=True,
        )
        out[m] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results)
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        methods = list(results[key]["time"])
        ratios = [results[key]["time"][m]["ratio_vs_plain"] for m in methods]
        ax.bar(methods, ratios, color=[plt.cm.tab10(i % 10) for i in range(len(methods))])
        ax.axhline(1.0, color="k", lw=0.5)
        ax.set_title(key)
        ax.set_ylabel("step time / plain step")
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["mlp", "dcgan", "both"], default="both")
    ap.add_argument("--kind", choices=["nonsat", "zerosum", "both"], default="both")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=0, help="timed steps per method (0: 200 mlp, 20 dcgan)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset (plain is always run)")
    ap.add_argument("--out", default="runs/consensus_step_cost")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true", help="a few seconds on tiny settings: checks the script end to end (the tests run it), not its numbers")
    args = ap.parse_args()
    if args.smoke:
        args.model, args.kind, args.rounds, args.methods, args.no_memory = "mlp", "nonsat", 2, "plain,gameopt", True
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.model, args.kind, args.device, args.memory_child)
        return
    try:
        from tqdm import tqdm as progress
    except ImportError:  # pragma: no cover
        def progress(it, **_):
            return it
    models = ["mlp", "dcgan"] if args.model == "both" else [args.model]
    kinds = ["nonsat", "zerosum"] if args.kind == "both" else [args.kind]
    results = {
        "device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "memory_measure": "peak allocated MB above models and data (CUDA)" if args.device.startswith("cuda")
        else "MB of tensors autograd saves for backward in one step (CPU)",
    }
    table = {}
    for model in models:
        for kind in kinds:
            rounds = args.rounds or (200 if model == "mlp" else 20)
            warmup = 1 if args.smoke else (20 if model == "mlp" else 3)
            methods = ["plain"] + [m for m in args.methods.split(",") if m in METHODS and m != "plain"
                                   and (kind == "zerosum" or m not in ZERO_SUM_ONLY)]
            entry = {"time": time_methods(model, kind, args.device, rounds, warmup, methods, progress),
                     "rounds": rounds}
            if not args.no_memory:
                entry["peak_mb"] = measure_memory(model, kind, args.device, methods)
            table[f"{model}/{kind}"] = entry
    results["results"] = table
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "consensus_step_cost.json", results, device=args.device)
    plot(table, out / "consensus_step_cost.png")
    mem_name = "peak MB" if args.device.startswith("cuda") else "saved MB"
    print(f"{'case':16s} {'method':16s} {'ms/step':>9s} {'x plain':>8s} {mem_name:>8s} {'state MB':>8s} {'copies MB':>9s}")
    for key, entry in table.items():
        for m, t in entry["time"].items():
            mem = entry.get("peak_mb", {}).get(m) or {}
            print(f"{key:16s} {m:16s} {t['median_ms']:9.2f} {t['ratio_vs_plain']:8.2f} "
                  f"{mem.get('peak_mb', float('nan')):8.1f} "
                  f"{float('nan') if mem.get('state_mb') is None else mem['state_mb']:8.2f} "
                  f"{mem.get('transient_mb', float('nan')):9.2f}")
    print(f"wrote {out}/consensus_step_cost.json and .png")


if __name__ == "__main__":
    main()
