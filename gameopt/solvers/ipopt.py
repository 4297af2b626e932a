"""Ipopt (cyipopt) solver for the Dualing-GAN duals, as in the paper.

Exact gradients and Hessians. Settings chosen for accuracy (methods.md): with
Ipopt's default gradient-based objective scaling a "successful" solve can leave
a duality gap near 1e-2 at C = 1e-4, so scaling is off, the barrier update is
adaptive and the tolerance tight. Problems of a batch are solved one by one on
the CPU in float64; results come back on the input device/dtype of the caller.

The trust-region dual is solved in the paper's form, with 2n + 1 variables
(lam, mu, nu >= 0); the torch solver eliminates nu instead, so comparing the
two checks the closed form of nu.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import GameInputError
from ._common import LinearDualResult, TrustRegionDualResult, check_tol, logit_of_box
from .torch_newton import evaluate_kernel_point, evaluate_linear_point

try:  # pragma: no cover - exercised by the import-error test through monkeypatching
    import cyipopt as _cyipopt
except ImportError:  # pragma: no cover
    _cyipopt = None

__all__ = ["IpoptSolver", "DEFAULT_IPOPT_OPTIONS"]

DEFAULT_IPOPT_OPTIONS: dict[str, object] = {
    "tol": 1e-12,
    "nlp_scaling_method": "none",
    "mu_strategy": "adaptive",
    "max_iter": 3000,
    "bound_relax_factor": 0.0,  # keep e inside [0, 1/m]: the entropy is undefined outside
    "print_level": 0,
    "sb": "yes",
}

# Ipopt statuses that end at a candidate optimum: Solve_Succeeded, Solved_To_Acceptable_Level,
# Search_Direction_Becomes_Too_Small (seen at gaps ~1e-13 on these duals). A solve counts as
# converged only if the status is one of these AND the certified duality gap is <= tol.
_SOLVED = (0, 1, 3)


def _require_cyipopt():
    if _cyipopt is None:
        raise ImportError(
            "the 'ipopt' dual solver needs cyipopt: install it with "
            '`pip install "gameopt[ipopt]"` (the cyipopt-wheels distribution bundles Ipopt).'
        )
    return _cyipopt


def _neg_entropy_terms(e: np.ndarray, m: int):
    """Value, gradient and Hessian diagonal of -(1/m) sum H(m e)."""
    u = np.clip(m * e, 1e-300, 1.0 - 1e-16)
    val = (u * np.log(u) + (1 - u) * np.log1p(-u)).sum() / m
    grad = np.log(u) - np.log1p(-u)
    hdiag = m / (u * (1 - u))
    return val, grad, hdiag


class _LinearDualNLP:
    """min_e ||A^T e||^2 / (2C) - (1/m) sum H(m e),  e in [0, 1/m]^m."""

    def __init__(self, K: np.ndarray, C: float):
        self.K, self.C, self.m = K, C, K.shape[0]
        self.rows, self.cols = np.tril_indices(self.m)

    def objective(self, e):
        ent, _, _ = _neg_entropy_terms(e, self.m)
        return float(e @ self.K @ e / (2 * self.C) + ent)

    def gradient(self, e):
        _, g, _ = _neg_entropy_terms(e, self.m)
        return self.K @ e / self.C + g

    def hessianstructure(self):
        return self.rows, self.cols

    def hessian(self, e, lagrange, obj_factor):
        _, _, h = _neg_entropy_terms(e, self.m)
        H = self.K / self.C + np.diag(h)
        return obj_factor * H[self.rows, self.cols]


class _TrustRegionDualNLP:
    """min_(e, nu) -g(e, nu) of methods.md 3b in sign-adjusted kernel form, nu >= 0."""

    def __init__(self, Ks, c, p, W, C, delta):
        self.Ks, self.c, self.p, self.W, self.C, self.delta = Ks, c, p, W, C, delta
        self.m = Ks.shape[0]
        self.rows, self.cols = np.tril_indices(self.m + 1)

    def _parts(self, x):
        e, nu = x[:-1], x[-1]
        a = self.Ks @ e - self.C * self.p
        R = max(float(e @ self.Ks @ e - 2 * self.C * (self.p @ e) + self.C**2 * self.W), 0.0)
        return e, nu, a, R

    def objective(self, x):
        e, nu, a, R = self._parts(x)
        ent, _, _ = _neg_entropy_terms(e, self.m)
        return float(-0.5 * self.C * self.W + R / (2 * (self.C + nu)) + self.c @ e + ent + nu * self.delta)

    def gradient(self, x):
        e, nu, a, R = self._parts(x)
        _, g, _ = _neg_entropy_terms(e, self.m)
        d = self.C + nu
        return np.concatenate([a / d + self.c + g, [-R / (2 * d * d) + self.delta]])

    def hessianstructure(self):
        return self.rows, self.cols

    def hessian(self, x, lagrange, obj_factor):
        e, nu, a, R = self._parts(x)
        _, _, h = _neg_entropy_terms(e, self.m)
        d = self.C + nu
        H = np.empty((self.m + 1, self.m + 1))
        H[:-1, :-1] = self.Ks / d + np.diag(h)
        H[:-1, -1] = H[-1, :-1] = -a / (d * d)
        H[-1, -1] = R / d**3
        return obj_factor * H[self.rows, self.cols]


class IpoptSolver:
    """Dual solver calling Ipopt through cyipopt (CPU, float64, one problem at a time).

    Args:
        options: Ipopt options overriding :data:`DEFAULT_IPOPT_OPTIONS`.
        tol: duality gap at which a solve counts as converged (the Ipopt status
            must also be success), a finite float > 0. Default 1e-9.

    Raises:
        ImportError: cyipopt is not installed. GameInputError: bad ``options`` or ``tol``.
    """

    name = "ipopt"

    def __init__(self, options: dict | None = None, tol: float = 1e-9) -> None:
        _require_cyipopt()
        if options is not None and not (isinstance(options, dict) and all(isinstance(k, str) for k in options)):
            raise GameInputError(f"options must be a dict of Ipopt option names to values, got {options!r}")
        self.options = {**DEFAULT_IPOPT_OPTIONS, **(options or {})}
        self.tol = check_tol(tol)

    def __repr__(self) -> str:
        return f"IpoptSolver(options={self.options})"

    def _run(self, nlp, x0, lb, ub) -> tuple[np.ndarray, int, str, int]:
        cy = _require_cyipopt()
        iters = [0]

        def intermediate(*args):
            iters[0] = int(args[1])
            return True

        nlp.intermediate = intermediate  # cyipopt reads the callbacks when the Problem is built
        prob = cy.Problem(n=len(x0), m=0, problem_obj=nlp, lb=lb, ub=ub)
        for k, v in self.options.items():
            prob.add_option(k, v)
        x, info = prob.solve(x0)
        return np.asarray(x, dtype=np.float64), int(info["status"]), info["status_msg"], iters[0]

    def solve_linear(self, A: Tensor, C: Tensor) -> LinearDualResult:
        """Linear dual for sign-adjusted rows A (B, m, d), C (B,). See TorchNewtonSolver."""
        A64 = A.detach().to("cpu", torch.float64)
        C64 = C.detach().to("cpu", torch.float64)
        B, m, _ = A64.shape
        zs, statuses, ok, its = [], [], [], []
        for b in range(B):
            K = (A64[b] @ A64[b].T).numpy()
            x, st, msg, it = self._run(_LinearDualNLP(K, float(C64[b])), np.full(m, 0.5 / m), np.zeros(m), np.full(m, 1.0 / m))
            zs.append(logit_of_box(torch.from_numpy(x), m))
            statuses.append(msg if isinstance(msg, str) else msg.decode())
            ok.append(st in _SOLVED and np.all(np.isfinite(x)))
            its.append(it)
        res = evaluate_linear_point(torch.stack(zs), A64, C64, torch.tensor(its), self.tol, self.name)
        res.converged = res.converged & torch.tensor(ok)
        res.status = statuses
        return res

    def solve_kernel(
        self, Ks: Tensor, c: Tensor, p: Tensor, W: Tensor, C: Tensor, delta: Tensor
    ) -> TrustRegionDualResult:
        """Trust-region dual with explicit nu, B problems (one Ipopt solve each).

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
        Ks64, c64, p64 = (x.detach().to("cpu", torch.float64) for x in (Ks, c, p))
        W64, C64, D64 = (x.detach().to("cpu", torch.float64) for x in (W, C, delta))
        B, m, _ = Ks64.shape
        zs, nus, statuses, ok, its = [], [], [], [], []
        for b in range(B):
            dlt = float(D64[b])
            nlp = _TrustRegionDualNLP(Ks64[b].numpy(), c64[b].numpy(), p64[b].numpy(), float(W64[b]), float(C64[b]),
                                      dlt if np.isfinite(dlt) else 0.0)
            lb = np.zeros(m + 1)
            ub = np.concatenate([np.full(m, 1.0 / m), [0.0 if not np.isfinite(dlt) else 1e20]])
            x0 = np.concatenate([np.full(m, 0.5 / m), [0.0 if not np.isfinite(dlt) else 1.0]])
            x, st, msg, it = self._run(nlp, x0, lb, ub)
            zs.append(logit_of_box(torch.from_numpy(x[:-1]), m))
            nus.append(x[-1])
            statuses.append(msg if isinstance(msg, str) else msg.decode())
            ok.append(st in _SOLVED and np.all(np.isfinite(x)))
            its.append(it)
        res = evaluate_kernel_point(
            torch.stack(zs), Ks64, c64, p64, W64, C64, D64, torch.tensor(its), self.tol, self.name,
            nu=torch.tensor(nus, dtype=torch.float64),
        )
        res.converged = res.converged & torch.tensor(ok)
        res.status = statuses
        return res
