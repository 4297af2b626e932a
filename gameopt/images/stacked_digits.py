"""Stacked digits: an offline 1000-mode image game (like the papers' stacked MNIST).

Each sample stacks three 8x8 digits from scikit-learn's bundled digits data set (1797 images,
shipped inside the wheel, so nothing is downloaded) as the R, G, B channels. The mode of a sample
is the label triple, ``100 * d0 + 10 * d1 + d2``: 1000 modes, uniform for the data distribution.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

N_MODES = 1000
SIZES = (8, 16, 32)
SPLIT_SEED = 0  # fixed: the cached classifier must never have seen the test split
TEST_FRACTION = 0.2


def _digits() -> tuple[np.ndarray, np.ndarray]:
    try:  # lazy: importing sklearn takes about a second
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            'StackedDigits reads the 8x8 digits bundled in scikit-learn: pip install "gameopt[images]"'
        ) from e

    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


def split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Deterministic stratified split of the digits: 20% of every class is ``"test"``.

    Args:
        labels: the digits' labels, shape (N,).
        split: ``"train"`` or ``"test"`` (anything else reads as ``"train"``).

    Returns:
        Sorted indices into ``labels`` of that split.
    """
    rng = np.random.default_rng(SPLIT_SEED)
    chosen = []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(TEST_FRACTION * len(idx)))
        chosen.append(idx[:n_test] if split == "test" else idx[n_test:])
    return np.sort(np.concatenate(chosen))


def digit_images(split: str = "train", size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Single digits of one split: images float32 ``(M, 1, size, size)`` in [-1, 1], labels int64.

    The raw 8x8 values 0-16 map linearly to [-1, 1]; sizes 16 and 32 are bilinear upsamplings
    (which stay within [-1, 1]). Train has 1438 images, test 359.

    Args:
        split: ``"train"`` (default) or ``"test"``.
        size: 8 (default), 16 or 32.

    Raises:
        ValueError: an unknown split or size.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    images, labels = _digits()
    keep = split_indices(labels, split)
    x = torch.from_numpy(images[keep]).unsqueeze(1) / 8.0 - 1.0
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp_(-1.0, 1.0).contiguous(), torch.from_numpy(labels[keep])


class StackedDigits:
    """Three independent digits stacked as channels; 1000 equally likely modes.

    Sampling draws each channel's label uniformly from 0-9 and then an image of that label
    uniformly from the split, so the label triples (the modes) are exactly uniform over all 1000,
    which is what :func:`~gameopt.images.metrics.mode_kl` compares against.

    Args:
        split: ``"train"`` (80% of every digit class) or ``"test"`` (the other 20%); the split is
            fixed, independent of ``seed``, so a classifier trained on train never sees test.
        size: 8, 16 or 32 (bilinear upsampling of each 8x8 channel, for 32x32 DCGAN models).
        seed: seeds the generator used by :meth:`sample` when none is passed.

    Attributes:
        n_modes: 1000.
        image_shape: ``(3, size, size)``.
        images, labels: the split's single digits, ``(M, 1, size, size)`` and ``(M,)``.
    """

    n_modes: int = N_MODES

    def __init__(self, split: str = "train", size: int = 8, seed: int = 0) -> None:
        self.split = split
        self.size = size
        self.image_shape = (3, size, size)
        self.images, self.labels = digit_images(split, size)
        order = torch.argsort(self.labels, stable=True)
        self._sorted = self.images[order, 0]  # (M, size, size), grouped by label
        counts = torch.bincount(self.labels, minlength=10)
        self._counts = counts
        self._offsets = torch.cumsum(counts, 0) - counts
        self._generator = torch.Generator().manual_seed(seed)

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` stacked samples: images float32 ``(n, 3, size, size)`` in [-1, 1], modes int64 ``(n,)``.

        ``modes = 100 * d0 + 10 * d1 + d2`` for the digit labels of channels 0, 1, 2. Passing a
        ``generator`` makes the draw reproducible; without one the object's own seeded generator
        advances, so consecutive calls differ but the sequence is fixed by ``seed``.

        Raises:
            ValueError: ``n < 0``.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        g = self._generator if generator is None else generator
        digits = torch.randint(0, 10, (n, 3), generator=g)
        u = torch.rand(n, 3, generator=g, dtype=torch.float64)
        within = (u * self._counts[digits]).long().clamp_max_(self._counts[digits] - 1)
        images = self._sorted[self._offsets[digits] + within]  # (n, 3, size, size)
        modes = digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]
        return images, modes

    def __repr__(self) -> str:
        return f"StackedDigits(split={self.split!r}, size={self.size}, digits={len(self.labels)})"
