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

import copy
import math
from typing import Any, Sequence

import torch

from ..errors import GameInputError

__all__ = [
    "BandwidthSchedule",
    "ConstantBandwidth",
    "StepBandwidth",
    "ExponentialBandwidth",
    "check_bandwidth",
    "check_bandwidth_for_dtype",
    "min_bandwidth",
]


def check_bandwidth(sigma: Any, where: str = "bandwidth") -> float:
    """``sigma`` as a float.

    Args:
        sigma: the bandwidth given.
        where: its name in the error message.

    Raises:
        GameInputError: ``sigma`` is not a positive finite number.
    """
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise GameInputError(f"{where} must be a positive float (sigma of the kernel), got {sigma!r}.") from None
    if not (math.isfinite(value) and value > 0.0):
        raise GameInputError(
            f"{where} must be a positive finite float (sigma in exp(-||u||^2 / sigma^2)), got {value!r}. "
            "Use a positive value, or give the schedule a positive `minimum`."
        )
    return value


def _as_int(value: Any, where: str) -> int:
    """An integral number as int (2000 or 2000.0), else GameInputError."""
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise GameInputError(f"{where} must be integers (step counts), got {value!r}.") from None
    if isinstance(value, bool) or not as_float.is_integer():
        raise GameInputError(f"{where} must be integers (step counts), got {value!r}.")
    return int(as_float)


def _as_float(value: Any, where: str) -> float:
    """``value`` as a float, else GameInputError naming ``where``."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise GameInputError(f"{where} must be a number, got {value!r}.") from None


def min_bandwidth(dtype: torch.dtype) -> float:
    """Smallest sigma the kernel supports in ``dtype``: 2 / sigma^2 must stay finite.

    float32: 1.1e-19, float64: 1.5e-154 (half precision is computed in float32). Below it
    the kernel's gradient factor -2 / sigma^2 overflows and 0 * inf makes NaN gradients.
    """
    return 2.0 / math.sqrt(torch.finfo(dtype).max)


def check_bandwidth_for_dtype(sigma: float, dtype: torch.dtype, where: str = "bandwidth") -> None:
    """Refuse a bandwidth too small for the samples' dtype.

    Args:
        sigma: the bandwidth.
        dtype: the samples' dtype.
        where: its name in the error message.

    Raises:
        GameInputError: ``sigma`` is below :func:`min_bandwidth` of ``dtype``.
    """
    low = min_bandwidth(dtype)
    if sigma < low:
        raise GameInputError(
            f"{where} {sigma:.3g} is below the smallest bandwidth {dtype} samples support ({low:.2g}: "
            "1/sigma^2 must stay finite). At such a bandwidth the kernel of any two distinct samples is 0 "
            "and the term has no gradient; use a larger bandwidth (a schedule's `minimum`), or float64 "
            f"samples (down to {min_bandwidth(torch.float64):.2g})."
        )


class BandwidthSchedule:
    """Base class: ``schedule(t)`` returns sigma at generator iteration t."""

    def __call__(self, step: int) -> float:  # pragma: no cover - abstract
        """sigma at generator iteration ``step`` (0, 1, 2, ...); subclasses implement it.

        Raises:
            NotImplementedError: on the base class.
        """
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Parameters of the schedule (plain Python values)."""
        return dict(vars(self))

    def validated_copy(self, state: Any) -> "BandwidthSchedule":
        """A copy of this schedule with ``state`` loaded, after checking it; self is untouched.

        Raises:
            GameInputError: ``state`` is not a dict with exactly this schedule's keys, or its
                values are invalid (built-in schedules re-run their constructor's checks).
        """
        if not isinstance(state, dict):
            raise GameInputError(f"{type(self).__name__} state must be a dict, got {type(state).__name__}.")
        if set(state) != set(vars(self)):
            raise GameInputError(
                f"{type(self).__name__} state must have the keys {sorted(vars(self))}, got {sorted(state)}: "
                "the checkpoint was saved with a different bandwidth schedule."
            )
        new = copy.copy(self)
        vars(new).update(state)
        return new

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore parameters saved by :meth:`state_dict`; on any error nothing changes.

        Args:
            state: a dict from :meth:`state_dict` of the same schedule class.

        Raises:
            GameInputError: see :meth:`validated_copy`.
        """
        vars(self).update(vars(self.validated_copy(state)))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class _CheckedSchedule(BandwidthSchedule):
    """Built-in schedules: their state is exactly their constructor's arguments."""

    def validated_copy(self, state: Any) -> BandwidthSchedule:
        super().validated_copy(state)  # dict with the right keys
        try:
            return type(self)(**state)
        except (TypeError, ValueError) as e:
            raise GameInputError(f"invalid {type(self).__name__} state {state!r}: {e}") from None


