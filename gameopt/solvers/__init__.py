"""Dual solvers for the Dualing-GAN discriminator (Li et al. 2017; methods.md section 3).

Two problems, two solvers behind one interface:

* ``solve_linear_dual``: the linear discriminator's dual (Claim 1).
* ``solve_trust_region_dual``: the score-linearised trust-region dual (Claim 2),
  which needs only the 2n x 2n kernel K = J J^T, J w_k, the scores F_k and ||w_k||^2.

Solvers are chosen by name (``"torch"``: batched Newton, any device; ``"ipopt"``:
cyipopt, needs ``pip install "gameopt[ipopt]"``) or passed as an instance with
``solve_linear(A, C)`` and ``solve_kernel(Ks, c, p, W, C, delta)`` methods.

Sign convention: the discriminator minimises ::

    f(w) = C/2 ||w||^2 + 1/(2n) sum_i softplus(-F(w, x_i)) + 1/(2n) sum_j softplus(F(w, y_j));

``dual_value`` is max g = min_w f (up to ``gap``).
"""

from __future__ import annotations

import math
import warnings
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..errors import GameInputError
from ._common import (
    Checks,
    LinearDualResult,
    TrustRegionDualResult,
    as_batch_param,
    check_finite,
    check_positive,
)
from .torch_newton import TorchNewtonSolver

__all__ = [
    "DualSolver",
    "TorchNewtonSolver",
    "IpoptSolver",
    "LinearDualResult",
    "TrustRegionDualResult",
    "get_solver",
    "solve_linear_dual",
    "solve_trust_region_dual",
    "trust_region_step",
    "SOLVER_NAMES",
    "SolverConvergenceWarning",
]

SOLVER_NAMES = ("torch", "ipopt")


@runtime_checkable
class DualSolver(Protocol):
    """What a dual solver provides (both methods take batched, sign-adjusted inputs).

    ``name`` is the solver's name, recorded in its results.
    """

    name: str

    def solve_linear(self, A: Tensor, C: Tensor) -> LinearDualResult:
        """The linear dual (Claim 1) of B problems.

        Args:
            A: (B, m, d) sign-adjusted rows ``[phi(real); -phi(fake)]`` (m = 2n).
            C: (B,) weight decay (> 0).
        """
        ...

    def solve_kernel(
        self, Ks: Tensor, c: Tensor, p: Tensor, W: Tensor, C: Tensor, delta: Tensor
    ) -> TrustRegionDualResult:
        """The trust-region dual (Claim 2) of B problems, in sign-adjusted kernel form.

        Args:
            Ks: (B, m, m) kernel of the sign-adjusted rows, ``Y K Y`` with ``y = +1`` for the n
                real samples (first) and ``-1`` for the n fake ones (m = 2n).
            c: (B, m) sign-adjusted current scores ``y * F_k``.
            p: (B, m) sign-adjusted ``y * (J w_k)``.
            W: (B,) ``||w_k||^2``.
            C: (B,) weight decay (> 0).
            delta: (B,) trust-region radius (``inf`` allowed: no trust region).
        """
        ...


def __getattr__(name: str):
    if name == "IpoptSolver":  # lazy: importing gameopt must not require cyipopt
        from .ipopt import IpoptSolver

        return IpoptSolver
    raise AttributeError(name)


def get_solver(solver: "str | DualSolver" = "torch", **options) -> DualSolver:
    """Solver instance from a name or an instance (returned unchanged).

    Args:
        solver: ``"torch"`` (default, :class:`TorchNewtonSolver`), ``"ipopt"``
            (:class:`IpoptSolver`, needs cyipopt) or an object with ``solve_linear`` /
            ``solve_kernel``.
        **options: constructor options of the named solver.

    Raises:
        GameInputError: an unknown name, options given with an instance, or an object that is
            not a solver.
        ImportError: ``"ipopt"`` without cyipopt installed.
    """
    if isinstance(solver, str):
        key = solver.lower()
        if key == "torch":
            return TorchNewtonSolver(**options)
        if key == "ipopt":
            from .ipopt import IpoptSolver

            return IpoptSolver(**options)
        raise GameInputError(f"unknown solver {solver!r}; use one of {SOLVER_NAMES} or pass a solver instance")
    if isinstance(solver, DualSolver):
        if options:
            raise GameInputError("solver options can only be given together with a solver name")
        return solver
    raise GameInputError(
        f"solver must be one of {SOLVER_NAMES} or an object with solve_linear/solve_kernel, got {type(solver).__name__}"
    )


