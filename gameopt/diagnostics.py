"""Spectrum of the game's Jacobian (why game optimisers help, Mescheder et al. 2017 section 3).

Convention (gameopt's: every player *minimises*): the update is ``x <- x - h F(x)`` with
``F = v`` for plain simultaneous steps and ``F = v + gamma * grad(1/2||v||^2)`` for
consensus. Near a fixed point the step converges iff every eigenvalue ``lambda`` of
``F'(x)`` satisfies ``|1 - h lambda| < 1``: eigenvalues need a *positive* real part, and
for ``lambda = a + bi`` the step size must satisfy ``h < 2a / (a^2 + b^2)`` (Lemma 4).
The paper states the same facts for ascent, where its field is ``-F``: its eigenvalues
are the negatives of these (its "negative real part" is our positive one).

For real networks ``F'(x)`` is never formed: products ``F'(x) d`` come from two
vector-Jacobian products (the "double-vjp" trick) and feed ARPACK through a scipy
``LinearOperator``. Small games can be solved exactly from the dense matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .errors import GameInputError
from .frameworks import find_game_optimizer
from .game_optimizer import GameOptimizer

Closure = Callable[[], Sequence[torch.Tensor]]


class GameField:
    """The update field ``F`` of a game at the current parameters, with Jacobian products.

    Args:
        closure: returns one loss per player (same order as the players), e.g.
            ``lambda: (gen_loss, disc_loss)``; it is re-evaluated by :meth:`at`.
            Use a fixed batch: the spectrum is that of this batch's game.
        players: the players' parameter lists, or a gameopt optimiser (its players), also
            wrapped by a training framework (``LightningOptimizer``, ``AcceleratedOptimizer``).
        gamma: 0 (default) for ``F = v``; > 0 for the consensus field ``v + gamma v'^T v``.

    ``v`` is every player's gradient of its own loss (each player minimises its own loss), flat,
    of length ``size`` (all players' parameter counts together); so are ``F`` and the vectors of
    :meth:`matvec` and :meth:`rmatvec`.

    Raises:
        GameInputError: ``gamma < 0``.
    """

    def __init__(
        self,
        closure: Closure,
        players: Sequence[Sequence[torch.Tensor]] | GameOptimizer,
        gamma: float = 0.0,
    ) -> None:
        game = find_game_optimizer(players)  # also inside a framework's wrapper (Lightning, accelerate)
        if game is not None:
            params = [game.player_params(p) for p in game.players]
        else:
            params = [list(ps) for ps in players]
        if gamma < 0:
            raise GameInputError(f"gamma must be >= 0, got {gamma}; it is the consensus weight (0: the plain game field)")
        self.closure = closure
        self.params = params
        self.flat_params = [p for ps in params for p in ps]
        self.size = sum(p.numel() for p in self.flat_params)
        self.gamma = float(gamma)
        self._u: torch.Tensor | None = None
        self._w: torch.Tensor | None = None
        self._jt_w: torch.Tensor | None = None

    def _field_with_graph(self) -> torch.Tensor:
        losses = self.closure()
        if len(losses) != len(self.params):
            raise GameInputError(f"closure returned {len(losses)} losses for {len(self.params)} players; return one "
                                 "loss per player, in the players' order")
        finite = torch.stack([torch.isfinite(torch.as_tensor(loss)).all() for loss in losses]).tolist()
        if not all(finite):
            bad = [i for i, ok in enumerate(finite) if not ok]
            raise GameInputError(
                f"the closure returned a NaN or inf loss for player(s) {bad}: the game has no Jacobian "
                "spectrum here. Check the losses at these parameters (log(0), overflow, a diverged run)."
            )
        parts: list[torch.Tensor] = []
        for loss, ps in zip(losses, self.params):
            grads = torch.autograd.grad(loss, ps, create_graph=True, allow_unused=True)
            parts += [torch.zeros_like(p) if g is None else g for p, g in zip(ps, grads)]
        v = torch.cat([t.reshape(-1) for t in parts])
        if self.gamma == 0:
            return v
        # grad(1/2||v||^2) = v'^T v, kept differentiable in both v' and v
        r = torch.autograd.grad(v, self.flat_params, grad_outputs=v, create_graph=True, allow_unused=True)
        r_flat = torch.cat([
            (torch.zeros_like(p) if t is None else t).reshape(-1) for p, t in zip(self.flat_params, r)
        ])
        return v + self.gamma * r_flat

    def at(self) -> GameField:
        """(Re)build the field's graph at the current parameters; returns self.

        Raises:
            GameInputError: the closure returned a number of losses other than the number of
                players, or a loss or an entry of ``F`` is NaN/inf.
        """
        with torch.enable_grad():
            u = self._field_with_graph()
            w = torch.zeros_like(u, requires_grad=True)
            jt_w = torch.autograd.grad(u, self.flat_params, grad_outputs=w, create_graph=True, allow_unused=True)
            self._jt_w = torch.cat([
                (torch.zeros_like(p) if t is None else t).reshape(-1) for p, t in zip(self.flat_params, jt_w)
            ])
        if not bool(torch.isfinite(u).all()):
            raise GameInputError(
                f"the update field F has {int((~torch.isfinite(u)).sum())} NaN/inf entries at these parameters "
                "(a gradient overflowed or is undefined): its Jacobian spectrum is not defined here."
            )
        self._u, self._w = u, w
        return self

    def _ready(self) -> None:
        if self._u is None:
            self.at()

    def value(self) -> torch.Tensor:
        """``F(x)``, flat, detached."""
        self._ready()
        return self._u.detach()

    def rmatvec(self, w: torch.Tensor) -> torch.Tensor:
        """``F'(x)^T w`` (one vector-Jacobian product)."""
        self._ready()
        g = torch.autograd.grad(self._u, self.flat_params, grad_outputs=w.to(self._u), retain_graph=True, allow_unused=True)
        return torch.cat([(torch.zeros_like(p) if t is None else t).reshape(-1) for p, t in zip(self.flat_params, g)]).detach()

    def matvec(self, d: torch.Tensor) -> torch.Tensor:
        """``F'(x) d``: differentiate ``w -> F'(x)^T w`` (linear in w) once more."""
        self._ready()
        if not self._jt_w.requires_grad:
            return torch.zeros_like(self._u).detach()
        (out,) = torch.autograd.grad(self._jt_w, self._w, grad_outputs=d.to(self._u), retain_graph=True, allow_unused=True)
        return torch.zeros_like(self._u).detach() if out is None else out.detach()

    def jacobian(self) -> torch.Tensor:
        """Dense ``F'(x)``, shape (size, size); for small games (size up to a few thousand)."""
        self._ready()
        eye = torch.eye(self.size, dtype=self._u.dtype, device=self._u.device)
        try:
            rows = torch.autograd.grad(
                self._u, self.flat_params, grad_outputs=eye, retain_graph=True,
                is_grads_batched=True, allow_unused=True,
            )
            return torch.cat([
                (torch.zeros(self.size, *p.shape, dtype=eye.dtype, device=eye.device) if t is None else t)
                .reshape(self.size, -1) for p, t in zip(self.flat_params, rows)
            ], 1).detach()
        except RuntimeError:
            return torch.stack([self.rmatvec(e) for e in eye])

    def eigenvalues(self, k: int | None = None, which: str = "LM", tol: float = 1e-6) -> np.ndarray:
        """Eigenvalues of ``F'(x)`` (complex, numpy).

        ``k=None``: all of them, exactly, from the dense matrix. Otherwise ``k``
        eigenvalues by ARPACK with matrix-free products; ``which`` as in
        ``scipy.sparse.linalg.eigs``: "LM" largest modulus, "SR" smallest real part
        (the least stable), "LR" largest real part, "LI" largest imaginary part.

        Args:
            k: how many eigenvalues (default None: all).
            which: which ``k`` (default "LM"); ignored with ``k=None``.
            tol: ARPACK's relative accuracy (default 1e-6; 0 is machine precision).

        Returns:
            Complex array of shape ``(size,)`` (``k=None``) or ``(k,)``.

        Raises:
            GameInputError: ``which`` is not one of LM, SM, LR, SR, LI, SI, or a loss, the field, the dense Jacobian or a Jacobian-vector product
                is NaN/inf (checked before LAPACK / ARPACK see it: they can crash on NaN).
        """
        if k is None or k >= self.size - 1:
            J = self.jacobian().to(torch.float64).cpu()
            _check_finite_jacobian(int((~torch.isfinite(J)).sum()), "dense Jacobian")
            return torch.linalg.eigvals(J).numpy()
        from scipy.sparse.linalg import LinearOperator, eigs

        self._ready()
        dtype = self._u.dtype

        def mv(x: np.ndarray) -> np.ndarray:
            d = torch.as_tensor(np.real(x).ravel(), dtype=dtype, device=self._u.device)
            out = self.matvec(d).to(torch.float64).cpu().numpy()
            if np.iscomplexobj(x):
                di = torch.as_tensor(np.imag(x).ravel(), dtype=dtype, device=self._u.device)
                out = out + 1j * self.matvec(di).to(torch.float64).cpu().numpy()
            # ARPACK must never see NaN (it fails late or crashes): stop at the first product
            _check_finite_jacobian(int((~np.isfinite(out)).sum()), "Jacobian-vector product")
            return out

        op = LinearOperator((self.size, self.size), matvec=mv, dtype=np.float64)
        if which not in ("LM", "SM", "LR", "SR", "LI", "SI"):
            raise GameInputError(f"which must be one of LM, SM, LR, SR, LI, SI, got {which!r}")
        vals = eigs(op, k=k, which=which, tol=tol, return_eigenvectors=False,
                    v0=np.random.default_rng(0).standard_normal(self.size))
        return np.asarray(vals)

    def summary(self, k: int | None = None, tol: float = 1e-6) -> SpectrumSummary:
        """Largest modulus, largest ``|imag| / real``, smallest real part and Lemma 4's step bound.

        ``k=None``: from the exact spectrum. Otherwise from ``3k`` eigenvalues found
        matrix-free (the ``k`` of largest modulus, smallest real part and largest
        imaginary part), which is what matters for step sizes in large networks.
        Eigenvalues of modulus below 1e-9 x the largest are treated as zero.

        Args:
            k: eigenvalues per end of the spectrum (default None: the exact spectrum).
            tol: ARPACK's relative accuracy (default 1e-6).

        Returns:
            A :class:`SpectrumSummary`.

        Raises:
            GameInputError: the field or its Jacobian is NaN/inf here (see :meth:`eigenvalues`).
        """
        return _summary(self, k, tol)


def _check_finite_jacobian(n_bad: int, what: str) -> None:
    if n_bad:
        raise GameInputError(
            f"the {what} of the update field has {n_bad} NaN/inf entries at these parameters (a second "
            "derivative is undefined or overflowed): its eigenvalues are not defined here; "
            "the eigen-solver was not called."
        )


def _finite_eigenvalues(eigenvalues: np.ndarray, where: str) -> np.ndarray:
    lam = np.asarray(eigenvalues, dtype=complex)
    bad = int((~np.isfinite(lam)).sum())
    if bad:
        raise GameInputError(
            f"{where}: {bad} of {lam.size} eigenvalues are NaN or inf; no step size can be certified "
            "stable from them. Compute the spectrum at finite parameters and losses."
        )
    return lam


def _summary(field: GameField, k: int | None, tol: float) -> SpectrumSummary:
    if k is None or 3 * k >= field.size - 1:
        lam = field.eigenvalues()
    else:
        lam = np.concatenate([field.eigenvalues(k, which, tol) for which in ("LM", "SR", "LI")])
    return summarize_spectrum(lam, zero_tol=1e-9 * max(1.0, float(np.max(np.abs(lam)))))


@dataclass
class SpectrumSummary:
    """Summary of eigenvalues ``lambda = a + bi`` of an update field's Jacobian (minimise convention).

    Args:
        max_modulus: largest ``|lambda|``.
        max_imag_real_ratio: largest ``|b| / a`` over eigenvalues with ``a > 0`` (inf if some
            ``a <= 0`` has ``b != 0``).
        min_real: smallest real part (``<= 0`` means no step size converges).
        max_step: Lemma 4's bound ``min 2a / (a^2 + b^2)`` on the step size (0 when some
            ``a <= 0``; inf when every eigenvalue is zero).
    """

    max_modulus: float
    max_imag_real_ratio: float
    min_real: float
    max_step: float

    def as_dict(self) -> dict[str, float]:
        """The four fields as ``{name: value}`` (for logging)."""
        return asdict(self)


def max_stable_step(eigenvalues: np.ndarray, zero_tol: float = 0.0) -> float:
    """Largest ``h`` for which ``x <- x - h F(x)`` converges locally (Lemma 4, minimise convention).

    Args:
        eigenvalues: eigenvalues ``lambda = a + bi`` of the field's Jacobian (any shape; complex
            or real).
        zero_tol: eigenvalues with ``|lambda| <= zero_tol`` are ignored (directions the field
            does not move); default 0.

    Returns:
        ``min 2a / (a^2 + b^2)``; 0.0 when some ``a <= 0``; inf when no eigenvalue is left.

    Raises:
        GameInputError: an eigenvalue is NaN or inf (no step is stable for an undefined spectrum).
    """
    lam = _finite_eigenvalues(eigenvalues, "max_stable_step")
    lam = lam[np.abs(lam) > zero_tol]
    if lam.size == 0:
        return math.inf
    a, b = lam.real, lam.imag
    if np.any(a <= 0):
        return 0.0
    return float(np.min(2 * a / (a * a + b * b)))


def summarize_spectrum(eigenvalues: np.ndarray, zero_tol: float = 0.0) -> SpectrumSummary:
    """:class:`SpectrumSummary` of a set of eigenvalues.

    Args:
        eigenvalues: eigenvalues of the field's Jacobian (any shape; complex or real).
        zero_tol: eigenvalues with ``|lambda| <= zero_tol`` are ignored (default 0).

    Raises:
        GameInputError: an eigenvalue is NaN or inf.
    """
    lam = _finite_eigenvalues(eigenvalues, "summarize_spectrum")
    lam_nz = lam[np.abs(lam) > zero_tol]
    if lam_nz.size == 0:
        return SpectrumSummary(0.0, 0.0, 0.0, math.inf)
    a, b = lam_nz.real, np.abs(lam_nz.imag)
    pos = a > 0
    ratio = float(np.max(b[pos] / a[pos])) if pos.any() else math.inf
    if np.any(~pos & (b > 0)):
        ratio = math.inf
    return SpectrumSummary(
        max_modulus=float(np.max(np.abs(lam_nz))),
        max_imag_real_ratio=ratio,
        min_real=float(np.min(a)),
        max_step=max_stable_step(lam_nz),
    )
