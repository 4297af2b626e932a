"""Kernel bandwidth schedules sigma(t) for :class:`~gameopt.PrimalDualRegularizer`.

A schedule is a pure function of the generator iteration count t (0, 1, 2, ...),
which the regulariser keeps in a buffer and advances with ``reg.step()``.  Because
sigma depends only on (t, the schedule's parameters), saving both in a state dict
restores the bandwidth exactly.  ``bandwidth`` is sigma in
k_sigma(u) = exp(-||u||^2 / sigma^2), in the units of the (feature-mapped) samples.

Any callable ``t -> float`` works as a schedule too; subclasses of
:class:`BandwidthSchedule` additionally save their parameters in the state dict.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = [
    "BandwidthSchedule",
    "ConstantBandwidth",
    "StepBandwidth",
    "ExponentialBandwidth",
    "check_bandwidth",
]


def check_bandwidth(sigma: Any, where: str = "bandwidth") -> float:
    """Return sigma as a float, or raise ValueError if it is not a positive finite number."""
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a positive float (sigma of the kernel), got {sigma!r}.") from None
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(
            f"{where} must be a positive finite float (sigma in exp(-||u||^2 / sigma^2)), got {value!r}. "
            "Use a positive value, or give the schedule a positive `minimum`."
        )
    return value


class BandwidthSchedule:
    """Base class: ``schedule(t)`` returns sigma at generator iteration t."""

    def __call__(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Parameters of the schedule (plain Python values)."""
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore parameters saved by :meth:`state_dict`."""
        unknown = set(state) - set(vars(self))
        if unknown:
            raise ValueError(f"{type(self).__name__}.load_state_dict: unexpected keys {sorted(unknown)}.")
        for key, value in state.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class ConstantBandwidth(BandwidthSchedule):
    """sigma(t) = sigma."""

    def __init__(self, sigma: float) -> None:
        self.sigma = check_bandwidth(sigma)

    def __call__(self, step: int) -> float:
        return self.sigma


class StepBandwidth(BandwidthSchedule):
    """Piecewise-constant sigma: ``sigmas[k]`` once ``t >= milestones[k-1]``.

    The paper's 1-D toy (appendix 7.3): ``StepBandwidth([0.5, 0.1], [2000])``.
    """

    def __init__(self, sigmas: Sequence[float], milestones: Sequence[int]) -> None:
        sigmas = [check_bandwidth(s, "StepBandwidth sigmas") for s in sigmas]
        milestones = [int(m) for m in milestones]
        if len(sigmas) != len(milestones) + 1:
            raise ValueError(
                f"StepBandwidth needs len(sigmas) == len(milestones) + 1, got {len(sigmas)} sigmas "
                f"and {len(milestones)} milestones."
            )
        if any(b <= a for a, b in zip(milestones, milestones[1:])) or any(m < 0 for m in milestones):
            raise ValueError(f"StepBandwidth milestones must be non-negative and increasing, got {milestones}.")
        self.sigmas = sigmas
        self.milestones = milestones

    def __call__(self, step: int) -> float:
        k = sum(1 for m in self.milestones if step >= m)
        return self.sigmas[k]


class ExponentialBandwidth(BandwidthSchedule):
    """sigma(t) = max(minimum, initial * decay ** (t / every)).

    The paper's 8-Gaussian run starts at sigma^2 = 0.1 and decays sigma^2
    geometrically (the exact rate is illegible in the paper).  A decay of sigma^2 by
    a factor r every T iterations is ``ExponentialBandwidth(0.1 ** 0.5, r ** 0.5, T)``.
    """

    def __init__(self, initial: float, decay: float, every: int = 1, minimum: float = 0.0) -> None:
        self.initial = check_bandwidth(initial, "ExponentialBandwidth initial")
        decay = float(decay)
        if not (0.0 < decay <= 1.0):
            raise ValueError(f"ExponentialBandwidth decay must be in (0, 1], got {decay!r}.")
        every = int(every)
        if every < 1:
            raise ValueError(f"ExponentialBandwidth every must be a positive int, got {every!r}.")
        minimum = float(minimum)
        if not (math.isfinite(minimum) and minimum >= 0.0):
            raise ValueError(f"ExponentialBandwidth minimum must be >= 0, got {minimum!r}.")
        self.decay = decay
        self.every = every
        self.minimum = minimum

    def __call__(self, step: int) -> float:
        return max(self.minimum, self.initial * self.decay ** (step / self.every))
