"""Fixed feature maps for the kernel in high dimensions (eq. 17)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import GameInputError

__all__ = ["RandomProjection"]


class RandomProjection(nn.Module):
    """f(x) = flatten(x) @ W, W a fixed Gaussian (in_features, out_features) matrix / sqrt(out_features).

    The scaling keeps squared distances unbiased: E||f(a) - f(b)||^2 = ||a - b||^2,
    so a bandwidth chosen for the raw data still fits.  W is a buffer (saved in the
    state dict, moved by ``.to()``), never a trainable parameter.

    Args:
        in_features: features per sample after flattening (>= 1).
        out_features: projected features (>= 1).
        seed: seed of W's CPU generator (default 0): the same seed gives the same W.

    Raises:
        GameInputError: a size below 1.
    """

    weight: Tensor

    def __init__(self, in_features: int, out_features: int, seed: int = 0) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise GameInputError(
                f"RandomProjection needs positive sizes, got {in_features} -> {out_features}; pass "
                "in_features (features per input sample) and out_features >= 1."
            )
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(in_features, out_features, generator=gen) / math.sqrt(out_features)
        self.register_buffer("weight", w)

    def forward(self, x: Tensor) -> Tensor:
        """f(x), shape (n, out_features), for ``x`` of shape (n, ...) with ``in_features`` entries per sample.

        Raises:
            GameInputError: ``x`` has another number of features per sample.
        """
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.weight.shape[0]:
            raise GameInputError(
                f"RandomProjection expects {self.weight.shape[0]} input features per sample, got {x.shape[1]}; "
                f"build it with in_features={x.shape[1]} or pass samples of the size it was built for."
            )
        return x @ self.weight.to(x.dtype)
