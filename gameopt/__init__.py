"""gameopt: game-aware optimisers for PyTorch.

Sign convention: every player minimises its own loss; a zero-sum game has
``disc_loss = -gen_loss``.
"""

from . import solvers
from .alternating import AlternatingOptimizer
from .consensus import ConsensusOptimizer, ConsensusStats, SimultaneousOptimizer
from .diagnostics import GameField, SpectrumSummary, max_stable_step, summarize_spectrum
from .dual import (
    CostLinearisedDiscriminator,
    DualSolverError,
    DualSolverWarning,
    LinearDualDiscriminator,
    RBFFeatures,
    ScoreLinearisedDiscriminator,
    TrustRegionDualDiscriminator,
)
from .errors import GameInputError
from .game_optimizer import GameOptimizer
from .monitor import Monitor
from .players import DISCRIMINATOR, GENERATOR
from .primal_dual import PrimalDualRegularizer, get_divergence

__version__ = "0.1.0"

__all__ = [
    "AlternatingOptimizer",
    "ConsensusOptimizer",
    "ConsensusStats",
    "CostLinearisedDiscriminator",
    "DISCRIMINATOR",
    "DualSolverError",
    "DualSolverWarning",
    "GENERATOR",
    "GameField",
    "GameInputError",
    "GameOptimizer",
    "LinearDualDiscriminator",
    "Monitor",
    "PrimalDualRegularizer",
    "RBFFeatures",
    "ScoreLinearisedDiscriminator",
    "SimultaneousOptimizer",
    "SpectrumSummary",
    "TrustRegionDualDiscriminator",
    "get_divergence",
    "max_stable_step",
    "solvers",
    "summarize_spectrum",
]