class SolverConvergenceWarning(RuntimeWarning):
    """A dual solve ended with some problem's duality gap above the solver's ``tol``."""


def check_on_failure(on_failure: str) -> None:
    if on_failure not in ("warn", "ignore"):
        raise GameInputError(f"on_failure must be 'warn' or 'ignore', got {on_failure!r}")


def _report(res, slv, on_failure: str, where: str) -> None:
    """Warn once per solve when some problem did not converge (one host read, none with sync_every=None)."""
    if on_failure == "ignore" or getattr(slv, "sync_every", "auto") is None:
        return
    if bool(res.converged.all()):  # the one read; the rest runs only when some problem failed
        return
    bad = (~res.converged.reshape(-1)).nonzero().flatten().tolist()
    if not bad:
        return
    status = res.status[bad[0]] if res.status is not None else f"duality gap {float(res.gap.reshape(-1)[bad[0]]):.3g}"
    warnings.warn(
        f"{where}: {len(bad)} of {res.converged.numel()} problem(s) did not converge "
        f"(first: problem {bad[0]}, {status}); see result.converged and result.status",
        SolverConvergenceWarning, stacklevel=3,
    )


def check_psd_kernel(K: Tensor, C, checks: Checks | None = None) -> None:
    """GameInputError unless K is symmetric and positive semi-definite up to a tolerance (one host read).

    K = J J^T always is PSD, but a K formed in low precision (float32, or bf16 under autocast)
    has eigenvalues down to about -m eps ||K||. The dual stays strictly concave as long as
    lambda_min(K) > -4 m C (the entropy's curvature, in K's units), so the test allows
    tol = max(64 m eps32 max(diag K), 2 m C): symmetry to 64 m eps32 max|K|, then a Cholesky
    factorisation of (K + K^T) / 2 + tol I. One m x m Cholesky per problem, once per solve
    (about 3-5% of a trust-region solve at m = 64-128). With ``checks`` the read is deferred
    to :meth:`Checks.run`, together with the other input checks.
    """
    _psd_factor(K, C, checks)


def _psd_factor(K: Tensor, C, checks: Checks | None = None) -> tuple[Tensor, Tensor]:
    """:func:`check_psd_kernel`, returning the Cholesky factor of (K + K^T) / 2 + tol I and
    its ``info`` (nonzero where it failed), for checks that reuse the factorisation."""
    Kf = K if K.is_floating_point() else K.double()
    m = Kf.shape[-1]
    eps = max(torch.finfo(Kf.dtype).eps, torch.finfo(torch.float32).eps)
    scale = Kf.diagonal(dim1=-2, dim2=-1).abs().amax(-1).clamp_min(torch.finfo(Kf.dtype).tiny)
    rounding = 64 * m * eps * scale
    Cb = C if isinstance(C, (int, float)) else torch.as_tensor(C, dtype=Kf.dtype, device=Kf.device)
    tol = torch.maximum(rounding, 2 * m * (Cb if isinstance(Cb, Tensor) else torch.full_like(rounding, Cb)))
    asym = (Kf - Kf.transpose(-1, -2)).abs().amax((-2, -1))
    shifted = 0.5 * (Kf + Kf.transpose(-1, -2))
    shifted.diagonal(dim1=-2, dim2=-1).add_(tol[..., None])
    L, info = torch.linalg.cholesky_ex(shifted)

    def not_symmetric() -> None:
        raise GameInputError(
            "K is not symmetric: it must be the kernel J J^T of the per-sample score gradients "
            f"(largest |K - K^T| {float(asym.max()):.3g}, allowed {float(rounding.min()):.3g})."
        )

    def not_psd() -> None:
        lowest = float(torch.linalg.eigvalsh(0.5 * (Kf + Kf.transpose(-1, -2))).min())
        raise GameInputError(
            f"K is not positive semi-definite (smallest eigenvalue {lowest:.3g}, below the allowance "
            f"-{float(tol.max()):.3g} = -max(float32 rounding, 2 * 2n * C)): it must be the kernel J J^T of the "
            "per-sample score gradients; with it the dual is not concave and its answer meaningless."
        )

    own = checks is None
    checks = Checks() if own else checks
    checks.add(~(asym > rounding).any(), not_symmetric)
    checks.add(~(info > 0).any(), not_psd)
    if own:
        checks.run()
    return L, info


