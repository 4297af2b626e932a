"""Dualing-GAN discriminator steps (Li et al. 2017; methods.md section 3).

One class per model of the discriminator's sub-problem, behind one interface
(:class:`TrustRegionDualDiscriminator`: ``step``, ``generator_loss``, ``loss``, ``score``,
``parameters``, ``monitor_stats``, ``state_dict``):

* :class:`LinearDualDiscriminator` (``model="linear"``): F = w^T phi(x), the dual solved
  exactly per minibatch (Claim 1).
* :class:`CostLinearisedDiscriminator` (``model="cost"``): linearised loss, a normalised
  gradient step.
* :class:`ScoreLinearisedDiscriminator` (``model="score"``): linearised scores, the
  trust-region dual on the kernel of per-sample score gradients
  (:class:`PerSampleKernel`).

The two trust-region models share the acceptance-ratio radius rule (:class:`RadiusControl`,
appendix C). ``TrustRegionDualDiscriminator(module, model=...)`` builds the class a name
picks. :class:`RBFFeatures` is the feature map of the paper's toy.
"""

from .base import DualSolverError, DualSolverWarning, DualStepStats, TrustRegionDualDiscriminator
from .cost import CostLinearisedDiscriminator
from .features import RBFFeatures
from .linear import LinearDualDiscriminator
from .per_sample import PerSampleKernel, ScoreKernel
from .radius import RadiusControl
from .score import ScoreLinearisedDiscriminator
from .trust_region import LinearisedTrustRegion

__all__ = [
    "CostLinearisedDiscriminator",
    "DualSolverError",
    "DualSolverWarning",
    "DualStepStats",
    "LinearDualDiscriminator",
    "LinearisedTrustRegion",
    "PerSampleKernel",
    "RBFFeatures",
    "RadiusControl",
    "ScoreKernel",
    "ScoreLinearisedDiscriminator",
    "TrustRegionDualDiscriminator",
]
