"""gameopt: game-aware optimisers for PyTorch.

Sign convention: every player minimises its own loss; a zero-sum game has
``disc_loss = -gen_loss``.
"""

from . import frameworks, solvers
from .alternating import AlternatingOptimizer
from .competitive import CompetitiveOptimizer, CompetitiveStats
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
from .extragradient import ExtragradientOptimizer
from .frameworks import backward
from .game_optimizer import GameOptimizer
from .lookahead import LookaheadMinmax
from .monitor import Monitor
from .optimistic import OptimisticOptimizer
from .penalties import GradientPenalty, lazy_adam_settings
from .players import DISCRIMINATOR, GENERATOR
from .primal_dual import PrimalDualRegularizer, get_divergence
from .relativistic import relativistic_losses
from .sga import SGAOptimizer, SGAStats

__version__ = "0.1.0"

__all__ = [
    "AlternatingOptimizer",
    "CompetitiveOptimizer",
    "CompetitiveStats",
    "ConsensusOptimizer",
    "ConsensusStats",
    "CostLinearisedDiscriminator",
    "DISCRIMINATOR",
    "DualSolverError",
    "DualSolverWarning",
    "ExtragradientOptimizer",
    "GENERATOR",
    "GameField",
    "GameInputError",
    "GameOptimizer",
    "GradientPenalty",
    "LinearDualDiscriminator",
    "LookaheadMinmax",
    "Monitor",
    "OptimisticOptimizer",
    "PrimalDualRegularizer",
    "RBFFeatures",
    "ScoreLinearisedDiscriminator",
    "SGAOptimizer",
    "SGAStats",
    "SimultaneousOptimizer",
    "SpectrumSummary",
    "TrustRegionDualDiscriminator",
    "backward",
    "frameworks",
    "get_divergence",
    "lazy_adam_settings",
    "max_stable_step",
    "relativistic_losses",
    "solvers",
    "summarize_spectrum",
]
