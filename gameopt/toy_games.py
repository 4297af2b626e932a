"""Toy games for tests, examples and benchmarks: Gaussian mixtures and small MLP players."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .errors import GameInputError


def ring_centers(n_modes: int = 8, radius: float = 1.0) -> torch.Tensor:
    """Centres of ``n_modes`` Gaussians spaced evenly on a circle of ``radius`` around the origin.

    The first centre is at ``(radius, 0)``; the rest follow counter-clockwise. Returns a float32
    tensor of shape ``(n_modes, 2)``. The consensus paper's game is ``ring_centers(8, 1.0)``.
    """
    angles = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
    return torch.stack([radius * torch.cos(angles), radius * torch.sin(angles)], 1).float()


def sample_mixture(
    n: int, centers: torch.Tensor, std: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` samples from the equal-weight mixture of isotropic Gaussians at ``centers``.

    Args:
        n: number of samples.
        centers: the means, shape ``(n_modes, d)``; the samples take their dtype.
        std: standard deviation of every component (the consensus paper's game: 0.01).
        generator: random number generator, for reproducible streams (default: torch's global one).

    Returns:
        Samples of shape ``(n, d)``: a uniformly drawn centre plus ``std`` times standard normal noise.
    """
    idx = torch.randint(len(centers), (n,), generator=generator)
    noise = torch.randn(n, centers.shape[1], generator=generator, dtype=centers.dtype)
    return centers[idx] + std * noise


@dataclass
class MixtureMetrics:
    """Mode coverage of samples from a mixture of isotropic Gaussians (see :func:`mixture_metrics`).

    Attributes:
        modes_covered: modes holding at least ``min_fraction`` of all samples as high-quality
            samples (within ``3 std`` of the mode): the strict test of Mescheder et al. and
            Chen et al. (0 to ``n_modes``).
        n_modes: number of mixture components.
        high_quality: fraction of samples within ``3 std`` of their nearest mode (0 to 1).
        kl: KL(mode histogram of the high-quality samples || uniform), in nats: 0 when every
            mode is equally populated, ``log(n_modes)`` for one mode or no high-quality sample.
        modes_reached: modes holding at least ``min_fraction`` of all samples within ``reach``
            of the mode (default ``10 std``): the looser test that tells a generator which has
            spread its mass over the modes (a ring through them) from one that sits on one mode
            or between modes (a blob), before either is sharp enough for ``modes_covered``.
    """

    modes_covered: int
    n_modes: int
    high_quality: float
    kl: float
    modes_reached: int = 0

    def as_dict(self) -> dict[str, float]:
        """The metrics as ``{field name: value}`` (for JSON and logging)."""
        return asdict(self)


def mixture_metrics(
    samples: torch.Tensor,
    centers: torch.Tensor,
    std: float,
    min_fraction: float = 0.01,
    reach: float | None = None,
) -> MixtureMetrics:
    """Modes covered and reached, high-quality fraction and mode-histogram KL of ``samples``.

    Each sample is assigned to its nearest centre (Euclidean distance).

    Args:
        samples: generated points, shape ``(n, d)``; any float dtype and device (copied to
            float64 on the CPU; gradients are not tracked).
        centers: the mixture's means, shape ``(n_modes, d)``.
        std: the components' standard deviation; a sample is high-quality within ``3 std``.
        min_fraction: share of all ``n`` samples (default 0.01, and at least one sample) a mode
            must hold to count as covered or reached.
        reach: radius for :attr:`MixtureMetrics.modes_reached`, in the data's units (default
            ``10 * std``).

    Returns:
        :class:`MixtureMetrics`.

    Raises:
        GameInputError: ``samples`` is not ``(n, d)`` with the centres' ``d``.
    """
    if samples.dim() != 2 or samples.shape[1] != centers.shape[1]:
        raise GameInputError(
            f"samples must have shape (n, {centers.shape[1]}), got {tuple(samples.shape)}; pass one point per row, "
            "in the centres' dimension"
        )
    reach = 10 * std if reach is None else reach
    samples = samples.detach().to(torch.float64).cpu()
    centers = centers.to(torch.float64).cpu()
    dist = torch.cdist(samples, centers)
    nearest_dist, nearest = dist.min(1)
    good = nearest_dist <= 3 * std
    counts = torch.bincount(nearest[good], minlength=len(centers)).double()
    near = torch.bincount(nearest[nearest_dist <= reach], minlength=len(centers)).double()
    n = len(samples)
    enough = max(1.0, min_fraction * n)
    covered = int((counts >= enough).sum())
    reached = int((near >= enough).sum())
    hq = float(good.double().mean()) if n else 0.0
    if counts.sum() > 0:
        p = counts / counts.sum()
        nz = p > 0
        kl = float((p[nz] * torch.log(p[nz] * len(centers))).sum())
    else:
        kl = math.log(len(centers))
    return MixtureMetrics(covered, len(centers), hq, kl, reached)


def mlp(in_dim: int, out_dim: int, hidden: int = 16, layers: int = 4) -> nn.Sequential:
    """ReLU MLP with ``layers`` hidden layers of ``hidden`` units (the consensus paper's toy players).

    Maps ``(batch, in_dim)`` to ``(batch, out_dim)``, with PyTorch's default initialisation and no
    activation on the output (a generator's sample, or a discriminator's logit). The consensus
    paper's players are ``mlp(16, 2)`` (generator, z of 16 dimensions) and ``mlp(2, 1)``.
    """
    mods: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers):
        mods += [nn.Linear(dim, hidden), nn.ReLU()]
        dim = hidden
    mods.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*mods)
