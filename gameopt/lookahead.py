"""Lookahead-minmax (Chavdarova, Pagliardini, Stich, Fleuret & Jaggi, "Taming GANs with
Lookahead-Minmax", ICLR 2021): every k steps of any game optimiser, all players' weights jump
back towards where they were k steps ago.

Slow weights phi (one copy of every player's parameters) and the inner optimiser's fast
weights theta: after every k-th inner step, ``phi <- phi + alpha (theta - phi)`` and
``theta <- phi``, for all players at once (joint lookahead, the paper's Algorithm 1, not a
lookahead per player).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.optim import Optimizer

from .errors import GameInputError
from .game_optimizer import GameOptimizer, SharedState
from .step_hooks import hooked_step
from .frameworks import through_wrappers

__all__ = ["LookaheadMinmax"]


@dataclasses.dataclass
class LookaheadState:
    """Lookahead's mutable state in one object (mutated, never rebound; see ``SharedState``)."""

    k: int = 5
    alpha: float = 0.5
    fast_steps: int = 0
    slow: dict = dataclasses.field(default_factory=dict)


class LookaheadMinmax(Optimizer):
    """Lookahead over any gameopt optimiser; itself a ``torch.optim.Optimizer``.

    Usage::

        inner = gameopt.ExtragradientOptimizer(torch.optim.Adam, G.parameters(), D.parameters(), lr=2e-4)
        opt = gameopt.LookaheadMinmax(inner, k=5, alpha=0.5)
        opt.step(closure)                  # or opt.zero_grad(); opt.backward(...); opt.step()

    ``param_groups``, ``state`` (the base optimiser's per-parameter state) and ``defaults`` are
    the inner optimiser's, so LR schedulers built on the wrapper drive the inner optimiser.
    The slow weights are created from the parameters at the first step; the inner
    optimiser's own state (Adam's moments) is kept across a synchronisation, as in the
    authors' code. Steps that the inner optimiser skipped (non-finite gradients) do not count
    towards k. Step hooks follow gameopt's rule: the wrapper's pre-hooks (and the global ones)
    run once per step, post-hooks only when the parameters moved; the inner optimiser's own
    instance hooks do not run (register hooks on the wrapper). ``state_dict()`` holds the inner optimiser's checkpoint plus ``"lookahead"``:
    k, alpha, the steps since the last synchronisation and the slow weights, so a resumed run
    is bit-identical.

    Bilinear game, inner SimGA with SGD (step eta, singular value sigma, c = eta sigma): in
    singular coordinates k inner steps multiply w by ``(1 + ic)^k``, so one lookahead cycle
    multiplies it by ``1 - alpha + alpha (1 + ic)^k``; for a small c that is about
    ``1 - alpha + alpha e^{ikc}``, of modulus below 1 whenever ``kc`` is not a multiple of
    2 pi: lookahead turns SimGA's outward spiral into a contraction for suitable k and alpha.
    With an inner extragradient the factor is ``1 - alpha + alpha (1 - c^2 + ic)^k``.

    Args:
        inner: a gameopt optimiser instance (``GameOptimizer`` subclass).
        k: inner steps per synchronisation (integer >= 1).
        alpha: slow-weight step in (0, 1]; 1 gives the inner optimiser unchanged.

    Raises:
        GameInputError: ``inner`` is not a gameopt optimiser instance, k or alpha out of range.
    """

    def __init__(self, inner: GameOptimizer, k: int = 5, alpha: float = 0.5) -> None:
        if isinstance(inner, type) or not isinstance(inner, GameOptimizer):
            raise GameInputError(
                "LookaheadMinmax wraps a gameopt optimiser instance, e.g. "
                "LookaheadMinmax(gameopt.ExtragradientOptimizer(torch.optim.Adam, G.parameters(), "
                f"D.parameters(), lr=2e-4), k=5, alpha=0.5); got {inner!r}"
            )
        _check_k_alpha(k, alpha)
        self.inner = inner
        self._la = LookaheadState(k=int(k), alpha=float(alpha))
        self._initialising = True
        super().__init__(list(inner.param_groups), inner.defaults)
        self._initialising = False

    #: gameopt's hook semantics (see :mod:`gameopt.step_hooks`), on the inner optimiser's shared state.
    profile_hook_step = staticmethod(hooked_step)

    @property
    def _shared(self) -> SharedState:
        return self.inner._shared

    @property
    def k(self) -> int:
        """Inner steps per synchronisation."""
        return self._la.k

    @property
    def alpha(self) -> float:
        """The slow weights' step towards the fast ones."""
        return self._la.alpha

    @property
    def slow(self) -> dict[torch.Tensor, torch.Tensor]:
        """Slow weights, one per parameter, created at the first step."""
        return self._la.slow

    @property
    def fast_steps(self) -> int:
        """Inner steps taken since the last synchronisation."""
        return self._la.fast_steps

    # --- sharing with the inner optimiser ------------------------------------------------
    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        """The inner optimiser's param groups (the same list)."""
        return self.inner.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        if not self.__dict__.get("_initialising", False):
            self.inner.param_groups = value

    @property  # type: ignore[override]
    def state(self) -> Any:
        """The inner (base) optimiser's per-parameter state (the same dict)."""
        return self.inner.state

    @state.setter
    def state(self, value: Any) -> None:
        if not self.__dict__.get("_initialising", False):
            self.inner.state = value

    @property  # type: ignore[override]
    def defaults(self) -> dict[str, Any]:
        """The inner optimiser's defaults."""
        return self.inner.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        if not self.__dict__.get("_initialising", False):
            self.inner.defaults = value

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group to the inner optimiser.

        Args:
            param_group: ``{"params": ..., "player": name, **options}`` (see
                :meth:`GameOptimizer.add_param_group`); its parameters get slow weights at
                the next step.
        """
        if self.__dict__.get("_initialising", False):
            return
        self.inner.add_param_group(param_group)

    @property
    def players(self) -> tuple[str, ...]:
        """The inner optimiser's players, in order."""
        return self.inner.players

    @property
    def skipped_steps(self) -> int:
        """Steps the inner optimiser skipped for NaN/Inf (they do not count towards k)."""
        return self.inner.skipped_steps

    @property
    def last_step_skipped(self) -> bool:
        """Whether the inner optimiser's latest step left a player unmoved for NaN/Inf."""
        return self.inner.last_step_skipped

    @through_wrappers
    def backward(self, *losses: torch.Tensor, **kwargs: Any) -> Any:
        """The inner optimiser's ``backward`` (for optimisers that have one)."""
        return self.inner.backward(*losses, **kwargs)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The inner optimiser's ``zero_grad(set_to_none)`` (default True, as torch's)."""
        self.inner.zero_grad(set_to_none=set_to_none)

    # --- the step --------------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        """One inner step; every k-th counted step, pull all players towards the slow weights.

        Args:
            closure: passed to the inner optimiser's ``step`` (required for the ones that
                evaluate the losses themselves, such as extragradient).
            **kwargs: passed to the inner ``step`` (``scaler=`` for extragradient).

        Returns:
            What the inner ``step`` returns.
        """
        params = [p for g in self.param_groups for p in g["params"]]
        new = [p for p in params if p not in self.slow]
        if new:
            with torch.no_grad():
                for p in new:
                    self.slow[p] = p.detach().clone()
        moved_before = self._shared.moved
        self._shared.moved = False
        out = self.inner.step(closure, **kwargs) if closure is not None else self.inner.step(**kwargs)
        if self._shared.moved:
            self._la.fast_steps += 1
            if self._la.fast_steps >= self._la.k:
                self._synchronise(params)
                self._la.fast_steps = 0
        self._shared.moved = self._shared.moved or moved_before
        return out

    @torch.no_grad()
    def _synchronise(self, params: list[torch.Tensor]) -> None:
        slow = [self.slow[p] for p in params]
        torch._foreach_lerp_(slow, [p.detach() for p in params], self.alpha)
        torch._foreach_copy_(params, slow)

    # --- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The inner optimiser's state dict plus ``"lookahead"`` (k, alpha, fast_steps, slow weights)."""
        sd = self.inner.state_dict()
        index = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        sd["lookahead"] = {
            "k": self.k,
            "alpha": self.alpha,
            "fast_steps": self.fast_steps,
            "slow": {index[id(p)]: t.clone() for p, t in self.slow.items() if id(p) in index},
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint of :meth:`state_dict`; everything is validated before anything changes.

        Args:
            state_dict: a dict from :meth:`state_dict` of a LookaheadMinmax over the same
                inner optimiser kind and parameters.

        Raises:
            GameInputError: no ``"lookahead"`` entry (an inner optimiser's checkpoint), k, alpha
                or fast_steps out of range, slow weights naming unknown parameters or of the
                wrong shape or non-finite; or what the inner ``load_state_dict`` raises.
        """
        if not isinstance(state_dict, Mapping) or "lookahead" not in state_dict:
            raise GameInputError(
                "this state dict has no 'lookahead' entry: it was not written by LookaheadMinmax. "
                "To load the inner optimiser's checkpoint use opt.inner.load_state_dict(...)"
            )
        sd = dict(state_dict)
        la = sd.pop("lookahead")
        if not isinstance(la, Mapping) or not {"k", "alpha", "fast_steps", "slow"} <= set(la):
            raise GameInputError("checkpoint 'lookahead' must hold k, alpha, fast_steps and slow")
        _check_k_alpha(la["k"], la["alpha"])
        fast_steps = la["fast_steps"]
        if isinstance(fast_steps, bool) or not isinstance(fast_steps, int) or not 0 <= fast_steps < la["k"]:
            raise GameInputError(f"checkpoint 'lookahead' fast_steps must be an integer in [0, k), got {fast_steps!r}")
        params = [p for g in self.param_groups for p in g["params"]]
        slow: dict[torch.Tensor, torch.Tensor] = {}
        for i, t in la["slow"].items():
            if not isinstance(i, int) or not 0 <= i < len(params):
                raise GameInputError(f"checkpoint slow weights name parameter {i!r}; this optimiser has {len(params)}")
            p = params[i]
            if not isinstance(t, torch.Tensor) or t.shape != p.shape:
                raise GameInputError(
                    f"checkpoint slow weight {i} must be a tensor of shape {tuple(p.shape)}, "
                    f"got {tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}"
                )
            if not torch.isfinite(t).all():
                raise GameInputError(f"checkpoint slow weight {i} holds NaN or Inf")
            slow[p] = t.detach().to(device=p.device, dtype=p.dtype, copy=True)
        self.inner.load_state_dict(sd)
        self._la.k, self._la.alpha, self._la.fast_steps = int(la["k"]), float(la["alpha"]), fast_steps
        self._la.slow.clear()
        self._la.slow.update(slow)

    def __getstate__(self) -> dict[str, Any]:
        # like GameOptimizer: no hooks, no methods patched onto the instance (an LR scheduler's
        # step wrapper refers to the original); the copy rebuilds them
        return {k: v for k, v in self.__dict__.items()
                if not (k in ("step", "_opt_called", "_zero_grad_profile_name") or k.endswith("_hooks"))}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._initialising = True
        super().__setstate__(state)
        self._initialising = False

    def __repr__(self) -> str:
        inner = repr(self.inner).replace("\n", "\n    ")
        return f"LookaheadMinmax(k={self.k}, alpha={self.alpha}, inner={inner})"


def _check_k_alpha(k: Any, alpha: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise GameInputError(f"k must be an integer >= 1 (inner steps per synchronisation), got {k!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
        raise GameInputError(f"alpha must be a number in (0, 1] (the slow weights' step), got {alpha!r}")
