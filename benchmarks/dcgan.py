"""DCGAN-like 32x32 players (no batch norm by default) shared by the benchmarks."""

from __future__ import annotations

from torch import nn


def dcgan_generator(z_dim: int = 128, width: int = 64, batch_norm: bool = False) -> nn.Sequential:
    """z (B, z_dim) -> image (B, 3, 32, 32) in [-1, 1]: linear to 4x4, three stride-2 transposed convs."""
    c = width * 4

    def up(cin: int, cout: int) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.ConvTranspose2d(cin, cout, 4, 2, 1)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        return layers + [nn.ReLU()]

    return nn.Sequential(
        nn.Linear(z_dim, c * 16), nn.ReLU(), nn.Unflatten(1, (c, 4, 4)),
        *up(c, c // 2), *up(c // 2, c // 4),
        nn.ConvTranspose2d(c // 4, 3, 4, 2, 1), nn.Tanh(),
    )


def dcgan_discriminator(width: int = 64, batch_norm: bool = False) -> nn.Sequential:
    """image (B, 3, 32, 32) -> logit (B, 1): three stride-2 convs with LeakyReLU 0.2, then linear."""

    def down(cin: int, cout: int, norm: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1)]
        if norm:
            layers.append(nn.BatchNorm2d(cout))
        return layers + [nn.LeakyReLU(0.2)]

    return nn.Sequential(
        *down(3, width, False), *down(width, width * 2, batch_norm), *down(width * 2, width * 4, batch_norm),
        nn.Flatten(), nn.Linear(width * 4 * 16, 1),
    )
