"""Fixed feature maps for the linear dual discriminator (Dualing GANs, appendix E.1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import GameInputError
from ..solvers._common import check_positive

__all__ = ["RBFFeatures", "RBF_CONVENTIONS"]

RBF_CONVENTIONS = ("sqdist_over_bandwidth", "gaussian")


class RBFFeatures(nn.Module):
    """Gaussian RBF features on K anchor points a_k, in one of two kernel conventions.

    ``convention`` (d_k = ||x - a_k||):

    * ``"sqdist_over_bandwidth"`` (default): phi(x)_k = exp(-d_k^2 / bandwidth).
    * ``"gaussian"``: phi(x)_k = exp(-d_k^2 / (2 bandwidth^2)), the standard Gaussian kernel
      with ``bandwidth`` = sigma.

    The two agree when bandwidth_sqdist = 2 sigma^2 (sigma = 0.2 in the standard form is
    bandwidth 0.08 in the default one). The paper's 5-Gaussian toy uses 100 anchors drawn
    from the training data and "bandwidth 0.2"; its formula was lost in extraction. The
    default reads 0.2 as the divisor of d^2: a generator initialised near the origin, 2
    away from every anchor, then still gets gradient (e^-20), whereas the standard form
    with sigma = 0.2 gives e^-50 there.

    ``bias=True`` appends a constant feature (output (n, K + 1)). Without it F = 0 wherever
    all features vanish, so fakes far from every anchor get loss log 2 whatever w is, and
    the dual objective rewards the generator for hiding there (measured on the toy).

    Args:
        anchors: (K, D) anchor points (copied into a buffer).
        bandwidth: > 0; the divisor of d^2 or sigma, as ``convention`` says.
        bias: append a constant 1 feature.
        convention: ``"sqdist_over_bandwidth"`` or ``"gaussian"``.

    Input (n, D), output (n, K) or (n, K + 1); differentiable in x (the generator trains
    through it). Raises GameInputError for anchors that are not (K, D), a bandwidth that is not
    positive and finite, or an unknown convention.
    """

    def __init__(self, anchors: Tensor, bandwidth: float = 0.2, bias: bool = False,
                 convention: str = "sqdist_over_bandwidth") -> None:
        super().__init__()
        if anchors.ndim != 2:
            raise GameInputError(f"anchors must be (K, D), got shape {tuple(anchors.shape)}; pass K anchor points as rows")
        check_positive("bandwidth", bandwidth)
        if convention not in RBF_CONVENTIONS:
            raise GameInputError(f"unknown RBF convention {convention!r}; use one of {RBF_CONVENTIONS}")
        self.register_buffer("anchors", anchors.detach().clone())
        self.bandwidth = float(bandwidth)
        self.bias = bool(bias)
        self.convention = convention

    @property
    def sqdist_divisor(self) -> float:
        """The divisor of ``d^2`` in the exponent: ``bandwidth``, or ``2 bandwidth^2`` for ``"gaussian"``."""
        return self.bandwidth if self.convention == "sqdist_over_bandwidth" else 2 * self.bandwidth**2

    def forward(self, x: Tensor) -> Tensor:
        """phi(x): features of shape (n, K), or (n, K + 1) with ``bias``, for ``x`` of shape (n, D)."""
        d2 = (x.unsqueeze(-2) - self.anchors.to(x.dtype)).pow(2).sum(-1)
        phi = torch.exp(-d2 / self.sqdist_divisor)
        if self.bias:
            phi = torch.cat([phi, torch.ones_like(phi[..., :1])], -1)
        return phi

    def extra_repr(self) -> str:
        """Anchor shape, bandwidth, bias and convention, for ``repr``."""
        return (f"anchors={tuple(self.anchors.shape)}, bandwidth={self.bandwidth}, bias={self.bias}, "
                f"convention={self.convention!r}")
