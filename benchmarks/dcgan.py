"""DCGAN-like players shared by the benchmarks (32x32 by default; 8x8 and 16x16 for small images).

The generator maps z (B, z_dim) through a linear layer to a 4x4 map and doubles the
resolution with stride-2 transposed convolutions; the discriminator mirrors it with
stride-2 convolutions (LeakyReLU 0.2) and a final linear layer to one logit. Batch norm is
off by default: the consensus paper's CIFAR-10 experiment trains DCGAN without it.
``extra_conv=True`` adds one stride-1 3x3 convolution to each player (at the highest
resolution of the generator and after the first convolution of the discriminator): the
"4 instead of 3 convolutional layers" variant of the consensus paper (Fig. 11).
"""

from __future__ import annotations

import math

from torch import nn


def _n_up(size: int) -> int:
    n = int(round(math.log2(size / 4)))
    if size < 8 or 4 * 2**n != size:
        raise ValueError(f"image size must be 4 * 2**k with k >= 1 (8, 16, 32, 64), got {size}")
    return n


def dcgan_generator(
    z_dim: int = 128, width: int = 64, batch_norm: bool = False, size: int = 32,
    channels: int = 3, extra_conv: bool = False,
) -> nn.Sequential:
    """z (B, z_dim) -> image (B, channels, size, size) in [-1, 1]."""
    n = _n_up(size)
    c = width * 2 ** (n - 1)

    def norm(ch: int) -> list[nn.Module]:
        return [nn.BatchNorm2d(ch)] if batch_norm else []

    layers: list[nn.Module] = [nn.Linear(z_dim, c * 16), nn.ReLU(), nn.Unflatten(1, (c, 4, 4))]
    for _ in range(n - 1):
        layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1), *norm(c // 2), nn.ReLU()]
        c //= 2
    if extra_conv:
        layers += [nn.ConvTranspose2d(c, c, 4, 2, 1), *norm(c), nn.ReLU(), nn.Conv2d(c, channels, 3, 1, 1)]
    else:
        layers += [nn.ConvTranspose2d(c, channels, 4, 2, 1)]
    return nn.Sequential(*layers, nn.Tanh())


def dcgan_discriminator(
    width: int = 64, batch_norm: bool = False, size: int = 32, channels: int = 3, extra_conv: bool = False,
) -> nn.Sequential:
    """image (B, channels, size, size) -> logit (B, 1): stride-2 convs with LeakyReLU 0.2, then linear."""
    n = _n_up(size)
    layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
    if extra_conv:
        layers += [nn.Conv2d(width, width, 3, 1, 1), nn.LeakyReLU(0.2)]
    c = width
    for _ in range(n - 1):
        layers += [nn.Conv2d(c, c * 2, 4, 2, 1)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(c * 2))
        layers.append(nn.LeakyReLU(0.2))
        c *= 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * 16, 1))
