"""Sample grids: generated images beside real ones in one PNG, for a person to look at.

Numbers about generated images are believed only next to a picture of them: a classifier labels
speckle as confidently as digits. :func:`save_grid` draws the generated samples and, when given,
real samples side by side at the same scale. Needs matplotlib (the ``dev`` extra).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch


def _as_unit(images: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    """``(N, C, H, W)`` uint8 in [0, 255] or float in [-1, 1] -> float array in [0, 1]."""
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] < 1:
        raise ValueError(f"{name} must be (N, C, H, W) with C 1 or 3 and N >= 1, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be uint8 in [0, 255] or float in [-1, 1], got {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or inf")
    return (np.clip(x.astype(np.float64), -1.0, 1.0) + 1.0) / 2.0


def tile(images: torch.Tensor | np.ndarray, nrow: int = 8, gap: int = 1) -> np.ndarray:
    """Images in one mosaic: ``(rows * (H + gap) + gap, nrow * (W + gap) + gap, C)`` floats in [0, 1].

    Row-major, ``nrow`` images per row, ``gap`` white pixels between and around them; the last
    row is padded with white.

    Args:
        images: ``(N, C, H, W)``, uint8 in [0, 255] or float in [-1, 1] (clipped), C 1 or 3.
        nrow: images per row (default 8).
        gap: white pixels between images (default 1).

    Raises:
        ValueError: a bad shape, non-finite values, ``nrow < 1`` or ``gap < 0``.
        TypeError: neither uint8 nor floating point.
    """
    if nrow < 1 or gap < 0:
        raise ValueError(f"nrow must be >= 1 and gap >= 0, got nrow={nrow}, gap={gap}")
    x = _as_unit(images, "images")
    n, c, h, w = x.shape
    rows = math.ceil(n / nrow)
    out = np.ones((rows * (h + gap) + gap, nrow * (w + gap) + gap, c))
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = gap + r * (h + gap), gap + k * (w + gap)
        out[top : top + h, left : left + w] = x[i].transpose(1, 2, 0)
    return out


def save_grid(
    images: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    real: torch.Tensor | np.ndarray | None = None,
    nrow: int = 8,
    n: int = 64,
    title: str | None = None,
    scale: int = 3,
) -> Path:
    """Write a PNG of the first ``n`` generated images and, when ``real`` is given, as many real
    images beside them (left: generated, right: real), at the same scale.

    One channel is drawn in grey, three as RGB (stacked MNIST's three digits become the red,
    green and blue layers, as in the published figures). Pixels are shown as they are: no
    per-image normalisation that could make noise look like strokes.

    Args:
        images: generated ``(N, C, H, W)``, uint8 in [0, 255] or float in [-1, 1], C 1 or 3.
        path: the PNG to write (parent folders are created).
        real: real images of the same C, H and W, or ``None``.
        nrow: images per row of each panel (default 8).
        n: images per panel (default 64; fewer if fewer are given).
        title: figure title (default none); the panels are titled "generated" and "real".
        scale: screen pixels per image pixel (default 3), so 28 px digits stay readable.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: bad shapes, ``real`` of another channel count or size, non-finite values,
            or ``n``, ``nrow`` or ``scale`` below 1.
        TypeError: images neither uint8 nor floating point.
        ImportError: matplotlib is not installed (``pip install matplotlib``).
    """
    if n < 1 or nrow < 1 or scale < 1:
        raise ValueError(f"n, nrow and scale must be >= 1, got n={n}, nrow={nrow}, scale={scale}")
    panels = [("generated", tile(images[:n], nrow))]
    if real is not None:
        if tuple(real.shape[1:]) != tuple(images.shape[1:]):
            raise ValueError(
                f"real images {tuple(real.shape[1:])} must match the generated {tuple(images.shape[1:])} (C, H, W)"
            )
        panels.append(("real", tile(real[:n], nrow)))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - matplotlib is in the dev extra
        raise ImportError("save_grid needs matplotlib: pip install matplotlib") from e

    height = max(p.shape[0] for _, p in panels)
    width = sum(p.shape[1] for _, p in panels)
    dpi = 100
    head = 0.5 if title else 0.25  # inches above the panels for the titles
    fig_w = 1.1 * scale * width / dpi  # a little wide: the height decides, the saved box is cropped
    fig_h = scale * height / dpi + head
    fig, axes = plt.subplots(1, len(panels), figsize=(fig_w, fig_h), dpi=dpi, squeeze=False,
                             gridspec_kw={"width_ratios": [p.shape[1] for _, p in panels]})
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - head / fig_h, wspace=0.04)
    for ax, (name, panel) in zip(axes[0], panels):
        if panel.shape[2] == 1:
            ax.imshow(panel[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(panel, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.05 / fig_h, va="top")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, bbox_inches="tight", pad_inches=0.05)  # titles never clipped
    plt.close(fig)
    return out

