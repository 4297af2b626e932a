"""Trust-region radius control by the acceptance ratio (Dualing GANs, appendix C)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import GameInputError

__all__ = ["RadiusControl"]


@dataclass(frozen=True)
class RadiusControl:
    """How a trust-region step is judged and how the radius Delta follows it.

    The acceptance ratio of a step s from w is

        rho = (f(w) - f(w + s)) / (m(0) - m(s)),

    the actual over the predicted decrease of the discriminator's loss f under the local
    model m. The step is kept when rho > ``accept_threshold`` (else the parameters are
    restored); the radius shrinks by ``shrink_factor`` when rho < ``shrink_below`` (or is
    not finite), grows by ``grow_factor`` when rho > ``grow_above`` and the step reached
    the boundary 1/2 ||s||^2 = Delta, and always stays in [``min_delta``, ``max_delta``].
    Defaults are the standard 0.25 / 0.75 thresholds with factors 1/4 and 2.

    Raises:
        GameInputError: unless 0 < shrink_factor < 1 <= grow_factor, shrink_below <= grow_above
            and 0 < min_delta <= max_delta.
    """

    accept_threshold: float = 0.0
    shrink_below: float = 0.25
    grow_above: float = 0.75
    shrink_factor: float = 0.25
    grow_factor: float = 2.0
    min_delta: float = 1e-12
    max_delta: float = 1e6

    def __post_init__(self) -> None:
        if not (0 < self.shrink_factor < 1) or not self.grow_factor >= 1:
            raise GameInputError(f"need 0 < shrink_factor < 1 <= grow_factor, got {self.shrink_factor} and "
                                 f"{self.grow_factor}; the defaults are 0.25 and 2")
        if not self.shrink_below <= self.grow_above:
            raise GameInputError(f"need shrink_below <= grow_above, got {self.shrink_below} and {self.grow_above}; "
                                 "the defaults are 0.25 and 0.75")
        if not 0 < self.min_delta <= self.max_delta:
            raise GameInputError(f"need 0 < min_delta <= max_delta, got {self.min_delta} and {self.max_delta}; "
                                 "pass a positive min_delta no larger than max_delta")

    def ratio(self, f0: float, f1: float, predicted_decrease: float) -> float:
        """rho for loss ``f0`` before and ``f1`` after the step, and the model's ``predicted_decrease``.

        A non-finite f1 gives -inf (reject). When the predicted decrease is negligible
        (rounding level of f0), rho is 1 if the loss did not rise beyond rounding, else -inf.
        """
        scale = 1e-15 * max(1.0, abs(f0))
        if not math.isfinite(f1):
            return -math.inf
        if predicted_decrease <= scale:
            return 1.0 if f0 - f1 >= -scale else -math.inf
        return (f0 - f1) / predicted_decrease

    def accepts(self, rho: float) -> bool:
        """Whether a step with acceptance ratio ``rho`` is kept."""
        return rho > self.accept_threshold

    def next_radius(self, delta: float, rho: float, on_boundary: bool) -> float:
        """The radius after a step of ratio ``rho`` taken with radius ``delta``.

        Shrinks below ``shrink_below`` (or for a non-finite rho); grows above ``grow_above``
        only when the step was ``on_boundary`` of the trust region; clipped to
        ``[min_delta, max_delta]``.
        """
        if not math.isfinite(rho) or rho < self.shrink_below:
            delta = delta * self.shrink_factor
        elif rho > self.grow_above and on_boundary:
            delta = delta * self.grow_factor
        return float(min(max(delta, self.min_delta), self.max_delta))

    @staticmethod
    def on_boundary(step_sq_norm: float, delta: float) -> bool:
        """Whether a step with ||s||^2 = ``step_sq_norm`` lies on the boundary 1/2 ||s||^2 = delta."""
        return 0.5 * step_sq_norm >= (1 - 1e-6) * delta
