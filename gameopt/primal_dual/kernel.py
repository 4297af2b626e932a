"""Gaussian kernel density of generated samples at data points, in bounded memory.

p_hat(x_i) = (1/m) sum_j exp(-||y_j - x_i||^2 / sigma^2)   (eq. 12 / 17 of Chen et al.)

Work is done in (chunk x chunk) blocks over both axes, in forward and backward, so
memory is O(chunk^2 + (n + m) * d): never the (n, m) matrix (for n, m > chunk), let
alone the (n, m, d) difference tensor.  Squared distances are computed exactly as
sum_k (y_jk - x_ik)^2 when a block holds at most 2^18 difference entries (e.g. 2-D
data), and otherwise as ||x||^2 + ||y||^2 - 2 x.y clamped at 0, after subtracting
the data mean from both sets (distances are translation invariant, and centring
keeps that formula's cancellation error small).  Chunked and single-block results
agree to floating-point rounding (tested to 1e-12 relative in float64).

Backward passes are written in differentiable torch ops, so ``create_graph=True``
(double backward, e.g. consensus optimisation) works.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .bandwidth import check_bandwidth_for_dtype

__all__ = ["kernel_density", "primal_dual_term"]

_EXACT_LIMIT = 2**18


def _use_exact(n: int, m: int, d: int, chunk: int) -> bool:
    return min(n, chunk) * min(m, chunk) * d <= _EXACT_LIMIT


def _block_kernel(xi: Tensor, yj: Tensor, neg_inv_s2: float, exact: bool) -> Tensor:
    """(ci, cj) block of exp(-||y_j - x_i||^2 / sigma^2)."""
    if exact:
        d2 = (yj.unsqueeze(0) - xi.unsqueeze(1)).pow(2).sum(-1)
    else:
        d2 = ((xi * xi).sum(1, keepdim=True) + (yj * yj).sum(1).unsqueeze(0) - 2.0 * (xi @ yj.T)).clamp_min(0.0)
    return torch.exp(d2 * neg_inv_s2)


def _kde(x: Tensor, y: Tensor, sigma: float, chunk: int, exact: bool) -> Tensor:
    """p_hat (n,) by blocks; differentiable w.r.t. y through ordinary autograd when grad mode is on."""
    n, m = x.shape[0], y.shape[0]
    neg_inv_s2 = -1.0 / (sigma * sigma)
    rows = []
    for i0 in range(0, n, chunk):
        xi = x[i0 : i0 + chunk]
        acc = None
        for j0 in range(0, m, chunk):
            part = _block_kernel(xi, y[j0 : j0 + chunk], neg_inv_s2, exact).sum(1)
            acc = part if acc is None else acc + part
        rows.append(acc / m)
    return rows[0] if len(rows) == 1 else torch.cat(rows)


def _kde_vjp(x: Tensor, y: Tensor, g: Tensor, sigma: float, chunk: int, exact: bool) -> Tensor:
    """sum_i g_i d p_hat_i / d y, shape (m, d), by blocks, in differentiable ops.

    d p_i / d y_j = (1/m) K_ij (-2/sigma^2) (y_j - x_i), so the result's row j is
    -2/(m sigma^2) * (y_j * sum_i g_i K_ij - sum_i g_i K_ij x_i).
    """
    n, m = x.shape[0], y.shape[0]
    neg_inv_s2 = -1.0 / (sigma * sigma)
    if exact and n <= chunk and m <= chunk:  # one small block: reuse the differences (fewer ops)
        diff = y.unsqueeze(0) - x.unsqueeze(1)  # (n, m, d)
        w = g.unsqueeze(1) * torch.exp(diff.pow(2).sum(-1) * neg_inv_s2)
        return (w.unsqueeze(2) * diff).sum(0) * (2.0 * neg_inv_s2 / m)
    blocks = []
    for j0 in range(0, m, chunk):
        yj = y[j0 : j0 + chunk]
        a = b = None
        for i0 in range(0, n, chunk):
            xi = x[i0 : i0 + chunk]
            w = g[i0 : i0 + chunk].unsqueeze(1) * _block_kernel(xi, yj, neg_inv_s2, exact)
            a_part, b_part = w.sum(0), w.T @ xi
            a = a_part if a is None else a + a_part
            b = b_part if b is None else b + b_part
        blocks.append((yj * a.unsqueeze(1) - b) * (2.0 * neg_inv_s2 / m))
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks)


class _KDE(torch.autograd.Function):
    """p_hat with a recomputing backward (nothing but x, y saved)."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, sigma: float, chunk: int, exact: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, y)
        ctx.args = (sigma, chunk, exact)
        return _kde(x, y, sigma, chunk, exact)

    @staticmethod
    def backward(ctx, grad_p: Tensor):  # type: ignore[override]
        x, y = ctx.saved_tensors
        grad_y = _kde_vjp(x, y, grad_p, *ctx.args) if ctx.needs_input_grad[1] else None
        return None, grad_y, None, None, None


