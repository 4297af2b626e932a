"""Primal-dual subgradient regulariser for GAN generators (Chen, Wang & Ge, ICLR 2018).

Public names: :class:`PrimalDualRegularizer`, the Table 1 variants
(:class:`Divergence`, :func:`get_divergence`, :data:`DIVERGENCE_NAMES`), bandwidth
schedules, :func:`kernel_density` and :class:`RandomProjection`.
"""

from .bandwidth import BandwidthSchedule, ConstantBandwidth, ExponentialBandwidth, StepBandwidth
from .divergences import DIVERGENCE_NAMES, Divergence, get_divergence
from .features import RandomProjection
from .kernel import kernel_density
from .regularizer import PrimalDualRegularizer

__all__ = [
    "PrimalDualRegularizer",
    "Divergence",
    "DIVERGENCE_NAMES",
    "get_divergence",
    "BandwidthSchedule",
    "ConstantBandwidth",
    "StepBandwidth",
    "ExponentialBandwidth",
    "kernel_density",
    "RandomProjection",
]
