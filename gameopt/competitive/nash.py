"""The Nash step of competitive gradient descent, solved by conjugate gradient.

Two players, zero-sum: ``f = gen_loss``; theta (the first player) minimises f, phi
(the second) maximises it. Each player steps to the Nash equilibrium of the local
bilinear approximation of the game, regularised by its own step sizes ``eta``
(diagonal: one per coordinate)::

    theta:  min_dt  dt . g_t + dt . D_tp dp + 1/2 dt . eta_t^-1 dt
    phi:    max_dp  dp . g_p + dp . D_pt dt - 1/2 dp . eta_p^-1 dp

with ``g_t = grad_theta f``, ``g_p = grad_phi f``, ``D_tp = d^2 f / dtheta dphi`` and
``D_pt = D_tp^T``. Its first-order conditions are::

    dt = -eta_t (g_t + D_tp dp),        dp = eta_p (g_p + D_pt dt).

Eliminating ``dp`` and writing ``dt = -s_t u`` with ``s = eta^(1/2)`` gives a
symmetric positive definite system (``M = s_t D_tp s_p``, eigenvalues >= 1)::

    (I + M M^T) u = b,    b = s_t (g_t + D_tp eta_p g_p),

whose solution gives ``dt``, and then ``dp`` from the second condition. With a
scalar ``eta`` this is ``dt = -eta (I + eta^2 D_tp D_pt)^-1 (g_t + eta D_tp g_p)``
(methods.md section 5).

Mixed Hessian-vector products ``D_pt a`` and ``D_tp w`` are double-backward passes
through the graph of the first gradient. Each CG iteration costs two of them. The
right-hand side and the warm start's residual share two products; ``D_pt dt``, which
``dp`` needs, is updated alongside the iterate, so ``dp`` costs no extra product.
A solve therefore costs ``2 + 2k`` products for ``k`` iterations from a warm start
(``1 + 2k`` from zero).

Convergence test. In the scaled variables ``u`` (theta) and ``c = s_p^-1 dp``
(phi) the Nash system is ``(I + S) (u, c) = (s_t g_t, s_p g_p)`` with ``S``
skew-symmetric, so ``||(I + S) e|| >= ||e||`` for any ``e``: the error of both steps
together is at most the residual. With ``c`` computed exactly from ``u``, that
residual is the CG residual ``r = b - (I + M M^T) u``. CG stops when::

    ||r|| <= tol * min(||u||, ||c||),

which bounds the relative error of *each* player's step (in its own scaled norm)
by ``tol / (1 - tol)``. (A test relative to the right-hand side alone would accept
a zero step for the player with the smaller scaled gradient.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MixedHessian", "NashStep", "solve_nash_step"]

Reduce = Callable[[Tensor], Tensor]


def flatten(tensors: Sequence[Tensor | None], like: Sequence[Tensor], dtype: torch.dtype) -> Tensor:
    """One flat vector of ``tensors`` (zeros shaped like ``like[i]`` where ``tensors[i]`` is None) in ``dtype``."""
    if all(t is not None and t.dtype == dtype for t in tensors):
        return torch.cat([t.reshape(-1) for t in tensors])  # type: ignore[union-attr]
    parts = [
        torch.zeros(p.numel(), dtype=dtype, device=p.device) if t is None else t.reshape(-1).to(dtype)
        for t, p in zip(tensors, like)
    ]
    return torch.cat(parts) if len(parts) > 1 else parts[0].clone()


def unflatten(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Views of ``flat`` shaped like ``like`` (no copy)."""
    return [t.view_as(p) for t, p in zip(flat.split([p.numel() for p in like]), like)]


class MixedHessian:
    """Products with the mixed blocks of f's Hessian, through the graph of its first gradient.

    Args:
        grad_theta, grad_phi: ``grad f`` for each player, computed with ``create_graph=True``
            (per parameter; None where f does not reach the parameter).
        theta, phi: the players' parameters.
        dtype: dtype of the flat vectors the products take and return.
        scale: the factor the loss was multiplied by (a GradScaler's scale, a 0-dim tensor)
            or None; products are divided by it.
        reduce: applied to every product (the ranks' mean under ``distributed=True``).
    """

    def __init__(
        self, grad_theta: Sequence[Tensor | None], grad_phi: Sequence[Tensor | None],
        theta: Sequence[Tensor], phi: Sequence[Tensor], dtype: torch.dtype,
        scale: Tensor | None = None, reduce: Reduce | None = None,
    ) -> None:
        self.theta, self.phi, self.dtype = list(theta), list(phi), dtype
        self._scale = scale
        self._reduce = reduce
        self._gt = [(i, g) for i, g in enumerate(grad_theta) if g is not None and g.requires_grad]
        self._gp = [(i, g) for i, g in enumerate(grad_phi) if g is not None and g.requires_grad]
        #: Number of products computed so far (each one double-backward pass).
        self.products = 0

    def _product(self, outs: list[tuple[int, Tensor]], seed: Tensor, seed_like: list[Tensor],
                 inputs: list[Tensor]) -> Tensor:
        self.products += 1
        result: Sequence[Tensor | None] = [None] * len(inputs)
        if outs:
            parts = unflatten(seed, seed_like)
            seeds = [parts[i] if parts[i].dtype == g.dtype else parts[i].to(g.dtype) for i, g in outs]
            result = torch.autograd.grad(
                [g for _, g in outs], inputs, grad_outputs=seeds, retain_graph=True, allow_unused=True,
            )
        flat = flatten(result, inputs, self.dtype)
        if self._scale is not None:
            flat.div_(self._scale)
        return flat if self._reduce is None else self._reduce(flat)

    def phi_theta(self, a: Tensor) -> Tensor:
        """``D_pt a``: the change of ``grad_phi f`` along ``a`` in theta (phi-sized)."""
        return self._product(self._gt, a, self.theta, self.phi)

    def theta_phi(self, w: Tensor) -> Tensor:
        """``D_tp w``: the change of ``grad_theta f`` along ``w`` in phi (theta-sized)."""
        return self._product(self._gp, w, self.phi, self.theta)


