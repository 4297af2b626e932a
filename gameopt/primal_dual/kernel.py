"""Gaussian kernel density of generated samples at data points, in bounded memory.

p_hat(x_i) = (1/m) sum_j exp(-||y_j - x_i||^2 / sigma^2)   (eq. 12 / 17 of Chen et al.)

Squared distances use ||x||^2 + ||y||^2 - 2 x.y (clamped at 0), after subtracting the
mean of the data points from both sets (distances are translation invariant, and
centring keeps the cancellation error of that formula small).  Two paths compute it:

* unchunked: one (n, m) matrix with ordinary autograd (used when both batches fit in
  one chunk; supports higher-order gradients);
* chunked: a custom autograd function that loops over (chunk x chunk) blocks in both
  forward and backward, so memory is O(chunk^2 + chunk * d + (n + m) * d) and never
  the (n, m) matrix, let alone the (n, m, d) difference tensor.  Its backward is
  itself written in differentiable torch ops, so create_graph=True still works.

Both paths give the same value up to floating-point summation order.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["kernel_density"]


def _sq_dists(x: Tensor, y: Tensor) -> Tensor:
    """(n, m) matrix of ||x_i - y_j||^2 via the matmul expansion, clamped at 0."""
    d2 = (x * x).sum(1, keepdim=True) + (y * y).sum(1).unsqueeze(0) - 2.0 * (x @ y.T)
    return d2.clamp_min(0.0)


def _kde_unchunked(x: Tensor, y: Tensor, sigma: float) -> Tensor:
    return torch.exp(_sq_dists(x, y) / (-sigma * sigma)).mean(1)


class _ChunkedKDE(torch.autograd.Function):
    """p = mean_j exp(-||y_j - x_i||^2 / sigma^2), gradient w.r.t. y only."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, sigma: float, chunk: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, y)
        ctx.sigma = sigma
        ctx.chunk = chunk
        n, m = x.shape[0], y.shape[0]
        out = x.new_zeros(n)
        inv = -1.0 / (sigma * sigma)
        for i0 in range(0, n, chunk):
            xi = x[i0 : i0 + chunk]
            acc = xi.new_zeros(xi.shape[0])
            for j0 in range(0, m, chunk):
                acc += torch.exp(_sq_dists(xi, y[j0 : j0 + chunk]) * inv).sum(1)
            out[i0 : i0 + chunk] = acc / m
        return out

    @staticmethod
    def backward(ctx, grad_p: Tensor):  # type: ignore[override]
        x, y = ctx.saved_tensors
        sigma, chunk = ctx.sigma, ctx.chunk
        n, m = x.shape[0], y.shape[0]
        inv = -1.0 / (sigma * sigma)
        grad_y = None
        if ctx.needs_input_grad[1]:
            # d p_i / d y_j = (1/m) K_ij (-2/sigma^2) (y_j - x_i), so
            # grad_y_j = -2/(m sigma^2) * (y_j * sum_i g_i K_ij - sum_i g_i K_ij x_i).
            blocks = []
            for j0 in range(0, m, chunk):
                yj = y[j0 : j0 + chunk]
                a = None
                b = None
                for i0 in range(0, n, chunk):
                    xi = x[i0 : i0 + chunk]
                    w = grad_p[i0 : i0 + chunk].unsqueeze(1) * torch.exp(_sq_dists(xi, yj) * inv)
                    a_part, b_part = w.sum(0), w.T @ xi
                    a = a_part if a is None else a + a_part
                    b = b_part if b is None else b + b_part
                blocks.append((yj * a.unsqueeze(1) - b) * (-2.0 / (m * sigma * sigma)))
            grad_y = torch.cat(blocks, 0)
        if ctx.needs_input_grad[0]:
            raise RuntimeError("kernel_density: gradients w.r.t. the data points are not supported.")
        return None, grad_y, None, None


def kernel_density(x: Tensor, y: Tensor, sigma: float, chunk_size: int | None = None) -> Tensor:
    """Kernel density of samples ``y`` (m, d) evaluated at points ``x`` (n, d).

    Args:
        x: data points (n, d); treated as constants (no gradient).
        y: generated samples (m, d); gradients flow to it.
        sigma: bandwidth in exp(-||u||^2 / sigma^2), same units as x and y.
        chunk_size: block size for both axes; ``None`` or a size covering both
            batches uses the single-matrix path.

    Returns:
        (n,) tensor p_hat(x_i), each in [0, 1].
    """
    x = x.detach()
    center = x.mean(0)
    x = x - center
    y = y - center
    if chunk_size is None or (x.shape[0] <= chunk_size and y.shape[0] <= chunk_size):
        return _kde_unchunked(x, y, sigma)
    return _ChunkedKDE.apply(x, y, float(sigma), int(chunk_size))
