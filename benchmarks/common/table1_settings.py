"""Random hyper-parameter settings of the Dualing-GAN robustness studies (Li et al. 2017, Table 1).

Table 1 as the extracted text keeps it (columns in order; one header was lost, see below):

    dataset      batch            g_lr         g_mom        d_lr*       (lost)       arch          iterations
    5-Gaussians  randint[20,200]  enr([0,10])  rand[.1,.9]  enr([0,6])  enr([0,10])  fc-small/large randint[400,2000]
    MNIST        randint[20,200]  enr([0,10])  rand[.1,.9]  enr([0,6])  enr([0,10])  fc-small/large, 20000
                                                                                     dcgan, dcgan-no-bn

Readings (each one a choice the text does not settle; the draws record which was used):
  * ``enr([0, a])`` is read as exp(-U(0, a)) (``lr_reading="uniform"``, the default); the
    alternative exp(-randint[0, a]) is ``lr_reading="randint"``. No code of the authors was
    found (searched public code for the paper, its authors and the table's notation).
  * ``g_mom`` is the generator's Adam beta1 ("Adam with fixed learning rate and momentum").
  * ``d_lr*`` is the standard GAN's discriminator learning rate (the dual has none).
  * The sixth column's header was lost in extraction (the header row holds one word fewer than
    the value row; the text drops every mathematical symbol, so it was most likely a symbol).
    It is drawn and kept as ``col6`` so that the draws do not depend on how it is read; the
    benchmarks can use it as C (``--C table``), the only symbol-named hyper-parameter the
    paper mentions, although the text says C = 1e-4 "in all experiments".

Every column is drawn for every setting, in a fixed order, from one numpy generator, so a
setting's values depend only on (seed, index, lr_reading), never on which options a run uses:
both methods and every variant of a study see the same draws.
"""

from __future__ import annotations

import math

import numpy as np

ARCHS = {
    "five_gaussians": ("fc-small", "fc-large"),
    "mnist": ("fc-small", "fc-large", "dcgan", "dcgan-no-bn"),
}
LR_READINGS = ("uniform", "randint")


def enr(rng: np.random.Generator, a: float, reading: str = "uniform") -> float:
    """Table 1's ``enr([0, a])``: exp(-U(0, a)) or, with ``reading="randint"``, exp(-randint[0, a])."""
    if reading == "uniform":
        return float(math.exp(-rng.uniform(0.0, a)))
    if reading == "randint":
        return float(math.exp(-int(rng.integers(0, int(a) + 1))))
    raise ValueError(f"unknown lr_reading {reading!r}; use one of {LR_READINGS}")


def draw_settings(n: int, seed: int = 0, dataset: str = "five_gaussians", lr_reading: str = "uniform") -> list[dict]:
    """``n`` settings drawn from Table 1's ranges for ``dataset`` ("five_gaussians" | "mnist").

    Returns dicts with ``index``, ``seed`` (for the run's own random streams), ``batch``,
    ``g_lr``, ``g_mom``, ``d_lr``, ``col6``, ``arch`` and ``iters`` (the paper's count; scripts
    may scale it and record that they did).
    """
    if dataset not in ARCHS:
        raise ValueError(f"unknown dataset {dataset!r}; use one of {tuple(ARCHS)}")
    if lr_reading not in LR_READINGS:
        raise ValueError(f"unknown lr_reading {lr_reading!r}; use one of {LR_READINGS}")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = {
            "index": i,
            "seed": 1000 * (seed + 1) + i,
            "batch": int(rng.integers(20, 201)),
            "g_lr": enr(rng, 10, lr_reading),
            "g_mom": float(rng.uniform(0.1, 0.9)),
            "d_lr": enr(rng, 6, lr_reading),
            "col6": enr(rng, 10, lr_reading),
            "arch": str(rng.choice(ARCHS[dataset])),
        }
        iters = int(rng.integers(400, 2001))  # drawn for both datasets so the streams stay aligned
        s["iters"] = iters if dataset == "five_gaussians" else 20000
        out.append(s)
    return out
