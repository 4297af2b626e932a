"""Batched damped-Newton solver for the Dualing-GAN duals, in plain torch.

Why this design (methods.md, "Solvers for 3a and 3b"):

* Iterates are *logits* (z = -A w in the linear case), and the dual point is
  u = sigmoid(z), e = u / m. Every iterate is strictly inside the box
  [0, 1/m]^m, so no fraction-to-boundary rule is needed and saturated
  samples (u ~ 0 or 1) cost nothing special.
* Linear dual, d <= m: Newton on the primal weights w with the d x d Hessian
  C I + A^T diag(u(1-u)/m) A (batched Cholesky), backtracking on the convex
  primal f(w).
* Linear dual with d > m and the trust-region dual (score model): Newton on
  the fixed-point equation z = t(z), t = -(c + A s(e(z))), which for the
  linear case is exactly the primal Newton step written in the 2n x 2n kernel
  K. nu is eliminated in closed form, adding a rank-1 term to the kernel
  system; backtracking on the concave reduced dual (the Newton direction is an
  ascent direction in z).
* Stopping test: the duality gap, in closed form the mean Bernoulli
  KL(sigmoid(z) || sigmoid(t)) where t are the logits implied by the primal
  point recovered from the dual point. It is >= 0 and accurate to ~1e-16.
* Fixed shapes, B problems at once, per-problem ``done`` flags; the loop runs
  ``max_iter`` iterations and only looks at the flags on the host every
  ``sync_every`` iterations (``None``: never, for CUDA graphs / async use).

Tolerances: float64 (the CPU default) reaches gap <= 1e-12 on all tested problems;
float32 (the default on other devices) is used with ``tol`` around 1e-5 (rounding in the
kernel limits it), and problems it cannot certify are solved again in float64.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
from torch import Tensor

from ..errors import GameInputError
from ._common import (
    LinearDualResult,
    TrustRegionDualResult,
    _is_int,
    bernoulli_kl_logits,
    binary_entropy_logits,
    check_int,
    check_tol,
    entropy_from_parts,
    logistic_parts,
    softplus_exact,
    unconverged_status,
)

__all__ = ["TorchNewtonSolver"]

_ARMIJO = 1e-4


class TorchNewtonSolver:
    """Batched Newton solver (any device; float64 on the CPU, float32 elsewhere by default).

    Args:
        tol: duality-gap target, a finite float > 0; default 1e-12 (float64) or 1e-5 (float32).
        max_iter: Newton iterations run at most (fixed-shape loop), an int >= 1.
        dtype: computation dtype, ``torch.float64``, ``torch.float32`` or ``"auto"`` (default):
            float64 on the CPU, float32 on other devices, where float64 is 2x (H100) to about
            60x (consumer cards) slower and float32 solves almost every problem to a gap of
            1e-5 (``benchmarks/dual_precision``); the rest are refined in float64 (``promote``).
            Inputs are cast to it and results returned in it.
        sync_every: check "all problems done" on the host every this many
            iterations (an int >= 1) and stop early; ``None`` never synchronises (no host read
            at all: every solve runs all ``max_iter`` iterations, converged problems frozen,
            and ``status`` is not computed). Default "auto": every iteration on CPU (free
            there), every 5 on other devices. Where it is not 1, a trust-region solve runs its
            unconstrained and its constrained phase side by side as one batch.
        line_search_steps: number of step sizes 1, 1/2, ..., 2^-(k-1) tried in parallel
            (on the CPU only after the full step was rejected), an int in [1, 60].
        cpu_chunk_bytes: on the CPU, split a batch so one chunk's (m x m or d x d)
            matrices take about this many bytes (stay in cache; measured 1.5x faster
            at n = 256, d = 1000). ``None``: never split. Ignored on other devices.
        linear_path: the linear dual's Newton system: "auto" (cheaper of the two),
            "primal" (d x d) or "kernel" (2n x 2n).
        promote: float32 only: problems that float32 rounding cannot certify to ``tol``
            (ill-conditioned ones, ||K|| / C large) are solved again in float64 and returned
            in float32. Costs one host read per solve; not done with ``sync_every=None``.

    Raises:
        GameInputError: an option outside its range (the message names it).
    """

    name = "torch"

    def __init__(
        self,
        tol: float | None = None,
        max_iter: int = 100,
        dtype: "torch.dtype | str" = "auto",
        sync_every: int | None | str = "auto",
        line_search_steps: int = 24,
        cpu_chunk_bytes: int | None = 8 * 2**20,
        linear_path: str = "auto",
        promote: bool = True,
    ) -> None:
        if not (dtype in (torch.float64, torch.float32) or dtype == "auto"):
            raise GameInputError(f"dtype must be torch.float64, torch.float32 or 'auto', got {dtype!r}")
        #: "auto", or the dtype given; :attr:`dtype` is what the CPU uses under "auto".
        self.dtype_option = dtype
        self.dtype = torch.float64 if dtype == "auto" else dtype
        self._tol_option = None if tol is None else check_tol(tol)
        self.tol = self._tol_option if tol is not None else (1e-12 if self.dtype == torch.float64 else 1e-5)
        self.max_iter = check_int("max_iter", max_iter, 1)
        if not (sync_every in ("auto", None) or _is_int(sync_every)):
            raise GameInputError(f"sync_every must be 'auto', None or an int >= 1, got {sync_every!r}")
        self.sync_every = sync_every if sync_every in ("auto", None) else check_int("sync_every", sync_every, 1)
        self.line_search_steps = check_int("line_search_steps", line_search_steps, 1, 60)
        self.cpu_chunk_bytes = None if cpu_chunk_bytes is None else check_int("cpu_chunk_bytes", cpu_chunk_bytes, 1)
        self.linear_path = linear_path
        if not isinstance(promote, bool):
            raise GameInputError(f"promote must be True or False, got {promote!r}")
        self.promote = promote
        self._near = 1e-8 if dtype == torch.float64 else 1e-3  # gap below which the merit is rounding-level

    @property
    def linear_path(self) -> str:
        """The linear dual's Newton system: "auto", "primal" (d x d) or "kernel" (2n x 2n)."""
        return self._linear_path

    @linear_path.setter
    def linear_path(self, value: str) -> None:
        if value not in ("auto", "primal", "kernel"):
            raise GameInputError(f"linear_path must be 'auto', 'primal' or 'kernel', got {value!r}")
        self._linear_path = value

    def __repr__(self) -> str:
        return f"TorchNewtonSolver(tol={self.tol}, max_iter={self.max_iter}, dtype={self.dtype_option})"

    def for_device(self, device: torch.device) -> "TorchNewtonSolver":
        """The solver that runs on ``device``: itself, or under ``dtype="auto"`` off the CPU a float32 copy
        (``tol`` 1e-5 unless one was given)."""
        if getattr(self, "dtype_option", self.dtype) != "auto" or device.type == "cpu":
            return self
        other = copy.copy(self)
        other.dtype_option = other.dtype = torch.float32
        other.tol = self._tol_option if self._tol_option is not None else 1e-5
        other._near = 1e-3
        return other

    # ------------------------------------------------------------------ helpers
    def _sync_period(self, device: torch.device) -> int | None:
        if self.sync_every == "auto":
            return 1 if device.type == "cpu" else 5
        return self.sync_every  # type: ignore[return-value]

    def _slack(self, value: Tensor) -> Tensor:
        # Armijo tests compare O(1) objectives; allow a few ulps of rounding.
        return 16 * torch.finfo(value.dtype).eps * (value.abs() + 1.0)

    def _steps(self, device: torch.device) -> Tensor:
        # plain halving: a coarser grid was measured to stall the damped phase on hard problems
        # built on the device: a host arange would be a blocking copy every solve on a GPU
        return 2.0 ** -torch.arange(self.line_search_steps, dtype=self.dtype, device=device)

    def _line_search(self, trials, ts: Tensor, done: Tensor, period: int | None) -> Tensor:
        """Step length per problem: the largest trial step passing ``trials`` (0 when done).

        All trial steps are evaluated at once (fixed shapes). Where looking at the host is
        free (``sync_every == 1``, the CPU default), the full step is tried alone first and
        the other trials are evaluated only if some problem rejects it.
        """
        zero = torch.zeros((), dtype=ts.dtype, device=ts.device)
        if period == 1:
            ok1 = trials(ts[:1])[:, 0]
            if bool((ok1 | done).all()):
                return torch.where(done, zero, ts[0])
        return torch.where(done, zero, self._first_true(trials(ts), ts))

    @staticmethod
    def _first_true(ok: Tensor, ts: Tensor) -> Tensor:
        """Largest trial step satisfying ``ok`` (B, L) -> (B,), 0 when none does."""
        idx = torch.argmax(ok.to(ts.dtype), dim=-1)  # first True: argmax returns the first maximum
        return torch.where(ok.any(-1), ts[idx], torch.zeros((), dtype=ts.dtype, device=ts.device))

    # ------------------------------------------------------------ linear dual
    def _chunk(self, device: torch.device, B: int, side: int) -> int:
        if device.type != "cpu" or self.cpu_chunk_bytes is None:
            return B
        per = side * side * torch.finfo(self.dtype).bits // 8
        return max(1, min(B, self.cpu_chunk_bytes // per))

    def solve_linear(self, A: Tensor, C: Tensor) -> LinearDualResult:
        """Linear dual for sign-adjusted rows A (B, m, d) = [phi(real); -phi(fake)], C (B,)."""
        dev_solver = self.for_device(A.device)
        if dev_solver is not self:
            return dev_solver.solve_linear(A, C)
        B, m, d = A.shape
        self._stopped_done = False
        ch = self._chunk(A.device, B, min(m, d))
        if ch < B:
            res = _cat_results([self._solve_linear(A[i:i + ch], C[i:i + ch]) for i in range(0, B, ch)])
        else:
            res = self._solve_linear(A, C)
        return self._finish(res, lambda: torch.linalg.vector_norm(A.to(self.dtype), dim=(-2, -1)) ** 2, C,
                            lambda s, idx: s.solve_linear(A[idx], C[idx]))

    def _solve_linear(self, A: Tensor, C: Tensor) -> LinearDualResult:
        A = A.to(self.dtype)
        C = C.to(device=A.device, dtype=self.dtype)
        B, m, d = A.shape
        L = self.line_search_steps
        # flops per Newton iteration: d x d primal Hessian A^T D A, or the 2n x 2n kernel
        # system (Cholesky + kernel products in the line search) after one K = A A^T; the
        # kernel path makes more memory passes per flop, hence the factor 2 (measured on CPU)
        kernel_cost = 2 * (m**3 / 3 + 2 * m * m * L)
        use_kernel = kernel_cost < 2 * m * d * d + d**3 / 3 if self.linear_path == "auto" else self.linear_path == "kernel"
        if use_kernel:
            Ks = A @ A.transpose(-1, -2)
            zeros = torch.zeros(B, m, dtype=self.dtype, device=A.device)
            res = self._solve_kernel(
                Ks, zeros, zeros, torch.zeros(B, dtype=self.dtype, device=A.device), C,
                torch.full((B,), math.inf, dtype=self.dtype, device=A.device),
            )
            e = torch.cat([res.lam, res.mu], dim=-1)
            w = (A.transpose(-1, -2) @ e.unsqueeze(-1)).squeeze(-1) / C[:, None]
            return LinearDualResult(
                lam=res.lam, mu=res.mu, w=w, gap=res.gap, dual_value=res.dual_value,
                primal_value=res.model_value, converged=res.converged,
                iterations=res.iterations, solver=self.name,
            )
        return self._solve_linear_primal(A, C)

    def _solve_linear_primal(self, A: Tensor, C: Tensor) -> LinearDualResult:
        B, m, d = A.shape
        dev = A.device
        At = A.transpose(-1, -2)
        eye = torch.eye(d, dtype=self.dtype, device=dev)
        ts = self._steps(dev)
        w = torch.zeros(B, d, dtype=self.dtype, device=dev)
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        iters = torch.zeros(B, dtype=torch.long, device=dev)
        period = self._sync_period(dev)
        Cc = C[:, None]
        jitter = 4 * d * torch.finfo(self.dtype).eps

        def gap_of(z: Tensor) -> Tensor:
            u = torch.sigmoid(z)
            w_rec = (At @ u.unsqueeze(-1)).squeeze(-1) / (m * Cc)
            t = -(A @ w_rec.unsqueeze(-1)).squeeze(-1)
            return bernoulli_kl_logits(z, t).mean(-1)

        for it in range(self.max_iter):
            z = -(A @ w.unsqueeze(-1)).squeeze(-1)
            gap = gap_of(z)
            done = done | (gap <= self.tol)
            if period is not None and it % period == 0 and bool(done.all()):
                self._stopped_done = True
                break
            u = torch.sigmoid(z)
            curv = u * torch.sigmoid(-z) / m
            grad = C[:, None] * w - (At @ u.unsqueeze(-1)).squeeze(-1) / m
            H = Cc[..., None] * eye + At @ (curv.unsqueeze(-1) * A)
            # C I is swamped by the rounding of A^T D A when ||A^T D A|| / C > 1 / eps (float32,
            # large features, small C): a diagonal shift at that rounding level keeps the
            # Cholesky factor finite; the damped direction is still a descent direction.
            Hd = H.diagonal(dim1=-2, dim2=-1)
            Hd.add_(jitter * Hd.amax(-1, keepdim=True))
            L, _ = torch.linalg.cholesky_ex(H)
            dw = -torch.cholesky_solve(grad.unsqueeze(-1), L).squeeze(-1)
            dz = -(A @ dw.unsqueeze(-1)).squeeze(-1)
            ww = (w * w).sum(-1, keepdim=True)
            wd = (w * dw).sum(-1, keepdim=True)
            dd = (dw * dw).sum(-1, keepdim=True)
            f0 = 0.5 * C * ww.squeeze(-1) + softplus_exact(z).mean(-1)
            slope = (grad * dw).sum(-1)
            def trials(ts: Tensor) -> Tensor:
                Z = z.unsqueeze(-1) + dz.unsqueeze(-1) * ts  # (B, m, L)
                fT = 0.5 * Cc * (ww + 2 * ts * wd + ts * ts * dd) - logistic_parts(Z)[3].mean(-2)
                return fT <= (f0 + self._slack(f0))[:, None] + _ARMIJO * ts * slope[:, None]

            step = self._line_search(trials, ts, done, period)
            w = w + step[:, None] * dw
            iters = iters + (~done).long()

        z = -(A @ w.unsqueeze(-1)).squeeze(-1)
        return evaluate_linear_point(z, A, C, iters, self.tol, self.name)

    # ----------------------------------------------------- kernel / trust region
    def solve_kernel(
        self, Ks: Tensor, c: Tensor, p: Tensor, W: Tensor, C: Tensor, delta: Tensor
    ) -> TrustRegionDualResult:
        """Reduced trust-region dual in sign-adjusted kernel form, B problems.

        Args:
            Ks: (B, m, m) kernel of the sign-adjusted rows, ``Y K Y`` with ``y = +1`` for the n
                real samples (first) and ``-1`` for the n fake ones (m = 2n).
            c: (B, m) sign-adjusted current scores ``y * F_k``.
            p: (B, m) sign-adjusted ``y * (J w_k)``.
            W: (B,) ``||w_k||^2``.
            C: (B,) weight decay (> 0).
            delta: (B,) trust-region radius (``inf`` allowed: no trust region).

        Returns:
            :class:`~gameopt.solvers.TrustRegionDualResult`, batched.
        """
        dev_solver = self.for_device(Ks.device)
        if dev_solver is not self:
            return dev_solver.solve_kernel(Ks, c, p, W, C, delta)
        B, m, _ = Ks.shape
        self._stopped_done = False
        ch = self._chunk(Ks.device, B, m)
        if ch < B:
            parts = [self._solve_kernel_two_phase(Ks[i:i + ch], c[i:i + ch], p[i:i + ch], W[i:i + ch], C[i:i + ch],
                                                  delta[i:i + ch]) for i in range(0, B, ch)]
            res = _cat_results(parts)
        else:
            res = self._solve_kernel_two_phase(Ks, c, p, W, C, delta)
        return self._finish(
            res, lambda: Ks.to(self.dtype).diagonal(dim1=-2, dim2=-1).sum(-1), C,
            lambda s, idx: s.solve_kernel(Ks[idx], c[idx], p[idx], W[idx], C[idx], delta[idx]))

    # ------------------------------------------------------------ after a solve
    def _finish(self, res, trace_k, C: Tensor, resolve):
        """Float32 problems that did not converge are solved again in float64 (``promote``);
        every problem still unconverged gets a ``status`` saying why and what to change.

        One host read, skipped with ``sync_every=None`` and when the loop's last periodic check
        (a read already paid) saw every problem done. ``trace_k()`` gives trace(K)
        per problem (for the status; computed only when some problem failed).
        """
        period = self._sync_period(res.gap.device)
        if period is None or (period > 1 and getattr(self, "_stopped_done", False)):
            return res  # no read: never synchronise, or the last periodic check saw every problem done
        bad = ~res.converged
        if not bool(bad.any()):
            return res
        if self.promote and self.dtype == torch.float32:
            idx = bad.nonzero().squeeze(-1)
            wide = TorchNewtonSolver(
                tol=self.tol, max_iter=self.max_iter, dtype=torch.float64, sync_every=self.sync_every,
                line_search_steps=self.line_search_steps, cpu_chunk_bytes=self.cpu_chunk_bytes,
                linear_path=self.linear_path,
            )
            sub = resolve(wide, idx)
            sub.iterations = sub.iterations + res.iterations[idx]  # report both phases' iterations
            for name, val in vars(res).items():
                if isinstance(val, Tensor):
                    val[idx] = getattr(sub, name).to(val.dtype)
            bad = ~res.converged
            if not bool(bad.any()):
                return res
        res.status = unconverged_status(res, trace_k(), C, self.tol, self.dtype, self.max_iter)
        return res

    def _solve_kernel_two_phase(
        self, Ks: Tensor, c: Tensor, p: Tensor, W: Tensor, C: Tensor, delta: Tensor
    ) -> TrustRegionDualResult:
        """Unconstrained model minimiser first; where it lies inside the ball it is the answer.

        With a huge radius the reduced dual's boundary branch (curvature sqrt(2 Delta)/||v||)
        slows Newton down badly (measured: > 100 iterations at C ~ 1e-5, Delta ~ 1e7), while
        the unconstrained problem converges in ~15. Problems whose unconstrained step is
        outside the ball (the usual case for small radii) are then solved with the radius.
        """
        delta = delta.to(device=Ks.device, dtype=self.dtype)
        finite = torch.isfinite(delta)
        if self._sync_period(Ks.device) != 1:
            return self._solve_kernel_fused(Ks, c, p, W, C, delta)
        if not bool(finite.any()):
            return self._solve_kernel(Ks, c, p, W, C, delta)
        free = self._solve_kernel(Ks, c, p, W, C, torch.full_like(delta, math.inf))
        # inside the ball with room for the rounding of R = e^T K e - 2C p^T e + C^2 W, which is
        # ~eps * (e^T |K| e + ...) and can exceed R itself when C is tiny
        e = torch.cat([free.lam, free.mu], -1).to(self.dtype)
        Ksd, pd, Wd, Cd = Ks.to(self.dtype), p.to(self.dtype), W.to(self.dtype), C.to(self.dtype)
        scale = (e * (Ksd.abs() @ e.unsqueeze(-1)).squeeze(-1)).sum(-1) + 2 * Cd * (pd.abs() * e).sum(-1) + Cd * Cd * Wd
        R_err = 64 * torch.finfo(self.dtype).eps * scale
        R = free.step_norm_sq * Cd * Cd
        inside = (free.converged & (R + R_err <= 2 * torch.where(finite, delta, torch.ones_like(delta)) * Cd * Cd)) | ~finite
        if bool(inside.all()):
            return free
        boxed = self._solve_kernel(Ks, c, p, W, C, delta)
        return _pick(inside, free, boxed)

    def _inside_ball(self, e: Tensor, R: Tensor, Ks: Tensor, p: Tensor, W: Tensor, C: Tensor, delta: Tensor
                     ) -> Tensor:
        """Whether the unconstrained step (dual point e, R = ||A^T e - C w||^2) lies in the ball.

        With room for the rounding of R = e^T K e - 2C p^T e + C^2 W, which is
        ~eps * (e^T |K| e + ...) and can exceed R itself when C is tiny.
        """
        scale = (e * (Ks.abs() @ e.unsqueeze(-1)).squeeze(-1)).sum(-1) + 2 * C * (p.abs() * e).sum(-1) + C * C * W
        R_err = 64 * torch.finfo(self.dtype).eps * scale
        finite = torch.isfinite(delta)
        return (R + R_err <= 2 * torch.where(finite, delta, torch.ones_like(delta)) * C * C) | ~finite

    def _solve_kernel_fused(
        self, Ks: Tensor, c: Tensor, p: Tensor, W: Tensor, C: Tensor, delta: Tensor
    ) -> TrustRegionDualResult:
        """The two phases of :meth:`_solve_kernel_two_phase` as one batch of 2B problems, no host read.

        Where a host read costs a device sync (GPU, or ``sync_every != 1``), the unconstrained
        problem and the one with the radius are solved side by side; the periodic check
        stops when each pair is answered (the free solve converged inside the ball, or the
        boxed one converged), and the answer is picked on the device.
        """
        dt = self.dtype
        B = Ks.shape[0]
        Ks2, c2, p2 = (torch.cat([x, x]) for x in (Ks.to(dt), c.to(dt), p.to(dt)))
        W2, C2 = (torch.cat([x, x]).to(device=Ks.device, dtype=dt) for x in (W, C))
        delta2 = torch.cat([torch.full_like(delta, math.inf), delta])

        def answered(done: Tensor, e: Tensor, R: Tensor) -> Tensor:
            inside = self._inside_ball(e[:B], R[:B], Ks2[:B], p2[:B], W2[:B], C2[:B], delta)
            free_done, boxed_done = done[:B], done[B:]
            return (free_done & inside) | (boxed_done & (free_done | ~inside))

        both = self._solve_kernel(Ks2, c2, p2, W2, C2, delta2, answered=answered)
        free, boxed = _split_result(both, B)
        e = torch.cat([free.lam, free.mu], -1)
        R = free.step_norm_sq * C2[:B] * C2[:B]
        inside = free.converged & self._inside_ball(e, R, Ks2[:B], p2[:B], W2[:B], C2[:B], delta)
        res = _pick(inside, free, boxed)
        res.iterations = torch.maximum(free.iterations, boxed.iterations)
        return res

    def _solve_kernel(
        self, Ks: Tensor, c: Tensor, p: Tensor, W: Tensor, C: Tensor, delta: Tensor, answered=None,
    ) -> TrustRegionDualResult:
        """Reduced trust-region dual in sign-adjusted kernel form.

        Args (B problems, m = 2n samples):
            Ks: (B, m, m) kernel of the sign-adjusted rows, Y K Y.
            c: (B, m) sign-adjusted current scores y * F_k.
            p: (B, m) sign-adjusted y * (J w_k).
            W: (B,) ||w_k||^2.  C: (B,) weight decay.  delta: (B,) radius (inf allowed).
            answered: ``(done, e, R) -> flags``: what the periodic host check requires to be
                all True to stop (default: every problem done).
        """
        dt = self.dtype
        Ks, c, p = Ks.to(dt), c.to(dt), p.to(dt)
        dev = Ks.device
        W, C, delta = (x.to(device=dev, dtype=dt) for x in (W, C, delta))
        B, m, _ = Ks.shape
        ts = self._steps(dev)
        finite = torch.isfinite(delta)
        # skip the rank-1 work for linear duals; asking costs a host read, so only where reads are free
        # (the rank-1 term is exactly zero where delta is infinite)
        has_tr = bool(finite.any()) if self._sync_period(dev) == 1 else True
        delta_f = torch.where(finite, delta, torch.ones_like(delta))
        sq2d = torch.where(finite, torch.sqrt(2 * delta_f), torch.full_like(delta, math.inf))
        Cc = C[:, None]

        def psi(R: Tensor, Cv: Tensor, sq: Tensor, dlt: Tensor, fin: Tensor) -> Tensor:
            """Eliminated-nu term: R/(2C) inside the ball, sqrt(2 Delta R) - C Delta on it."""
            inner = torch.sqrt(R) <= Cv * sq
            outer_val = torch.where(fin, sq * torch.sqrt(R) - Cv * dlt, torch.zeros_like(R))
            return torch.where(inner, R / (2 * Cv), outer_val)

        def state(z: Tensor):
            e = torch.sigmoid(z) / m
            Ke = (Ks @ e.unsqueeze(-1)).squeeze(-1)
            R = ((e * Ke).sum(-1) - 2 * C * (p * e).sum(-1) + C * C * W).clamp_min(0.0)
            denom = torch.maximum(C, torch.sqrt(R) / sq2d)
            a = Ke - Cc * p  # = A v, v = A^T e - C w_k
            t = -(c + a / denom[:, None])
            g = 0.5 * C * W - (c * e).sum(-1) + binary_entropy_logits(z).mean(-1) - psi(R, C, sq2d, delta_f, finite)
            return e, Ke, a, R, denom, t, g

        z = -c.clone()
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        iters = torch.zeros(B, dtype=torch.long, device=dev)
        period = self._sync_period(dev)
        for it in range(self.max_iter):
            e, Ke, a, R, denom, t, g0 = state(z)
            gap = bernoulli_kl_logits(z, t).mean(-1)
            done = done | (gap <= self.tol)
            if period is not None and it % period == 0:
                flags = done if answered is None else answered(done, e, R)
                if bool(flags.all()):
                    self._stopped_done = True
                    break
            r = z - t
            S = torch.sqrt(torch.sigmoid(z) * torch.sigmoid(-z) / m)
            outer = denom > C  # nu > 0: on the trust-region boundary
            # N = I + S M S with M = (Ks - [nu > 0] a a^T / R) / denom (PSD): two passes over m x m
            Sd = S / torch.sqrt(denom)[:, None]
            N = Sd.unsqueeze(-1) * Ks * Sd.unsqueeze(-2)
            N.diagonal(dim1=-2, dim2=-1).add_(1.0)
            if has_tr:
                coef = torch.where(outer, 1.0 / torch.sqrt(torch.where(outer, R, torch.ones_like(R))), torch.zeros_like(R))
                v = (Sd * a) * coef[:, None]
                N = torch.baddbmm(N, v.unsqueeze(-1), v.unsqueeze(-2), alpha=-1.0)
            N_diag = N.diagonal(dim1=-2, dim2=-1).clone()
            L, _ = torch.linalg.cholesky_ex(N)
            x = torch.cholesky_solve((S * r).unsqueeze(-1), L).squeeze(-1)
            Sx = S * x
            Mx = (Ks @ Sx.unsqueeze(-1)).squeeze(-1)
            if has_tr:
                Mx = Mx - a * ((a * Sx).sum(-1, keepdim=True) * coef[:, None] ** 2)
            Mx = Mx / denom[:, None]
            # dz = -(r - M S x) = -x / S in exact arithmetic. Where S M S dominates N (N_ii >= 2),
            # r and M S x are huge and nearly equal (||K|| / C >> 1), and their difference is
            # rounding noise (float32: exactly 0 seen at ||K|| / C ~ 1e9); x / S has no
            # cancellation there. Elsewhere S can be tiny (saturated samples), where the
            # difference form is the accurate one.
            dz = torch.where(N_diag >= 2.0, -x / S.clamp_min(torch.finfo(dt).tiny), -(r - Mx))
            slope = -(S * S * r * dz).sum(-1)  # d/dt g(z + t dz) at t = 0, > 0
            def trials(ts: Tensor) -> Tensor:
                Z = z.unsqueeze(-1) + dz.unsqueeze(-1) * ts  # (B, m, L)
                PZ = logistic_parts(Z)
                E = PZ[0] / m
                dE = E - e.unsqueeze(-1)
                KE = Ks @ E
                # The merit change is formed from differences: R / (2C) is O(1) while its change
                # near the optimum is ~1e-12, below the rounding of R itself when C is small.
                dR = (dE * (KE + Ke.unsqueeze(-1))).sum(-2) - 2 * Cc * (p.unsqueeze(-1) * dE).sum(-2)
                RT = (R[:, None] + dR).clamp_min(0.0)
                sqR, sqRT = torch.sqrt(R)[:, None], torch.sqrt(RT)
                lim = (C * sq2d)[:, None]
                both_in = (sqR <= lim) & (sqRT <= lim)
                both_out = (sqR > lim) & (sqRT > lim)
                dpsi_mixed = psi(RT, Cc, sq2d[:, None], delta_f[:, None], finite[:, None]) - psi(
                    R, C, sq2d, delta_f, finite)[:, None]
                dpsi = torch.where(
                    both_in, dR / (2 * Cc),
                    torch.where(both_out, sq2d[:, None] * dR / (sqR + sqRT).clamp_min(torch.finfo(dt).tiny), dpsi_mixed),
                )
                dg = (-(c.unsqueeze(-1) * dE).sum(-2)
                      + (entropy_from_parts(PZ) - binary_entropy_logits(z).unsqueeze(-1)).mean(-2) - dpsi)
                ok = dg >= _ARMIJO * ts * slope[:, None] - self._slack(g0)[:, None]
                # Fallback near the optimum only, where even the differenced merit is at rounding
                # level: accept the full Newton step if it cuts the (accurate) duality gap by 4x.
                denom1 = torch.maximum(C, sqRT[:, 0] / sq2d)
                t1 = -(c + (KE[..., 0] - Cc * p) / denom1[:, None])
                gap1 = bernoulli_kl_logits(Z[..., 0], t1).mean(-1)
                ok[:, 0] = ok[:, 0] | ((gap1 <= 0.25 * gap) & (gap <= self._near))
                return ok

            step = self._line_search(trials, ts, done, period)
            z = z + step[:, None] * dz
            iters = iters + (~done).long()

        return evaluate_kernel_point(z, Ks, c, p, W, C, delta, iters, self.tol, self.name)


def evaluate_linear_point(
    z: Tensor, A: Tensor, C: Tensor, iterations: Tensor, tol: float, solver: str
) -> LinearDualResult:
    """Result fields for the dual point u = sigmoid(z) of the linear dual (A: (B, m, d))."""
    m = A.shape[-2]
    e = torch.sigmoid(z) / m
    w = (A.transpose(-1, -2) @ e.unsqueeze(-1)).squeeze(-1) / C[:, None]
    t = -(A @ w.unsqueeze(-1)).squeeze(-1)
    gap = bernoulli_kl_logits(z, t).mean(-1)
    wsq = (w * w).sum(-1)
    dual = -0.5 * C * wsq + binary_entropy_logits(z).mean(-1)
    primal = 0.5 * C * wsq + softplus_exact(t).mean(-1)
    n = m // 2
    return LinearDualResult(
        lam=e[:, :n], mu=e[:, n:], w=w, gap=gap, dual_value=dual, primal_value=primal,
        converged=gap <= tol, iterations=iterations, solver=solver,
    )


def evaluate_kernel_point(
    z: Tensor, Ks: Tensor, c: Tensor, p: Tensor, W: Tensor, C: Tensor, delta: Tensor,
    iterations: Tensor, tol: float, solver: str, nu: Tensor | None = None,
) -> TrustRegionDualResult:
    """Result fields for the dual point u = sigmoid(z) of the reduced trust-region dual.

    nu is eliminated in closed form (nu* = max(0, sqrt(R / (2 Delta)) - C)), which makes
    the recovered step feasible and the gap exactly a mean Bernoulli KL. ``nu``, when
    given (Ipopt's own multiplier), is reported instead of nu* but not used.
    """
    m = Ks.shape[-1]
    finite = torch.isfinite(delta)
    delta_f = torch.where(finite, delta, torch.ones_like(delta))
    sq2d = torch.where(finite, torch.sqrt(2 * delta_f), torch.full_like(delta, math.inf))
    e = torch.sigmoid(z) / m
    Ke = (Ks @ e.unsqueeze(-1)).squeeze(-1)
    R = ((e * Ke).sum(-1) - 2 * C * (p * e).sum(-1) + C * C * W).clamp_min(0.0)
    denom = torch.maximum(C, torch.sqrt(R) / sq2d)
    t = -(c + (Ke - C[:, None] * p) / denom[:, None])
    inner = torch.sqrt(R) <= C * sq2d
    psi = torch.where(inner, R / (2 * C), torch.where(finite, sq2d * torch.sqrt(R) - C * delta_f, torch.zeros_like(R)))
    g = 0.5 * C * W - (c * e).sum(-1) + binary_entropy_logits(z).mean(-1) - psi
    gap = bernoulli_kl_logits(z, t).mean(-1)
    ws = ((p * e).sum(-1) - C * W) / denom
    ss = R / (denom * denom)
    model = 0.5 * C * (W + 2 * ws + ss) + softplus_exact(t).mean(-1)
    n = m // 2
    return TrustRegionDualResult(
        lam=e[:, :n], mu=e[:, n:], nu=(denom - C) if nu is None else nu, step_scale=1.0 / denom,
        step_norm_sq=ss, gap=gap, dual_value=g, model_value=model, converged=gap <= tol,
        iterations=iterations, solver=solver,
    )


def _pick(use_first: Tensor, first, second):
    """Per problem, the fields of ``first`` where ``use_first`` else those of ``second`` (no host read)."""
    fields = {}
    for f in dataclasses.fields(first):
        val = getattr(second, f.name)
        if isinstance(val, Tensor):
            sel = use_first.reshape(-1, *([1] * (val.ndim - 1)))
            fields[f.name] = torch.where(sel, getattr(first, f.name), val)
        else:
            fields[f.name] = val
    fields["iterations"] = first.iterations + second.iterations
    return type(first)(**fields)


def _split_result(res, B: int):
    """The first B and the last problems of a batched result, as two results."""
    head, tail = {}, {}
    for f in dataclasses.fields(res):
        val = getattr(res, f.name)
        head[f.name], tail[f.name] = (val[:B], val[B:]) if isinstance(val, Tensor) else (val, val)
    return type(res)(**head), type(res)(**tail)


def _cat_results(parts: list):
    """Concatenate per-chunk results along the batch dimension."""
    first = parts[0]
    fields = {}
    for name, val in vars(first).items():
        if isinstance(val, Tensor):
            fields[name] = torch.cat([getattr(p, name) for p in parts])
        else:
            fields[name] = val
    return type(first)(**fields)
