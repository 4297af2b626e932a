"""Players shared by the image benchmarks: DCGAN-like (32x32 by default; 8x8 and 16x16 for small
images), and the 28x28 players of the MNIST papers (``unrolled_*``: Metz et al. 2017 stacked
MNIST; ``mnist_*``: Chen et al. 2018 appendix 7.5).

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

import torch
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


# ------------------------------------------------------------------------------- 28x28 players
def unrolled_generator(z_dim: int = 256, width: int = 64, channels: int = 3) -> nn.Sequential:
    """The stacked-MNIST generator of Metz et al. (2017, appendix), as in the public PacGAN code.

    z (B, z_dim) -> linear to 4x4 x ``width`` -> BN, ReLU -> 3x3 stride-2 transposed convs to
    7x7 x width/2, 14x14 x width/4, 28x28 x width/8 (each BN, ReLU) -> 3x3 conv to ``channels``
    -> tanh. Defaults (z 256, width 64: 64-32-16-8 channels) are the paper's sizes; PacGAN's
    ``stacked_MNIST_experiments/unrolled_GAN_experiment/D=0.5G/model.py`` (fjxmlzn/PacGAN) is the
    reference for the exact layers. Output (B, channels, 28, 28) in [-1, 1].
    """
    w = width
    return nn.Sequential(
        nn.Linear(z_dim, w * 16), nn.Unflatten(1, (w, 4, 4)), nn.BatchNorm2d(w), nn.ReLU(),
        nn.ConvTranspose2d(w, w // 2, 3, 2, 1), nn.BatchNorm2d(w // 2), nn.ReLU(),                       # 7x7
        nn.ConvTranspose2d(w // 2, w // 4, 3, 2, 1, output_padding=1), nn.BatchNorm2d(w // 4), nn.ReLU(),  # 14x14
        nn.ConvTranspose2d(w // 4, w // 8, 3, 2, 1, output_padding=1), nn.BatchNorm2d(w // 8), nn.ReLU(),  # 28x28
        nn.Conv2d(w // 8, channels, 3, 1, 1), nn.Tanh(),
    )


def unrolled_discriminator(
    gen_width: int = 64, d_scale: float = 0.5, batch_norm: bool = True, channels: int = 3
) -> nn.Sequential:
    """The stacked-MNIST discriminator of Metz et al. (2017) at ``d_scale`` of the generator.

    Three 3x3 stride-2 convs (28 -> 14 -> 7 -> 4) with ``d_scale`` times the generator's
    widths in reverse (8, 16, 32 for ``gen_width`` 64, so 4-8-16 channels at 1/2 and 2-4-8 at
    1/4: the "D is 1/2 (1/4) the size of G" of the Unrolled GAN and PacGAN tables), each with
    batch norm (``batch_norm=True``, the paper's) and LeakyReLU 0.3, then a linear layer to one logit.
    """
    c1 = max(1, int(round(gen_width / 8 * d_scale)))
    layers: list[nn.Module] = []
    c_in = channels
    for c in (c1, 2 * c1, 4 * c1):
        layers += [nn.Conv2d(c_in, c, 3, 2, 1), *([nn.BatchNorm2d(c)] if batch_norm else []), nn.LeakyReLU(0.3)]
        c_in = c
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in * 16, 1))


def mnist_generator(z_dim: int = 64, channels: int = 1, width: int = 64) -> nn.Sequential:
    """The primal-dual paper's MNIST generator (Chen et al. 2018, appendix 7.5) at ``width`` 64.

    z (B, 64) -> fc 16*width (1024) -> fc 7x7 x 2*width (128) -> 4x4 stride-2 transposed convs to
    14x14 x width (64) and 28x28 x width/2 (32) -> 4x4 conv to ``channels`` -> tanh. The appendix
    gives no normalisation; batch norm after each hidden layer (DCGAN / InfoGAN practice for this
    shape) keeps it trainable. A smaller ``width`` scales every layer (16: a quarter, for CPU runs).
    """
    w = width
    return nn.Sequential(
        nn.Linear(z_dim, 16 * w), nn.BatchNorm1d(16 * w), nn.ReLU(),
        nn.Linear(16 * w, 7 * 7 * 2 * w), nn.BatchNorm1d(7 * 7 * 2 * w), nn.ReLU(), nn.Unflatten(1, (2 * w, 7, 7)),
        nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU(),
        nn.ConvTranspose2d(w, w // 2, 4, 2, 1), nn.BatchNorm2d(w // 2), nn.ReLU(),
        nn.ZeroPad2d((1, 2, 1, 2)), nn.Conv2d(w // 2, channels, 4, 1, 0), nn.Tanh(),
    )


def mnist_discriminator(channels: int = 1, width: int = 64) -> nn.Sequential:
    """The primal-dual paper's MNIST discriminator (appendix 7.5) at ``width`` 64: 4x4 stride-2
    convs with width (64) and width/2 (32) units (LeakyReLU 0.2), fc 16*width (1024), fc 1 (a raw
    logit). No batch norm (the dual methods need a discriminator that scores samples independently)."""
    w = width
    return nn.Sequential(
        nn.Conv2d(channels, w, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(w, w // 2, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(w // 2 * 7 * 7, 16 * w), nn.LeakyReLU(0.2), nn.Linear(16 * w, 1),
    )


def dcgan28_generator(z_dim: int = 100, channels: int = 3, width: int = 64) -> nn.Sequential:
    """A standard-size DCGAN generator for 28x28 images (about 780k parameters at width 64).

    z (B, z_dim) -> linear to 7x7 x 2*width -> BN, ReLU -> 4x4 stride-2 transposed conv to
    14x14 x width -> BN, ReLU -> 4x4 stride-2 transposed conv to 28x28 x ``channels`` -> tanh.
    The usual MNIST DCGAN shape (the players of docs' "standard-size DCGAN under the strict
    count"), far stronger than the deliberately weak D = 1/2 G players of Metz et al.
    """
    w = width
    return nn.Sequential(
        nn.Linear(z_dim, 2 * w * 49), nn.Unflatten(1, (2 * w, 7, 7)), nn.BatchNorm2d(2 * w), nn.ReLU(),
        nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU(),                 # 14x14
        nn.ConvTranspose2d(w, channels, 4, 2, 1), nn.Tanh(),                                 # 28x28
    )


def dcgan28_discriminator(channels: int = 3, width: int = 64, batch_norm: bool = True) -> nn.Sequential:
    """The matching 28x28 DCGAN discriminator (about 141k parameters at width 64): 4x4 stride-2
    convs to width (LeakyReLU 0.2) and 2*width (batch norm, LeakyReLU 0.2), then a linear logit."""
    w = width
    return nn.Sequential(
        nn.Conv2d(channels, w, 4, 2, 1), nn.LeakyReLU(0.2),                                    # 14x14
        nn.Conv2d(w, 2 * w, 4, 2, 1), *([nn.BatchNorm2d(2 * w)] if batch_norm else []), nn.LeakyReLU(0.2),  # 7x7
        nn.Flatten(), nn.Linear(2 * w * 49, 1),
    )


def dcgan_init_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """DCGAN initialisation in place (Radford et al. 2016; the TensorFlow code of Metz et al. and
    PacGAN): conv, transposed-conv and linear weights from N(0, std), biases 0; batch-norm scales
    from N(1, std), shifts 0. Returns ``module``."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                nn.init.normal_(m.weight, 1.0, std)
                nn.init.zeros_(m.bias)
    return module
