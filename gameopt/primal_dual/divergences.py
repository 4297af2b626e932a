"""The (f0, f1) pairs of Table 1 in Chen, Wang & Ge (ICLR 2018).

The paper's discriminator *maximises*

    L(D, p_g) = E_{x~p_d} f0(D(x)) + E_{x~p_g} f1(D(x)),

the Lagrangian of "maximise sum p_d f0(D) subject to f1(D) >= 0" with the
generated distribution p_g as the dual variable.  gameopt's convention is that
both players *minimise*, so :meth:`Divergence.discriminator_loss` returns ``-L``
and :meth:`Divergence.generator_loss` returns the generator's part of ``L``
(``mean f1(D(G(z)))``, the generator loss of Algorithm 1, eq. 13).

Every method that takes ``d_real`` / ``d_fake`` takes the discriminator's *raw*
output ``s`` (a logit for the Jensen-Shannon variant) and maps it to ``D`` with the
variant's :meth:`Divergence.activation`.  The built-in variants compute
``f0(activation(s))`` and ``f1(activation(s))`` in closed forms that stay finite
for saturated discriminators (``|s| = 1e4``).

=================  ====================  ===========================  ==============================
name               D from raw output s   f0(D), f1(D)                 D*
=================  ====================  ===========================  ==============================
``kl``             softplus(s) > 0       log D, 1 - D                 p_d / p_g
``reverse_kl``     softplus(s) > 0       -D, log D                    p_g / p_d
``pearson``        s (real)              D, -D^2/4 - D                2 (p_d - p_g) / p_g
``hellinger``      eps + softplus(s)     1 - D, 1 - 1/D               sqrt(p_g / p_d)
``js``             sigmoid(s) in (0, 1)  log D, log(1 - D) + log 2    p_d / (p_d + p_g)
``wgan``           s (real)              D - eps D^2, -D              (p_d - p_g) / (2 eps p_d)
``other``          s (real)              -D^2/2 + D, D - 2            (p_d + p_g) / p_d
=================  ====================  ===========================  ==============================
"""

from __future__ import annotations

import math
from typing import Callable, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import GameInputError

__all__ = [
    "Divergence",
    "DIVERGENCE_NAMES",
    "get_divergence",
]

_LOG2 = math.log(2.0)
# Below this raw output softplus(s) == exp(s) to within float64 rounding, so
# log(softplus(s)) == s; used to keep log D finite when softplus underflows to 0.
_LOG_SOFTPLUS_SWITCH = -30.0


def _log_softplus(s: Tensor) -> Tensor:
    """log(softplus(s)) without -inf when softplus(s) underflows (s << 0)."""
    small = s < _LOG_SOFTPLUS_SWITCH
    # Feed the unused branch a harmless value so neither branch produces inf/NaN
    # (NaN gradients leak through torch.where otherwise).
    safe = torch.where(small, torch.zeros_like(s), s)
    return torch.where(small, s, torch.log(F.softplus(safe)))


def _identity(s: Tensor) -> Tensor:
    return s


def _wide(s: Tensor) -> Tensor:
    """float16 / bfloat16 raw outputs in float32 (as autocast computes losses): f0 and f1 of
    logits of 1e4 reach 1e8 (``pearson``, ``wgan``, ``other``), beyond float16's 65504."""
    return s.float() if s.dtype in (torch.float16, torch.bfloat16) else s