def _check_jw_consistent(Jw: Tensor, w_norm_sq: Tensor, L: Tensor, info: Tensor,
                         checks: Checks | None = None) -> None:
    """GameInputError unless ``Jw`` and ``w_norm_sq`` can come from one J and w with K = J J^T.

    For Jw = J w, ``Jw^T K^+ Jw = ||P w||^2 <= ||w||^2`` (P projects onto J's row space).
    The test uses ``(K + tol I)^{-1}`` through ``L``, the Cholesky factor that
    :func:`_psd_factor` computed for the definiteness check (``info`` its status; the shift only
    lowers the left side), and allows 5% for rounding: it catches a J w from another batch or
    model, or a w_norm_sq that is not ``||w_k||^2``, not small inconsistencies. No
    factorisation of its own; one host read, or deferred to ``checks``.

    Args:
        Jw: (m,) or (B, m).  w_norm_sq: (B,) float64.  L, info: from :func:`_psd_factor` of K.

    Raises:
        GameInputError: naming the problem in the batch and the two numbers.
    """
    if Jw.numel() == 0 or Jw.is_complex() or L.is_complex():
        return
    Jf = Jw.to(L.dtype)
    q = (Jf[..., None] * torch.cholesky_solve(Jf[..., None], L)).sum((-2, -1)).double().reshape(-1)
    wn = w_norm_sq.to(device=q.device, dtype=q.dtype)
    bad = (info.reshape(-1) == 0) & (q > 1.05 * wn + 1e-300)

    def fail() -> None:
        i = int(bad.nonzero()[0, 0])
        raise GameInputError(
            f"Jw does not fit K and w_norm_sq (problem {i}): Jw^T K^+ Jw = {float(q[i]):.4g} exceeds "
            f"||w||^2 = w_norm_sq = {float(wn[i]):.4g}, impossible for Jw = J w with K = J J^T. Pass J w_k "
            "and ||w_k||^2 of the same weights and batch as K (ScoreKernel.Jw and the discriminator's weights)"
        )

    if checks is None:
        if bool(bad.any()):
            fail()
    else:
        checks.add(~bad.any(), fail)


def _as_tensor(value, name: str) -> Tensor:
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise GameInputError(f"{name} must be a tensor (or nested lists of numbers), got {type(value).__name__}: {err}") from err


def _unbatch(res, batched: bool):
    if batched:
        return res
    for f in ("lam", "mu", "w", "nu", "step_scale", "step_norm_sq", "gap", "dual_value",
              "primal_value", "model_value", "converged", "iterations"):
        if hasattr(res, f):
            setattr(res, f, getattr(res, f)[0])
    return res


def solve_linear_dual(
    real_features: Tensor,
    fake_features: Tensor,
    C: float | Tensor,
    solver: "str | DualSolver" = "torch",
    on_failure: str = "warn",
    **solver_options,
) -> LinearDualResult:
    """Solve the linear discriminator's dual exactly (methods.md 3a).

    Args:
        real_features: phi(x_i), shape (n, d) or batched (B, n, d).
        fake_features: phi(y_j), same shape as ``real_features``.
        C: weight decay (> 0), scalar or (B,).
        solver: "torch" | "ipopt" | a solver instance; ``solver_options`` go to its constructor.
        on_failure: "warn" (default): a :class:`SolverConvergenceWarning` with the first
            unconverged problem's ``status`` when some problem misses the solver's ``tol``;
            "ignore": only ``converged`` / ``status`` say so. Not checked when the solver never
            synchronises (``sync_every=None``).

    Returns:
        :class:`LinearDualResult` with ``lam`` (.., n) for the real samples, ``mu`` (.., n)
        for the fake ones, ``w`` (.., d) the optimal discriminator weights
        (sum lam phi(x) - sum mu phi(y)) / C, ``gap`` >= 0 the duality gap.

    Raises:
        GameInputError: shapes, empty samples (n = 0 or d = 0; B = 0 problems is fine), NaN/inf features,
            C <= 0, or a bad solver option (the message names it).
    """
    real = _as_tensor(real_features, "real_features")
    fake = _as_tensor(fake_features, "fake_features")
    if real.dtype == torch.bool or fake.dtype == torch.bool:
        raise GameInputError("features must be numbers, not bool tensors; convert them, e.g. phi.double()")
    if real.ndim not in (2, 3) or fake.ndim != real.ndim:
        raise GameInputError(
            f"features must both be (n, d) or both (B, n, d); got real {tuple(real.shape)}, fake {tuple(fake.shape)}"
        )
    if real.shape != fake.shape:
        raise GameInputError(
            f"real and fake features must have the same shape (the dual needs the same number n of real and fake "
            f"samples and the same feature dimension); got real {tuple(real.shape)}, fake {tuple(fake.shape)}. "
            "Draw as many generator samples as real samples."
        )
    if real.shape[-2] == 0 or real.shape[-1] == 0:
        raise GameInputError(
            f"features are empty (shape {tuple(real.shape)}): the dual needs n >= 1 real and n fake samples "
            "of dimension d >= 1."
        )
    checks = Checks()  # every input check, read at once
    check_finite("real_features", real, "the feature map's output on the data", checks)
    check_finite("fake_features", fake, "the feature map's output on the generated samples (a diverged generator?)",
                 checks)
    check_positive("C", C, checks=checks)
    checks.run()
    check_on_failure(on_failure)
    slv = get_solver(solver, **solver_options)
    res = solve_linear_unchecked(real, fake, C, slv)
    _report(res, slv, on_failure, "solve_linear_dual")
    return res


