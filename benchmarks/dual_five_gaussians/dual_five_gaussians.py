"""5-Gaussians with a linear RBF discriminator: the Dualing-GAN robustness study (Li et al. 2017,
sec. 4.1 "Sensitivity to Hyperparameters", Table 1, Fig. 4; appendix E.1), and its full-batch
stability check.

The study: 100 hyper-parameter settings drawn at random from Table 1's ranges
(``table1_settings.py``); each trains the same generator twice on the same draws (same
initial weights, the same real and latent samples in the same order):
  * ``dual``: the linear discriminator F(w, x) = w^T phi(x) solved exactly in the dual on every
    minibatch (``TrustRegionDualDiscriminator(phi, model="linear")``); the generator descends
    -g(lam*, mu*) = -min_w f, i.e. ascends the discriminator's optimal loss (envelope theorem).
  * ``gan``: the standard GAN on the same linear RBF discriminator: one Adam step on w per
    generator step (learning rate ``d_lr`` of the draw, its own Adam state and momentum), on the
    same loss f = C/2 ||w||^2 + 1/2 mean softplus(-F(x)) + 1/2 mean softplus(F(G(z))).
    Generator loss ``minimax`` (default): -1/2 mean softplus(F(G(z))), the same objective as the
    dual's generator with w from gradient steps instead of the optimum; or ``nonsaturating``:
    1/2 mean softplus(-F(G(z))).
Both generators: Adam(g_lr, betas=(g_mom, 0.999)). A run ends after the drawn ``iters``
generator steps (``--iter-scale`` 1, the default, is the paper's count) and is scored on 2,000
samples from a fixed latent batch (the same for both methods): per mode, how many samples lie
within 3 std of its centre, and the fraction within 3 std of some mode.

What the paper's text lost, and how this script reads it (each a documented option):
  * Data: 5 Gaussians with means evenly on a circle of radius 2 (E.1); the covariance was lost:
    std 0.1 per coordinate (``STD``).
  * Features: RBF on 100 anchors sampled from the data (sec. 4.1), sigma 0.2 (E.1), formula
    lost. ``--kernel gaussian`` (default): the standard Gaussian kernel exp(-d^2 / (2 sigma^2));
    ``--kernel divisor``: exp(-d^2 / sigma), gameopt's ``RBFFeatures`` convention before issue 13.
    ``--bias`` appends a constant feature (none in the paper's F(w, x) = w^T phi(x)).
  * Generator: fc-small = 2 x 64 ReLU, fc-large = 3 x 128 ReLU, latent N(0, I_4) (widths and
    latent size lost). ``--init he`` (default): He-normal weights (ReLU gain; unit gain on the
    output layer), zero biases; ``--init torch``: PyTorch's default, which maps every latent to
    a blob of std 0.03-0.07 at the origin, 2 from every anchor, where every Gaussian-kernel
    feature is below 1e-9 (fc-small) or 1e-16 (fc-large) and neither player gets a signal.
  * C = 1e-4 ("in all experiments", sec. 4.1); ``--C 1e-2`` tests "not sensitive to it";
    ``--C table`` reads Table 1's unlabelled sixth column, enr([0, 10]), as C.
  * ``enr([0, a])`` = exp(-U(0, a)) (``--lr-reading randint``: exp(-randint[0, a])).
  * The standard GAN's discriminator: Adam with beta1 ``--d-beta1`` 0.5 (DCGAN's value; Table 1
    gives no discriminator momentum), its own state. ``--d-beta1 gen`` reuses the draw's
    generator momentum (the benchmark before issue 13).
  * Success: "covering a mode" = at least [lost] of [lost] samples within 3 std of its centre.
    Reported at several strictnesses (every mode holding >= 2%, 5%, 10% of 2,000 samples, each
    with and without the requirement that >= half of all samples lie within 3 std of a mode,
    which rejects rings and diffuse clouds), with Wilson and Clopper-Pearson 95% intervals and
    the exact McNemar test on the paired outcomes (``robustness_report.py``).

Commands (each run resumable; ``--shard i/k`` splits the settings over k single-thread jobs):

    python benchmarks/dual_five_gaussians/dual_five_gaussians.py run --config main --shard 0/2
    python benchmarks/dual_five_gaussians/dual_five_gaussians.py run --config main --shard 1/2
    python benchmarks/dual_five_gaussians/dual_five_gaussians.py report --configs main,nonsat,C1e-2 \\
        --results benchmarks/dual_five_gaussians/results
    python benchmarks/dual_five_gaussians/dual_five_gaussians.py full-batch --results benchmarks/dual_five_gaussians/results
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: gameopt and benchmarks.common

from benchmarks.common.linear_players import GAN_LOSSES, DualPlayer, GradientPlayer  # noqa: E402
from benchmarks.common.setting_runner import load_runs, prepare_run_dir, run_settings  # noqa: E402
from benchmarks.common.table1_settings import draw_settings  # noqa: E402

from gameopt import RBFFeatures, TrustRegionDualDiscriminator  # noqa: E402
from gameopt.solvers import solve_linear_dual  # noqa: E402
from benchmarks.common.provenance import write_json  # noqa: E402

N_MODES = 5
RADIUS = 2.0
STD = 0.1
Z_DIM = 4
N_ANCHORS = 100
SIGMA = 0.2
ANCHOR_SEED = 12345
EVAL_SAMPLES = 2000
KEEP_SAMPLES = 500  # eval samples stored per run (runs/ only) for the sample grids
CURVE_POINTS = 40
METHODS = ("dual", "gan")
MODE_SHARES = (0.02, 0.05, 0.10)
KERNELS = ("gaussian", "divisor")
INITS = ("he", "torch")


@dataclass(frozen=True)
class ToyOptions:
    """One configuration of the study (see the module docstring for each reading)."""

    kernel: str = "gaussian"
    init: str = "he"
    bias: bool = False
    C: float | str = 1e-4  # a number or "table"
    gan_loss: str = "minimax"
    d_beta1: float | str = 0.5  # a number or "gen"

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.gan_loss not in GAN_LOSSES:
            raise ValueError(f"gan_loss must be one of {GAN_LOSSES}, got {self.gan_loss!r}")
        if not (self.C == "table" or (isinstance(self.C, float) and self.C > 0)):
            raise ValueError(f"C must be a positive number or 'table', got {self.C!r}")
        if not (self.d_beta1 == "gen" or (isinstance(self.d_beta1, float) and 0 <= self.d_beta1 < 1)):
            raise ValueError(f"d_beta1 must be in [0, 1) or 'gen', got {self.d_beta1!r}")

    def used_by(self, method: str) -> dict:
        """The options ``method`` reads (the dual ignores the standard GAN's loss and momentum)."""
        d = asdict(self)
        if method == "dual":
            d.pop("gan_loss")
            d.pop("d_beta1")
        return d

    def slug(self, method: str) -> str:
        o = self.used_by(method)
        c = o["C"] if o["C"] == "table" else f"{o['C']:.0e}"
        parts = [method, o["kernel"], o["init"], "bias" if o["bias"] else "nobias", f"C{c}"]
        if method == "gan":
            parts += [o["gan_loss"], f"b{o['d_beta1']}"]
        return "_".join(parts)


CONFIGS: dict[str, ToyOptions] = {
    "main": ToyOptions(),
    "nonsat": ToyOptions(gan_loss="nonsaturating"),
    "C1e-2": ToyOptions(C=1e-2),
    "torch-init": ToyOptions(init="torch"),
    "divisor-kernel": ToyOptions(kernel="divisor"),
    "bias": ToyOptions(bias=True),
    "C-table": ToyOptions(C="table"),
    # the benchmark as it stood before issue 13 (its 0/40), now at full iterations
    "legacy": ToyOptions(kernel="divisor", init="torch", gan_loss="nonsaturating", d_beta1="gen"),
}


# ----------------------------------------------------------------------------- the toy problem
def centres() -> Tensor:
    ang = torch.arange(N_MODES, dtype=torch.float32) * 2 * math.pi / N_MODES
    return torch.stack([RADIUS * torch.cos(ang), RADIUS * torch.sin(ang)], 1)


def sample_real(n: int, gen: torch.Generator) -> Tensor:
    k = torch.randint(0, N_MODES, (n,), generator=gen)
    return centres()[k] + STD * torch.randn(n, 2, generator=gen)


def anchors() -> Tensor:
    """The 100 RBF anchors: one draw from the data, shared by every setting and method."""
    return sample_real(N_ANCHORS, torch.Generator().manual_seed(ANCHOR_SEED))


def make_features(kernel: str, bias: bool) -> nn.Module:
    """RBF features on :func:`anchors` with sigma = 0.2: ``"gaussian"`` is
    ``RBFFeatures(convention="gaussian")``, exp(-d^2 / (2 sigma^2)); ``"divisor"`` is the
    default convention read with bandwidth 0.2, exp(-d^2 / 0.2)."""
    if kernel == "gaussian":
        return RBFFeatures(anchors(), bandwidth=SIGMA, bias=bias, convention="gaussian")
    return RBFFeatures(anchors(), bandwidth=SIGMA, bias=bias)


def make_generator(arch: str, init: str) -> nn.Sequential:
    """fc-small (2 x 64 ReLU) or fc-large (3 x 128 ReLU), z (B, 4) -> x (B, 2)."""
    widths = {"fc-small": [64, 64], "fc-large": [128, 128, 128]}[arch]
    layers, d = [], Z_DIM
    for w in widths:
        layers += [nn.Linear(d, w), nn.ReLU()]
        d = w
    G = nn.Sequential(*layers, nn.Linear(d, 2))
    if init == "he":
        linears = [m for m in G if isinstance(m, nn.Linear)]
        for j, m in enumerate(linears):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu" if j < len(linears) - 1 else "linear")
            nn.init.zeros_(m.bias)
    return G


def criteria() -> dict:
    """Success tests on a run's scores, loosest first: every mode holds >= 2%, 5%, 10% of the
    evaluation samples within 3 std of its centre; then the same with at least half of all
    samples within 3 std of some mode (rejects rings and diffuse clouds that touch every mode)."""
    out = {}
    for half in (False, True):
        for q in MODE_SHARES:
            name = f"every mode >= {q:.0%}" + (", half on modes" if half else "")
            out[name] = lambda r, q=q, half=half: (
                min(r["mode_counts"]) >= q * r["eval_samples"] and (not half or r["in_modes"] >= 0.5))
    return out


def scores() -> dict:
    """Graded outcomes per run: modes covered at the loosest and strictest share, and the
    fraction of samples within 3 std of some mode."""
    lo, hi = MODE_SHARES[0], MODE_SHARES[-1]
    return {
        f"modes covered (>= {lo:.0%})": lambda r: sum(c >= lo * r["eval_samples"] for c in r["mode_counts"]),
        f"modes covered (>= {hi:.0%})": lambda r: sum(c >= hi * r["eval_samples"] for c in r["mode_counts"]),
        "fraction of samples on modes": lambda r: r["in_modes"],
        "fraction of samples > 1 from every mode": far_fraction,
    }


def far_fraction(result: dict) -> float:
    """Share of the stored samples farther than 1 from every centre, where every Gaussian-kernel
    feature is below e^-6 (fakes "hiding" from the discriminator); 1 for a run that failed."""
    x = torch.tensor(result.get("samples") or [], dtype=torch.float64)
    if result.get("status", "ok") != "ok" or not len(x):
        return 1.0
    return float((torch.cdist(x, centres().double()).min(1).values > 1.0).double().mean())


def mode_statistics(x: Tensor) -> dict:
    """Samples within 3 std of each mode's centre (list of 5 counts), and the fraction within 3 std of any."""
    near = torch.cdist(x.double(), centres().double()) < 3 * STD
    return {"mode_counts": near.sum(0).tolist(), "in_modes": float(near.any(1).double().mean())}


# ----------------------------------------------------------------------------- the two players
def weight_decay(opts: ToyOptions, setting: dict) -> float:
    return float(setting["col6"]) if opts.C == "table" else float(opts.C)


def make_player(method: str, opts: ToyOptions, setting: dict) -> DualPlayer | GradientPlayer:
    phi = make_features(opts.kernel, opts.bias)
    C = weight_decay(opts, setting)
    if method == "dual":
        return DualPlayer(phi, C)
    beta1 = setting["g_mom"] if opts.d_beta1 == "gen" else float(opts.d_beta1)
    return GradientPlayer(phi, N_ANCHORS + int(opts.bias), C, setting["d_lr"], beta1, opts.gan_loss)


# ----------------------------------------------------------------------------- one run
def train_setting(
    setting: dict, method: str, opts: ToyOptions, iter_scale: float = 1.0,
    eval_samples: int = EVAL_SAMPLES, keep_samples: int = KEEP_SAMPLES,
) -> dict:
    """Train one method on one setting; returns the scores, a short curve and some samples.

    Randomness: the generator's initial weights come from ``torch.manual_seed(seed)``, the real
    and latent minibatches from a CPU generator seeded ``seed + 1``, the evaluation latents from
    one seeded ``seed + 2``; none depends on the method, so both methods see the same draws.
    """
    t0 = time.time()
    iters = max(1, int(round(setting["iters"] * iter_scale)))
    torch.manual_seed(setting["seed"])
    G = make_generator(setting["arch"], opts.init)
    g_opt = torch.optim.Adam(G.parameters(), lr=setting["g_lr"], betas=(setting["g_mom"], 0.999))
    player = make_player(method, opts, setting)
    data = torch.Generator().manual_seed(setting["seed"] + 1)
    n = setting["batch"]
    log_at = set(np.linspace(0, iters - 1, min(CURVE_POINTS, iters)).round().astype(int).tolist())
    curve, status = [], "ok"
    for it in range(iters):
        real = sample_real(n, data)
        fake = G(torch.randn(n, Z_DIM, generator=data))
        value, failed = player.step(real, fake.detach())
        if failed:
            status = f"solver failed at iteration {it}"
            break
        loss = player.gen_loss(real, fake)
        g_opt.zero_grad()
        loss.backward()
        g_opt.step()
        if it in log_at:
            curve.append([it, value])
        if not all(torch.isfinite(p).all() for p in G.parameters()):
            status = f"diverged at iteration {it}"
            break
    with torch.no_grad():
        z = torch.randn(eval_samples, Z_DIM, generator=torch.Generator().manual_seed(setting["seed"] + 2))
        x = G(z)
    finite = bool(torch.isfinite(x).all())
    stats = mode_statistics(x) if finite and status == "ok" else {"mode_counts": [0] * N_MODES, "in_modes": 0.0}
    if status == "ok" and not finite:
        status = "non-finite samples"
    keep = x[:keep_samples].nan_to_num(0.0, 1e3, -1e3).clamp(-1e3, 1e3)
    return {
        "method": method, "status": status, "iters_run": iters, "eval_samples": eval_samples, **stats,
        "curve": curve, "samples": np.round(keep.numpy().astype(float), 3).tolist(), "seconds": time.time() - t0,
        "summary": f"{method} {stats['mode_counts']} in-modes {stats['in_modes']:.2f} {status}",
    }


# ----------------------------------------------------------------------------- full batch
def full_batch_curve(opts: ToyOptions, iters: int, n: int = 200) -> dict:
    """Full batch: g(theta) = max dual = min_w f is computable, so the generator can ascend it
    with a backtracking line search (paper, sec. 3.1): the objective rises monotonically.

    Each iteration: solve the dual, let Adam (lr 1e-3, beta1 0.5) propose a step on -g,
    re-solve at the proposed generator and accept if g did not fall, else halve the step (up
    to 30 times). Also logs plain Adam on the same problem for comparison.
    """
    gen = torch.Generator().manual_seed(0)
    real = sample_real(n, gen)
    z = torch.randn(n, Z_DIM, generator=gen)
    phi = make_features(opts.kernel, opts.bias)
    C = float(opts.C) if opts.C != "table" else 1e-4

    def g_of(G) -> float:
        with torch.no_grad():
            return float(solve_linear_dual(phi(real), phi(G(z)), C).dual_value)

    torch.manual_seed(0)
    G = make_generator("fc-small", opts.init)
    opt = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    D = TrustRegionDualDiscriminator(phi, model="linear", C=C)
    g_vals, gaps = [], []
    for _ in range(iters):
        st = D.step(real, G(z).detach())
        g_vals.append(st.dual_value)
        gaps.append(st.gap)
        opt.zero_grad()
        D.generator_loss(real, G(z)).backward()
        old = [p.detach().clone() for p in G.parameters()]
        opt.step()  # proposes a direction; its length is then backtracked until g rises
        direction = [p.detach() - o for p, o in zip(G.parameters(), old)]
        t = 1.0
        for _ls in range(30):
            with torch.no_grad():
                for p, o, d in zip(G.parameters(), old, direction):
                    p.copy_(o + t * d)
            if g_of(G) >= st.dual_value:
                break
            t *= 0.5
        else:
            with torch.no_grad():
                for p, o in zip(G.parameters(), old):
                    p.copy_(o)
    with torch.no_grad():
        ls_stats = mode_statistics(G(torch.randn(EVAL_SAMPLES, Z_DIM, generator=torch.Generator().manual_seed(1))))

    torch.manual_seed(0)
    G = make_generator("fc-small", opts.init)
    opt = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    D = TrustRegionDualDiscriminator(phi, model="linear", C=C)
    adam_vals = []
    for _ in range(iters):
        fake = G(z)
        adam_vals.append(D.step(real, fake.detach()).dual_value)
        opt.zero_grad()
        D.generator_loss(real, fake).backward()
        opt.step()
    diffs, adiffs = np.diff(g_vals), np.diff(adam_vals)
    return {
        "options": asdict(opts), "iters": iters, "batch": n, "g_first": g_vals[0], "g_last": g_vals[-1],
        "log2": math.log(2), "fraction_of_steps_increasing": float((diffs >= -1e-12).mean()),
        "largest_drop": float(max(0.0, -diffs.min())), "max_gap": max(gaps), "line_search_modes": ls_stats,
        "adam_g_last": adam_vals[-1], "adam_fraction_increasing": float((adiffs >= -1e-12).mean()),
        "adam_largest_drop": float(max(0.0, -adiffs.min())), "curve": g_vals, "adam_curve": adam_vals,
    }


def plot_full_batch(full: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(full["curve"], label="g = min_w f, Adam step + line search on g")
    ax.plot(full["adam_curve"], label="g, generator with plain Adam (lr 1e-3)", alpha=0.7)
    ax.axhline(math.log(2), color="k", ls="--", lw=0.8, label="log 2 (fake = real)")
    ax.set_xlabel("generator iteration (full batch of 200)")
    ax.set_ylabel("dual objective g")
    ax.set_title("5-Gaussians, linear RBF discriminator, full batch")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI
def options_from_args(args) -> ToyOptions:
    opts = CONFIGS[args.config]
    over = {}
    if args.kernel is not None:
        over["kernel"] = args.kernel
    if args.init is not None:
        over["init"] = args.init
    if args.bias is not None:
        over["bias"] = args.bias
    if args.C is not None:
        over["C"] = args.C if args.C == "table" else float(args.C)
    if args.gan_loss is not None:
        over["gan_loss"] = args.gan_loss
    if args.d_beta1 is not None:
        over["d_beta1"] = args.d_beta1 if args.d_beta1 == "gen" else float(args.d_beta1)
    return replace(opts, **over)


def study_dir(out: str, seed: int, lr_reading: str, iter_scale: float) -> Path:
    return Path(out) / f"seed{seed}_{lr_reading}_x{iter_scale:g}"


def cmd_run(args) -> None:
    opts = options_from_args(args)
    settings = draw_settings(args.settings, args.seed, "five_gaussians", args.lr_reading)
    base = study_dir(args.out, args.seed, args.lr_reading, args.iter_scale)
    jobs = {}
    for method in args.methods.split(","):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; use {METHODS}")
        run_dir = prepare_run_dir(base / opts.slug(method), {
            "method": method, "options": opts.used_by(method), "seed": args.seed, "lr_reading": args.lr_reading,
            "iter_scale": args.iter_scale, "eval_samples": args.eval_samples,
            "data": {"modes": N_MODES, "radius": RADIUS, "std": STD}, "z_dim": Z_DIM,
            "anchors": {"n": N_ANCHORS, "seed": ANCHOR_SEED}, "sigma": SIGMA,
        })
        jobs[method] = (run_dir, lambda s, m=method: train_setting(s, m, opts, args.iter_scale, args.eval_samples))
    run_settings(settings, jobs, shard=args.shard)


def collect(args, name: str, opts: ToyOptions) -> dict[str, dict[int, dict]]:
    base = study_dir(args.out, args.seed, args.lr_reading, args.iter_scale)
    return {m: load_runs(base / opts.slug(m)) for m in METHODS}


def cmd_report(args) -> None:
    from benchmarks.dual_five_gaussians.five_gaussians_plots import plot_modes_histogram, plot_samples_grid
    from benchmarks.common.robustness_report import outcome_figure, summarise, write_summary

    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    summaries = {}
    for name in args.configs.split(","):
        opts = CONFIGS[name]
        runs = collect(args, name, opts)
        if not all(runs.values()):
            print(f"{name}: no finished runs for {[m for m, r in runs.items() if not r]}; skipped")
            continue
        crit = criteria()
        summary = summarise(runs, crit, scores(), options={m: opts.used_by(m) for m in METHODS})
        summary["full_options"] = asdict(opts)
        summary.update(config=name, seed=args.seed, lr_reading=args.lr_reading, iter_scale=args.iter_scale,
                       paper={"settings": 100, "success_rate_dual": 0.49, "success_rate_gan": 0.32})
        per_setting = {m: [{k: v for k, v in r.items() if k not in ("samples",)} for _, r in sorted(runs[m].items())]
                       for m in METHODS}
        write_json(results / f"robustness_{name}.json", {"summary": summary, "runs": per_setting}, indent=1)
        outcome_figure(runs, crit, results / f"robustness_{name}_outcomes.png",
                       title=f"5-Gaussians, config {name}: outcomes over the drawn hyper-parameters")
        plot_samples_grid(runs, crit, results / f"robustness_{name}_samples.png", title=f"config {name}")
        plot_modes_histogram(runs, MODE_SHARES, results / f"robustness_{name}_modes.png",
                             title=f"5-Gaussians, config {name}: modes covered")
        summaries[name] = summary
    write_summary(summaries, results / "robustness_summary.md",
                  title="5-Gaussians robustness study (Dualing GANs Table 1 / Fig. 4)")
    print((results / "robustness_summary.md").read_text())


def cmd_full_batch(args) -> None:
    opts = options_from_args(args)
    full = full_batch_curve(opts, args.full_batch_iters)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "full_batch.json", full, indent=1)
    plot_full_batch(full, out / "full_batch.png")
    print(json.dumps({k: v for k, v in full.items() if "curve" not in k}))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("run", "report", "full-batch"))
    ap.add_argument("--config", default="main", choices=tuple(CONFIGS), help="named configuration (run, full-batch)")
    ap.add_argument("--configs", default="main", help="comma-separated configurations (report)")
    ap.add_argument("--kernel", choices=KERNELS, default=None)
    ap.add_argument("--init", choices=INITS, default=None)
    ap.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--C", default=None, help="weight decay: a number or 'table' (Table 1's sixth column)")
    ap.add_argument("--gan-loss", choices=GAN_LOSSES, default=None)
    ap.add_argument("--d-beta1", default=None, help="the standard GAN discriminator's Adam beta1, or 'gen'")
    ap.add_argument("--methods", default="dual,gan")
    ap.add_argument("--settings", type=int, default=100, help="random settings (paper: 100)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the settings' draws")
    ap.add_argument("--lr-reading", choices=("uniform", "randint"), default="uniform")
    ap.add_argument("--iter-scale", type=float, default=1.0, help="multiply the drawn iterations (1 = paper)")
    ap.add_argument("--eval-samples", type=int, default=EVAL_SAMPLES)
    ap.add_argument("--shard", default="0/1", help="i/k: run every k-th setting starting at i")
    ap.add_argument("--out", default="runs/dual_five_gaussians", help="per-setting results (resumable)")
    ap.add_argument("--results", default="benchmarks/dual_five_gaussians/results", help="report / full-batch output")
    ap.add_argument("--full-batch-iters", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    {"run": cmd_run, "report": cmd_report, "full-batch": cmd_full_batch}[args.command](args)


if __name__ == "__main__":
    main()