class Divergence:
    """One (f0, f1) pair of Table 1, plus how the raw discriminator output maps to D.

    Args:
        name: identifier (used in error messages and ``repr``).
        f0: objective on data points, as a function of D (elementwise, concave).
        f1: constraint on generated points, as a function of D (elementwise, concave).
        activation: maps the discriminator's raw output to D (default identity).
        d_range: human-readable range of D, for documentation.
        d_star: optional ``(p_d, p_g) -> D*``, the pointwise maximiser of
            ``p_d f0(D) + p_g f1(D)``.
        f0_from_output, f1_from_output: optional numerically stable versions of
            ``f0(activation(s))`` / ``f1(activation(s))``; default is the composition.

    A user-supplied pair is simply ``Divergence("mine", f0, f1, activation)``.

    Raises:
        GameInputError: ``f0`` or ``f1`` is not callable.
    """

    def __init__(
        self,
        name: str,
        f0: Callable[[Tensor], Tensor],
        f1: Callable[[Tensor], Tensor],
        activation: Callable[[Tensor], Tensor] | None = None,
        *,
        d_range: str = "real",
        d_star: Callable[[Tensor, Tensor], Tensor] | None = None,
        f0_from_output: Callable[[Tensor], Tensor] | None = None,
        f1_from_output: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if not callable(f0) or not callable(f1):
            raise GameInputError(
                f"Divergence {name!r}: f0 and f1 must be callables mapping D to a tensor; pass functions "
                "(e.g. lambda d: -F.softplus(-d)), not values."
            )
        self.name = name
        self._f0 = f0
        self._f1 = f1
        self._activation = activation if activation is not None else _identity
        self.d_range = d_range
        self._d_star = d_star
        self._f0_out = f0_from_output
        self._f1_out = f1_from_output

    # -- functions of D -------------------------------------------------------
    def f0(self, d: Tensor) -> Tensor:
        """Objective f0 at discriminator values ``d`` = D (not raw outputs), elementwise, same shape."""
        return self._f0(d)

    def f1(self, d: Tensor) -> Tensor:
        """Constraint f1 at discriminator values ``d`` = D (not raw outputs), elementwise, same shape."""
        return self._f1(d)

    def d_star(self, p_d: Tensor, p_g: Tensor) -> Tensor:
        """Optimal discriminator D*(x) of Table 1 for given densities p_d(x), p_g(x) (elementwise).

        Raises:
            NotImplementedError: the divergence has no closed-form D* (none was given).
        """
        if self._d_star is None:
            raise NotImplementedError(f"Divergence {self.name!r} has no closed-form D*.")
        return self._d_star(p_d, p_g)

    # -- functions of the raw discriminator output -----------------------------
    def activation(self, s: Tensor) -> Tensor:
        """Map the discriminator's raw output s to D (see the class table for ranges)."""
        return self._activation(s)

    def f0_from_output(self, s: Tensor) -> Tensor:
        """f0(activation(s)), computed stably for the built-in variants.

        float16 / bfloat16 ``s`` is computed and returned in float32 (gradients flow back in
        the input's dtype), so the values stay finite for ``|s|`` up to 1e4 in every dtype.
        """
        s = _wide(s)
        return self._f0_out(s) if self._f0_out is not None else self._f0(self._activation(s))

    def f1_from_output(self, s: Tensor) -> Tensor:
        """f1(activation(s)), computed stably for the built-in variants (half precision: in float32)."""
        s = _wide(s)
        return self._f1_out(s) if self._f1_out is not None else self._f1(self._activation(s))

    # -- Algorithm 1 losses in gameopt's minimise convention --------------------
    def discriminator_loss(self, d_real: Tensor, d_fake: Tensor) -> Tensor:
        """``-(mean f0(D(real)) + mean f1(D(fake)))``: minimise it to do the ascent of eq. (11).

        Args:
            d_real: raw discriminator output on a data batch, any shape.
            d_fake: raw discriminator output on a generated batch, any shape.
        """
        return -(self.f0_from_output(d_real).mean() + self.f1_from_output(d_fake).mean())

    def generator_loss(self, d_fake: Tensor) -> Tensor:
        """``mean f1(D(fake))``: the first term of the generator loss (13), which the generator minimises.

        For ``js`` this is the saturating minimax loss ``log(2(1 - D))``, exactly as in
        Algorithm 1; add :class:`~gameopt.PrimalDualRegularizer` to it.

        Args:
            d_fake: raw discriminator output on a generated batch, any shape.

        Returns:
            A 0-d tensor (float32 for half-precision input).
        """
        return self.f1_from_output(d_fake).mean()

    def __repr__(self) -> str:
        return f"Divergence({self.name!r}, D range: {self.d_range})"

    def __reduce_ex__(self, protocol):
        # Built-in variants hold lambdas, which pickle cannot store: rebuild them by name.
        # A user pair pickles by value (its functions must then be importable).
        if getattr(self, "_builtin", None) is not None:
            return (_builtin_divergence, self._builtin)
        return super().__reduce_ex__(protocol)


def _builtin_divergence(key: str, eps: float | None) -> Divergence:
    return get_divergence(key, eps=eps)


# --------------------------------------------------------------------------
# Built-in variants
# --------------------------------------------------------------------------


def _kl() -> Divergence:
    return Divergence(
        "kl",
        f0=torch.log,
        f1=lambda d: 1.0 - d,
        activation=F.softplus,
        d_range="D = softplus(s) > 0",
        d_star=lambda p_d, p_g: p_d / p_g,
        f0_from_output=_log_softplus,
        f1_from_output=lambda s: 1.0 - F.softplus(s),
    )


def _reverse_kl() -> Divergence:
    return Divergence(
        "reverse_kl",
        f0=lambda d: -d,
        f1=torch.log,
        activation=F.softplus,
        d_range="D = softplus(s) > 0",
        d_star=lambda p_d, p_g: p_g / p_d,
        f0_from_output=lambda s: -F.softplus(s),
        f1_from_output=_log_softplus,
    )


def _pearson() -> Divergence:
    return Divergence(
        "pearson",
        f0=lambda d: d,
        f1=lambda d: -0.25 * d * d - d,
        d_range="D = s, real",
        d_star=lambda p_d, p_g: 2.0 * (p_d - p_g) / p_g,
    )


def _hellinger(eps: float) -> Divergence:
    # 1/D is unbounded as D -> 0; the floor eps keeps f1 >= 1 - 1/eps (the paper
    # clamps D away from its boundary, Theorem 2) while gradients stay non-zero.
    return Divergence(
        "hellinger",
        f0=lambda d: 1.0 - d,
        f1=lambda d: 1.0 - 1.0 / d,
        activation=lambda s: eps + F.softplus(s),
        d_range=f"D = {eps:g} + softplus(s) > {eps:g}",
        d_star=lambda p_d, p_g: torch.sqrt(p_g / p_d),
    )


def _js() -> Divergence:
    return Divergence(
        "js",
        f0=torch.log,
        f1=lambda d: torch.log1p(-d) + _LOG2,
        activation=torch.sigmoid,
        d_range="D = sigmoid(s) in (0, 1)",
        d_star=lambda p_d, p_g: p_d / (p_d + p_g),
        # log sigmoid(s) = -softplus(-s); log(1 - sigmoid(s)) = -softplus(s)
        f0_from_output=lambda s: -F.softplus(-s),
        f1_from_output=lambda s: _LOG2 - F.softplus(s),
    )


def _wgan(eps: float) -> Divergence:
    return Divergence(
        "wgan",
        f0=lambda d: d - eps * d * d,
        f1=lambda d: -d,
        d_range="D = s, real",
        d_star=lambda p_d, p_g: (p_d - p_g) / (2.0 * eps * p_d),
    )


def _other() -> Divergence:
    return Divergence(
        "other",
        f0=lambda d: -0.5 * d * d + d,
        f1=lambda d: d - 2.0,
        d_range="D = s, real",
        d_star=lambda p_d, p_g: (p_d + p_g) / p_d,
    )


_ALIASES = {
    "kl": "kl",
    "kullback_leibler": "kl",
    "reverse_kl": "reverse_kl",
    "rkl": "reverse_kl",
    "pearson": "pearson",
    "pearson_chi2": "pearson",
    "chi2": "pearson",
    "hellinger": "hellinger",
    "squared_hellinger": "hellinger",
    "js": "js",
    "jensen_shannon": "js",
    "gan": "js",
    "wgan": "wgan",
    "approx_wgan": "wgan",
    "approximate_wgan": "wgan",
    "other": "other",
}

DIVERGENCE_NAMES: tuple[str, ...] = ("kl", "reverse_kl", "pearson", "hellinger", "js", "wgan", "other")
"""Canonical names of the seven Table 1 variants (aliases are also accepted)."""


def get_divergence(name: str, *, eps: float | None = None) -> Divergence:
    """Look up a Table 1 variant by name (case-insensitive; '-' and ' ' read as '_').

    Args:
        name: one of :data:`DIVERGENCE_NAMES` or an alias such as ``"jensen-shannon"``.
        eps: for ``wgan`` the strict-concavity weight of ``-eps D^2`` (default 0.1);
            for ``hellinger`` the floor of D (default 1e-3).  Ignored otherwise.

    Raises:
        GameInputError: ``name`` is not a string or not a known variant, or ``eps`` is not a
            positive finite number.
    """
    if not isinstance(name, str):
        raise GameInputError(
            f"divergence name must be a string, got {type(name).__name__}; pass one of {', '.join(DIVERGENCE_NAMES)}."
        )
    key = _ALIASES.get(name.strip().lower().replace("-", "_").replace(" ", "_"))
    if key is None:
        raise GameInputError(
            f"Unknown divergence {name!r}. Valid names: {', '.join(DIVERGENCE_NAMES)} "
            f"(aliases: {', '.join(sorted(set(_ALIASES) - set(DIVERGENCE_NAMES)))}), "
            "or pass a Divergence / (f0, f1) pair."
        )
    if eps is not None and not (math.isfinite(eps) and eps > 0):
        raise GameInputError(f"eps must be a positive finite float, got {eps!r}.")
    if key == "kl":
        div = _kl()
    elif key == "reverse_kl":
        div = _reverse_kl()
    elif key == "pearson":
        div = _pearson()
    elif key == "hellinger":
        div = _hellinger(1e-3 if eps is None else eps)
    elif key == "js":
        div = _js()
    elif key == "wgan":
        div = _wgan(0.1 if eps is None else eps)
    else:
        div = _other()
    div._builtin = (key, eps)
    return div


DivergenceLike = Union[str, Divergence, tuple]


def as_divergence(divergence: DivergenceLike) -> Divergence:
    """Accept a name, a :class:`Divergence`, or a user pair ``(f0, f1)`` / ``(f0, f1, activation)``."""
    if isinstance(divergence, Divergence):
        return divergence
    if isinstance(divergence, str):
        return get_divergence(divergence)
    if isinstance(divergence, (tuple, list)) and len(divergence) in (2, 3):
        return Divergence("custom", *divergence)
    raise GameInputError(
        "divergence must be a name (one of "
        f"{', '.join(DIVERGENCE_NAMES)}), a Divergence, or a tuple (f0, f1[, activation]); "
        f"got {divergence!r}."
    )
