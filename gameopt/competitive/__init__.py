"""Competitive gradient descent (CGD) and adaptive CGD (ACGD) for two-player zero-sum games.

Modules: ``optimizer`` (the torch optimiser), ``nash`` (the Nash step and its
conjugate-gradient solve on mixed Hessian-vector products), ``step_sizes`` (CGD's
and ACGD's per-coordinate step sizes), ``zero_sum`` (recognising ``disc_loss = -gen_loss``).
"""

from .optimizer import CompetitiveOptimizer, CompetitiveStats, NashUpdate

__all__ = ["CompetitiveOptimizer", "CompetitiveStats", "NashUpdate"]
