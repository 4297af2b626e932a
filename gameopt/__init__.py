"""gameopt: game-aware optimisers for PyTorch."""

__version__ = "0.1.0"

from .primal_dual import PrimalDualRegularizer, get_divergence  # noqa: E402