def solve_linear_unchecked(real: Tensor, fake: Tensor, C, slv: DualSolver) -> LinearDualResult:
    """:func:`solve_linear_dual` on inputs known to be valid: no check, no host read of its own."""
    batched = real.ndim == 3
    if not batched:
        real, fake = real[None], fake[None]
    A = torch.cat([real, -fake], dim=1)
    if not A.is_floating_point():
        A = A.double()
    Cb = as_batch_param(C, A.shape[0], torch.float64, A.device)
    return _unbatch(slv.solve_linear(A, Cb), batched)


def solve_trust_region_dual(
    K: Tensor,
    Jw: Tensor,
    Fk: Tensor,
    w_norm_sq: float | Tensor,
    C: float | Tensor,
    delta: float | Tensor,
    solver: "str | DualSolver" = "torch",
    on_failure: str = "warn",
    **solver_options,
) -> TrustRegionDualResult:
    """Solve the score-linearised trust-region dual (methods.md 3b).

    Args:
        K: (2n, 2n) or (B, 2n, 2n) kernel J J^T of per-sample score gradients,
            rows/columns ordered real samples first, then fake (no sign flips).
        Jw: (.., 2n) J w_k.  Fk: (.., 2n) current scores F(w_k, .).
        w_norm_sq: ||w_k||^2.  C: weight decay > 0.  delta: radius > 0 (``math.inf`` allowed:
            no trust region, the model's unconstrained minimiser).
        solver: "torch" | "ipopt" | instance.
        on_failure: "warn" | "ignore", as in :func:`solve_linear_dual`.

    Returns:
        :class:`TrustRegionDualResult`; the step is s = (J^T eta - C w_k) * step_scale with
        eta = (lam, -mu).

    Raises:
        GameInputError: shapes, an empty K, NaN/inf inputs, w_norm_sq < 0, C <= 0, delta <= 0,
            or a K that is not symmetric positive semi-definite (K = J J^T always is; eigenvalues
            down to -max(64 * 2n * eps(float32) * max diag K, 2 * 2n * C) are allowed, since a K
            formed in low precision is PSD only up to rounding and the dual stays concave there),
            or a Jw that no J and w with K = J J^T and ||w||^2 = w_norm_sq give
            (``Jw^T K^+ Jw > ||w||^2``). K in float16/bfloat16 is solved in float32.
    """
    K = _as_tensor(K, "K")
    if K.dtype in (torch.float16, torch.bfloat16):   # formed under autocast: solve in float32
        K = K.float()
    batched = K.ndim == 3
    if K.ndim not in (2, 3) or K.shape[-1] != K.shape[-2] or K.shape[-1] % 2:
        raise GameInputError(f"K must be (2n, 2n) or (B, 2n, 2n) with real samples first; got {tuple(K.shape)}")
    m = K.shape[-1]
    Jw = _as_tensor(Jw, "Jw").to(dtype=K.dtype, device=K.device)
    Fk = _as_tensor(Fk, "Fk").to(dtype=K.dtype, device=K.device)
    for name, x in (("Jw", Jw), ("Fk", Fk)):
        if x.shape != K.shape[:-1]:
            raise GameInputError(f"{name} must have shape {tuple(K.shape[:-1])} to match K; got {tuple(x.shape)}")
    if m == 0:
        raise GameInputError(
            f"K is empty (shape {tuple(K.shape)}): the dual needs n >= 1 real and n fake samples."
        )
    checks = Checks()  # every input check, read at once
    for name, x in (("K", K), ("Jw", Jw), ("Fk", Fk)):
        check_finite(name, x, "the score model's outputs and per-sample gradients (K = J J^T, J w_k, F_k)", checks)
    check_positive("w_norm_sq", w_norm_sq, allow_zero=True,
                   hint="it is ||w_k||^2, the squared norm of the current discriminator weights", checks=checks)
    check_positive("C", C, checks=checks)
    check_positive("delta", delta, allow_inf=True, checks=checks)
    # K's symmetry and definiteness are read with the rest; a NaN or C <= 0 is reported first
    L, info = _psd_factor(K, C, checks)
    # a user's Jw must come from K (the dual steps build both from one J and skip this check)
    B = K.shape[0] if K.ndim == 3 else 1
    _check_jw_consistent(Jw, as_batch_param(w_norm_sq, B, torch.float64, K.device), L, info, checks)
    checks.run()
    check_on_failure(on_failure)
    slv = get_solver(solver, **solver_options)
    res = solve_trust_region_unchecked(K, Jw, Fk, w_norm_sq, C, delta, slv)
    _report(res, slv, on_failure, "solve_trust_region_dual")
    return res