@dataclass
class NashStep:
    """The solved step. Flat vectors; the scalars are 0-dim device tensors.

    Args:
        step_theta: theta's step ``dt`` (add it to theta), theta-sized.
        step_phi: phi's step ``dp`` (add it to phi), phi-sized.
        solution: the CG solution ``u`` (``dt = -eta_t^(1/2) u``), the next solve's warm start.
        iterations: CG iterations done (int64).
        residual: ``||r|| / min(||u||, ||c||)``, which bounds each player's relative step
            error (module docstring).
        converged: whether the residual met the tolerance (False also for NaN/Inf).
    """

    step_theta: Tensor
    step_phi: Tensor
    solution: Tensor
    iterations: Tensor
    residual: Tensor
    converged: Tensor


def solve_nash_step(
    hessian: MixedHessian, g_theta: Tensor, g_phi: Tensor, eta_theta: Tensor, eta_phi: Tensor,
    warm_start: Tensor | None, tol: float, max_iter: int, check_every: int | None = 1,
) -> NashStep:
    """Solve the local Nash step by conjugate gradient (see the module docstring).

    Args:
        hessian: the mixed Hessian products of f at the current point.
        g_theta, g_phi: flat ``grad f`` of each player (phi's is of f, not of -f).
        eta_theta, eta_phi: flat per-coordinate step sizes (>= 0).
        warm_start: the previous solution ``u`` (flat, theta-sized) or None to start at 0.
        tol: relative residual to reach (> 0): each player's step error <= tol / (1 - tol).
        max_iter: most CG iterations (>= 1).
        check_every: the host reads the stopping flag every ``check_every`` iterations
            (one sync each); None never reads it (all ``max_iter`` iterations run). In between, a device-side mask freezes a solve that has
            converged, so extra iterations cost time but never change the result.

    Returns:
        The step of both players, the solution, iterations and residual.
    """
    s_theta, s_phi = eta_theta.sqrt(), eta_phi.sqrt()
    tol_sq = tol * tol

    def phi_scaled(coupling: Tensor) -> Tensor:  # c = s_p^-1 dp
        return s_phi * (g_phi + coupling)

    if warm_start is None:
        u = torch.zeros_like(g_theta)
        coupling = torch.zeros_like(g_phi)  # D_pt dt for the current iterate
    else:
        u = warm_start.clone()
        coupling = hessian.phi_theta(-s_theta * u)
    r = s_theta * (g_theta + hessian.theta_phi(eta_phi * (g_phi + coupling))) - u
    p = r.clone()
    rr = r.dot(r)
    scale_sq = torch.minimum(u.dot(u), phi_scaled(coupling).square().sum())
    done = ~(rr > tol_sq * scale_sq)  # NaN stops too
    iterations = torch.zeros((), dtype=torch.int64, device=r.device)
    for k in range(max_iter):
        if check_every is not None and k % check_every == 0 and bool(done):
            break
        h1 = hessian.phi_theta(s_theta * p)
        ap = p + s_theta * hessian.theta_phi(eta_phi * h1)
        alpha = torch.where(done, torch.zeros_like(rr), rr / p.dot(ap))
        u.add_(alpha * p)
        coupling.sub_(alpha * h1)
        r.sub_(alpha * ap)
        rr_new = r.dot(r)
        beta = torch.where(done, torch.zeros_like(rr), rr_new / rr)
        p = r + beta * p
        iterations += (~done).to(torch.int64)
        rr = rr_new
        scale_sq = torch.minimum(u.dot(u), phi_scaled(coupling).square().sum())
        done = done | ~(rr > tol_sq * scale_sq)
    step_theta = -s_theta * u
    step_phi = s_phi * phi_scaled(coupling)
    # relative to the smaller step; absolute where a step is exactly zero
    residual = torch.where(scale_sq > 0, rr / scale_sq, rr).sqrt()
    return NashStep(step_theta, step_phi, u, iterations, residual, ~(rr > tol_sq * scale_sq))
