"""gameopt: game-aware optimisers for PyTorch."""

__version__ = "0.1.0"

from . import solvers
from .dual_discriminator import RBFFeatures, TrustRegionDualDiscriminator
