"""Deprecated alias of :mod:`gameopt.dual`, the dual discriminators' former home.

Importing it warns with :class:`DeprecationWarning`; it will be removed in a later release.
Import the same names from :mod:`gameopt.dual` (or from :mod:`gameopt`) instead.
"""

import warnings

from .dual import (  # noqa: F401
    CostLinearisedDiscriminator,
    DualSolverError,
    DualSolverWarning,
    DualStepStats,
    LinearDualDiscriminator,
    RBFFeatures,
    ScoreLinearisedDiscriminator,
    TrustRegionDualDiscriminator,
)

warnings.warn(
    "gameopt.dual_discriminator is deprecated and will be removed; import from gameopt.dual instead",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["TrustRegionDualDiscriminator", "RBFFeatures", "DualStepStats", "DualSolverWarning", "DualSolverError"]