class ConstantBandwidth(_CheckedSchedule):
    """sigma(t) = sigma.

    Args:
        sigma: the bandwidth (> 0, finite).

    Raises:
        GameInputError: ``sigma`` is not a positive finite number.
    """

    def __init__(self, sigma: float) -> None:
        self.sigma = check_bandwidth(sigma)

    def __call__(self, step: int) -> float:
        """sigma at generator iteration ``step`` (0, 1, 2, ...)."""
        return self.sigma


class StepBandwidth(_CheckedSchedule):
    """Piecewise-constant sigma: ``sigmas[k]`` once ``t >= milestones[k-1]``.

    The paper's 1-D toy (appendix 7.3): ``StepBandwidth([0.5, 0.1], [2000])``.

    Args:
        sigmas: the bandwidths (each > 0), one more than ``milestones``.
        milestones: the iterations (integers >= 0, increasing) where the next sigma starts.

    Raises:
        GameInputError: a bad sigma, non-integer or non-increasing milestones, or mismatched lengths.
    """

    def __init__(self, sigmas: Sequence[float], milestones: Sequence[int]) -> None:
        sigmas = [check_bandwidth(s, "StepBandwidth sigmas") for s in sigmas]
        milestones = [_as_int(m, "StepBandwidth milestones") for m in milestones]
        if len(sigmas) != len(milestones) + 1:
            raise GameInputError(
                f"StepBandwidth needs len(sigmas) == len(milestones) + 1, got {len(sigmas)} sigmas "
                f"and {len(milestones)} milestones; give one sigma before the first milestone and one after each."
            )
        if any(b <= a for a, b in zip(milestones, milestones[1:])) or any(m < 0 for m in milestones):
            raise GameInputError(
                f"StepBandwidth milestones must be non-negative and increasing, got {milestones}; "
                "sort them and drop duplicates."
            )
        self.sigmas = sigmas
        self.milestones = milestones

    def __call__(self, step: int) -> float:
        """sigma at generator iteration ``step``."""
        k = sum(1 for m in self.milestones if step >= m)
        return self.sigmas[k]


class ExponentialBandwidth(_CheckedSchedule):
    """sigma(t) = max(minimum, initial * decay ** (t / every)).

    The paper's 8-Gaussian run starts at sigma^2 = 0.1 and decays sigma^2
    geometrically (the exact rate is illegible in the paper).  A decay of sigma^2 by
    a factor r every T iterations is ``ExponentialBandwidth(0.1 ** 0.5, r ** 0.5, T)``.

    Args:
        initial: sigma at t = 0 (> 0).
        decay: factor per ``every`` iterations, in (0, 1].
        every: iterations per factor ``decay`` (integer >= 1; default 1); t / every is not rounded.
        minimum: lower bound of sigma (>= 0; default 0).

    Raises:
        GameInputError: any argument out of its range or not a number.
    """

    def __init__(self, initial: float, decay: float, every: int = 1, minimum: float = 0.0) -> None:
        self.initial = check_bandwidth(initial, "ExponentialBandwidth initial")
        decay = _as_float(decay, "ExponentialBandwidth decay")
        if not (0.0 < decay <= 1.0):
            raise GameInputError(
                f"ExponentialBandwidth decay must be in (0, 1], got {decay!r}; sigma is multiplied by it "
                "every `every` steps (1 keeps it fixed)."
            )
        every = _as_int(every, "ExponentialBandwidth every")
        if every < 1:
            raise GameInputError(f"ExponentialBandwidth every must be a positive int, got {every!r}.")
        minimum = _as_float(minimum, "ExponentialBandwidth minimum")
        if not (math.isfinite(minimum) and minimum >= 0.0):
            raise GameInputError(f"ExponentialBandwidth minimum must be >= 0, got {minimum!r}.")
        self.decay = decay
        self.every = every
        self.minimum = minimum

    def __call__(self, step: int) -> float:
        """sigma at generator iteration ``step``."""
        return max(self.minimum, self.initial * self.decay ** (step / self.every))
