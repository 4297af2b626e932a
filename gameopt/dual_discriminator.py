"""Former home of the dual discriminator; everything now lives in :mod:`gameopt.dual`."""

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

__all__ = ["TrustRegionDualDiscriminator", "RBFFeatures", "DualStepStats", "DualSolverWarning", "DualSolverError"]
