"""Per-coordinate step sizes ``eta`` of competitive gradient descent.

CGD uses each param group's ``lr``; ACGD (Schafer et al., "Implicit competitive
regularization in GANs", 2020, and the cgds package) divides it by an Adam-like root
mean square of f's gradient. Both give a flat vector per player; new optimiser state is returned,
not stored, so a skipped step leaves the state untouched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .nash import unflatten

__all__ = ["ConstantStepSizes", "AdaptiveStepSizes"]

#: ``(param, its param group)`` for every parameter of one player, in order.
PlayerParams = Sequence[tuple[Tensor, Mapping[str, Any]]]


def per_param_vector(values: Sequence[float], params: Sequence[Tensor], like: Tensor) -> Tensor:
    """Flat vector holding ``values[i]`` on every coordinate of ``params[i]``, with ``like``'s dtype and device.

    Filled on the device (``torch.full`` per run of equal values): no tensor is built on the
    host and copied, which would make a GPU wait (pageable host-to-device copy) every step.
    """
    runs: list[tuple[float, int]] = []
    for value, p in zip(values, params):
        if runs and runs[-1][0] == value:
            runs[-1] = (value, runs[-1][1] + p.numel())
        else:
            runs.append((value, p.numel()))
    parts = [torch.full((n,), v, dtype=like.dtype, device=like.device) for v, n in runs]
    if not parts:
        return torch.empty(0, dtype=like.dtype, device=like.device)
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class ConstantStepSizes:
    """CGD: ``eta = lr`` of the parameter's group."""

    #: per-parameter state this rule keeps.
    state_keys: tuple[str, ...] = ()

    def __call__(self, player: PlayerParams, grad: Tensor, state: Mapping[Tensor, Any]
                 ) -> tuple[Tensor, dict[Tensor, dict[str, Tensor]]]:
        """The step sizes of one player.

        Args:
            player: ``(param, its group)`` for each of the player's parameters, in order.
            grad: the player's flat gradient of f (its dtype and device are used).
            state: per-parameter optimiser state (unused).

        Returns:
            ``(eta, {})``: ``eta`` flat like ``grad``, no new state.
        """
        params = [p for p, _ in player]
        return per_param_vector([float(g["lr"]) for _, g in player], params, grad), {}


class AdaptiveStepSizes:
    """ACGD: ``eta = lr * sqrt(1 - beta^t) / (sqrt(v) + eps)``, the cgds package's form.

    ``v`` (state ``"exp_avg_sq"``, the parameter's dtype) is the exponential moving
    average, with the group's ``beta``, of the squared gradient of f; ``t`` (state
    ``"step"``) counts the steps taken. As in the cgds package the average is of the
    plain gradient, not of the competitive direction, and ``eps`` is added to the root
    of the uncorrected average. ``eta`` is not bounded by ``lr``: a coordinate whose
    gradient is near zero gets ``eta`` near ``lr / eps`` however strongly it is coupled
    to the other player, which is why ``eps`` defaults to cgds' 1e-5 and not Adam's 1e-8.
    """

    state_keys: tuple[str, ...] = ("step", "exp_avg_sq")

    def __call__(self, player: PlayerParams, grad: Tensor, state: Mapping[Tensor, Any]
                 ) -> tuple[Tensor, dict[Tensor, dict[str, Tensor]]]:
        """The step sizes of one player, and its new state (not stored: the caller keeps it if the step moves).

        Args:
            player: ``(param, its group)`` for each of the player's parameters, in order; each
                group holds ``lr``, ``beta`` and ``eps``.
            grad: the player's flat gradient of f.
            state: per-parameter state of earlier steps (``"step"``, ``"exp_avg_sq"``).

        Returns:
            ``(eta, pending)``: ``eta`` flat like ``grad``; ``pending[p]`` the updated state.
        """
        params = [p for p, _ in player]
        pending: dict[Tensor, dict[str, Tensor]] = {}
        lrs, eps = [], []
        for (p, group), g in zip(player, unflatten(grad, params)):
            st = state.get(p, {})
            step = st["step"] + 1 if "step" in st else torch.tensor(1.0)  # on the host, as Adam's
            beta = float(group["beta"])
            avg = st.get("exp_avg_sq")
            g = g.to(p.dtype)
            new_avg = g * g * (1 - beta) if avg is None else avg * beta + g * g * (1 - beta)
            pending[p] = {"step": step, "exp_avg_sq": new_avg}
            lrs.append(float(group["lr"]) * math.sqrt(1 - beta ** float(step)))
            eps.append(float(group["eps"]))
        avg = torch.cat([pending[p]["exp_avg_sq"].reshape(-1).to(grad.dtype) for p in params])
        denom = avg.sqrt_().add_(per_param_vector(eps, params, grad))
        return per_param_vector(lrs, params, grad).div_(denom), pending
