"""Toy games for tests, examples and benchmarks: Gaussian mixtures and small MLP players."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


def ring_centers(n_modes: int = 8, radius: float = 1.0) -> torch.Tensor:
    """Centres of ``n_modes`` Gaussians spaced evenly on a circle, shape (n_modes, 2)."""
    angles = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
    return torch.stack([radius * torch.cos(angles), radius * torch.sin(angles)], 1).float()


def sample_mixture(
    n: int, centers: torch.Tensor, std: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` samples from the equal-weight mixture of isotropic Gaussians at ``centers``."""
    idx = torch.randint(len(centers), (n,), generator=generator)
    noise = torch.randn(n, centers.shape[1], generator=generator, dtype=centers.dtype)
    return centers[idx] + std * noise


@dataclass
class MixtureMetrics:
    """Mode coverage of samples from a Gaussian mixture.

    ``high_quality``: fraction of samples within ``3 std`` of their nearest mode;
    ``modes_covered``: modes holding at least ``min_fraction`` of all samples as
    high-quality samples; ``kl``: KL(mode histogram of the high-quality samples ||
    uniform), in nats (0 = every mode equally populated; log(n_modes) = one mode).
    """

    modes_covered: int
    n_modes: int
    high_quality: float
    kl: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def mixture_metrics(
    samples: torch.Tensor, centers: torch.Tensor, std: float, min_fraction: float = 0.01
) -> MixtureMetrics:
    """Modes covered, high-quality fraction and mode-histogram KL (see :class:`MixtureMetrics`)."""
    if samples.dim() != 2 or samples.shape[1] != centers.shape[1]:
        raise ValueError(
            f"samples must have shape (n, {centers.shape[1]}), got {tuple(samples.shape)}"
        )
    samples = samples.detach().to(torch.float64).cpu()
    centers = centers.to(torch.float64).cpu()
    dist = torch.cdist(samples, centers)
    nearest_dist, nearest = dist.min(1)
    good = nearest_dist <= 3 * std
    counts = torch.bincount(nearest[good], minlength=len(centers)).double()
    n = len(samples)
    covered = int((counts >= max(1.0, min_fraction * n)).sum())
    hq = float(good.double().mean()) if n else 0.0
    if counts.sum() > 0:
        p = counts / counts.sum()
        nz = p > 0
        kl = float((p[nz] * torch.log(p[nz] * len(centers))).sum())
    else:
        kl = math.log(len(centers))
    return MixtureMetrics(covered, len(centers), hq, kl)


def mlp(in_dim: int, out_dim: int, hidden: int = 16, layers: int = 4) -> nn.Sequential:
    """ReLU MLP with ``layers`` hidden layers of ``hidden`` units (the consensus paper's toy players)."""
    mods: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers):
        mods += [nn.Linear(dim, hidden), nn.ReLU()]
        dim = hidden
    mods.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*mods)