class _PrimalDualTerm(torch.autograd.Function):
    """mean_i (p_tilde_i - p_hat_i)^2 with p_tilde = p_hat.detach() - w, w = alpha f1(D(x)).

    The value is mean_i w_i^2 whatever y is, so forward computes no kernel at all;
    backward computes the gradient of the frozen-target loss,
    sum_i (2/n) w_i d p_hat_i / d y, in one blocked pass.  Under create_graph the
    residual is rebuilt as p_hat(y) - p_hat(y).detach() + w so that second derivatives
    are those of the frozen-target loss (Gauss-Newton term included), as plain autograd
    would give.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, w: Tensor, sigma: float, chunk: int, exact: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, y, w)
        ctx.args = (sigma, chunk, exact)
        # The value does not depend on x or y, but a NaN/inf there makes the gradient NaN: the
        # value says so too (elementwise flags on the device, no host read).
        finite = torch.isfinite(x).all() & torch.isfinite(y).all()
        return torch.where(finite, (w * w).mean(), torch.full((), math.nan, dtype=w.dtype, device=w.device))

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        x, y, w = ctx.saved_tensors
        if not ctx.needs_input_grad[1]:
            return None, None, None, None, None, None
        n = x.shape[0]
        if torch.is_grad_enabled():  # create_graph=True
            p = _KDE.apply(x, y, *ctx.args)
            residual = p - p.detach() + w
        else:
            residual = w
        g = residual * (grad_out * (2.0 / n))
        return None, _kde_vjp(x, y, g, *ctx.args), None, None, None, None


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The kernel's dtype for samples of ``dtype``: half precision is computed in float32
    (exp of squared distances and the 1/sigma^2 factor need its range), others as they are."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _prepare(x: Tensor, y: Tensor, sigma: float, chunk_size: int | None) -> tuple[Tensor, Tensor, int, bool]:
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    chunk = max(n, m) if chunk_size is None else int(chunk_size)
    exact = _use_exact(n, m, d, chunk)
    dtype = compute_dtype(y.dtype)
    check_bandwidth_for_dtype(float(sigma), dtype)
    x, y = x.detach().to(dtype), y.to(dtype)
    if not exact:
        center = x.mean(0)
        x, y = x - center, y - center
    return x, y, chunk, exact


def kernel_density(x: Tensor, y: Tensor, sigma: float, chunk_size: int | None = None) -> Tensor:
    """Kernel density of samples ``y`` (m, d) evaluated at points ``x`` (n, d).

    Args:
        x: data points (n, d); treated as constants (no gradient).
        y: generated samples (m, d); gradients flow to it.
        sigma: bandwidth in exp(-||u||^2 / sigma^2), same units as x and y.
        chunk_size: block size for both axes (``None``: one block).

    Returns:
        (n,) tensor p_hat(x_i), each in [0, 1]; float32 for float16 / bfloat16 samples.

    Raises:
        GameInputError: ``sigma`` below :func:`~gameopt.primal_dual.bandwidth.min_bandwidth`
            of the computation dtype (float32: 1.1e-19, float64: 1.5e-154).
    """
    x, y, chunk, exact = _prepare(x, y, sigma, chunk_size)
    if chunk >= max(x.shape[0], y.shape[0]):
        return _kde(x, y, float(sigma), chunk, exact)  # single block: plain autograd
    return _KDE.apply(x, y, float(sigma), chunk, exact)


def primal_dual_term(x: Tensor, y: Tensor, w: Tensor, sigma: float, chunk_size: int | None = None) -> Tensor:
    """mean_i (p_tilde(x_i) - p_hat(x_i))^2 with p_tilde = p_hat.detach() - w held fixed.

    Args:
        x: data features (n, d), constants.
        y: generated features (m, d); the only input that receives gradients.
        w: (n,) dual step alpha * f1(D(x_i)), constants.
        sigma: kernel bandwidth.
        chunk_size: block size for both axes (``None``: one block).

    The value is NaN when x or y holds a NaN or inf (their gradient would be NaN).
    Half-precision samples are computed in float32 and the value returned in float32.
    """
    x, y, chunk, exact = _prepare(x, y, sigma, chunk_size)
    return _PrimalDualTerm.apply(x, y, w.detach().to(x.dtype), float(sigma), chunk, exact)