def solve_trust_region_unchecked(K: Tensor, Jw: Tensor, Fk: Tensor, w_norm_sq, C, delta,
                                 slv: DualSolver) -> TrustRegionDualResult:
    """:func:`solve_trust_region_dual` on inputs known to be valid (K finite and PSD, ...): no check,
    no host read of its own (the solver's periodic checks aside)."""
    batched = K.ndim == 3
    m = K.shape[-1]
    if not batched:
        K, Jw, Fk = K[None], Jw[None], Fk[None]
    B = K.shape[0]
    if not K.is_floating_point():
        K, Jw, Fk = K.double(), Jw.double(), Fk.double()
    y = torch.ones(m, dtype=K.dtype, device=K.device)
    y[m // 2:] = -1
    Ks = y[:, None] * K * y[None, :]
    res = slv.solve_kernel(
        Ks, y * Fk, y * Jw,
        as_batch_param(w_norm_sq, B, torch.float64, K.device),
        as_batch_param(C, B, torch.float64, K.device),
        as_batch_param(delta, B, torch.float64, K.device),
    )
    return _unbatch(res, batched)


def trust_region_step(
    result: TrustRegionDualResult, jt_eta: Tensor, w_k: Tensor, C: float, delta: float
) -> Tensor:
    """The primal step ``s = (J^T eta - C w_k) / (C + nu)``, kept inside ``1/2 ||s||^2 <= delta``.

    The solver sees only ``K = J J^T``, where ``||J^T eta - C w_k||^2`` is known to an absolute
    rounding of about ``eps * sum |e_i e_j K_ij|``; when that norm is tiny (C ~ 1e-6) the step
    can overshoot the ball by a relative 1e-6. The explicit norm here is accurate, so the step
    is rescaled onto the boundary in that case.

    Args:
        result: the unbatched :class:`TrustRegionDualResult` of :func:`solve_trust_region_dual`.
        jt_eta: ``J^T eta`` with ``eta = (lam, -mu)`` (one backward pass of
            ``sum eta_i F(x_i)``), flat, shape (p,) like ``w_k``.
        w_k: the current discriminator weights, flat, shape (p,).
        C: weight decay.
        delta: trust-region radius (``inf``: no rescaling).

    Returns:
        ``s``, shape (p,).
    """
    s = (jt_eta - C * w_k) * result.step_scale
    half_sq = 0.5 * (s * s).sum()
    if math.isfinite(float(delta)) and float(half_sq) > float(delta):
        s = s * math.sqrt(float(delta) / float(half_sq))
    return s
