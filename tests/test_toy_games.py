"""The 8-Gaussian metrics tell a ring through the modes from a blob, and count modes as documented."""

import math

import torch

from gameopt.toy_games import mixture_metrics, ring_centers, sample_mixture

CENTERS = ring_centers(8, 1.0)
STD = 0.01


def test_samples_of_the_mixture_cover_every_mode():
    m = mixture_metrics(sample_mixture(4000, CENTERS, STD, torch.Generator().manual_seed(0)), CENTERS, STD)
    assert (m.modes_covered, m.modes_reached) == (8, 8)
    assert m.high_quality > 0.98 and m.kl < 0.01


def test_a_thick_ring_through_the_modes_is_reached_but_not_covered():
    """The consensus demo's picture after 6000 steps: mass spread round the circle, not yet sharp."""
    g = torch.Generator().manual_seed(0)
    angle = torch.rand(4000, generator=g) * 2 * math.pi
    radius = 1 + 0.05 * torch.randn(4000, generator=g)
    ring = torch.stack([radius * angle.cos(), radius * angle.sin()], 1)
    m = mixture_metrics(ring, CENTERS, STD)
    assert m.modes_reached == 8
    assert m.modes_covered == 0


def test_a_blob_reaches_at_most_the_mode_it_sits_on():
    g = torch.Generator().manual_seed(0)
    on_a_mode = CENTERS[2] + 0.05 * torch.randn(4000, 2, generator=g)
    at_the_centre = 0.05 * torch.randn(4000, 2, generator=g)
    assert mixture_metrics(on_a_mode, CENTERS, STD).modes_reached == 1
    assert mixture_metrics(at_the_centre, CENTERS, STD).modes_reached == 0
    assert mixture_metrics(at_the_centre, CENTERS, STD).kl == math.log(8)  # no high-quality sample


def test_reach_and_min_fraction_are_the_thresholds():
    one_each = CENTERS + 0.05  # one sample per mode, 0.07 from it
    assert mixture_metrics(one_each, CENTERS, STD).modes_reached == 8  # 1 sample >= 1% of 8
    assert mixture_metrics(one_each, CENTERS, STD, reach=0.05).modes_reached == 0
    assert mixture_metrics(one_each, CENTERS, STD, min_fraction=0.2).modes_reached == 0


def test_the_demo_headline_names_the_metric_that_separates_the_methods():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "eight_gaussians.py"
    spec = importlib.util.spec_from_file_location("eight_gaussians", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    ring = sample_mixture(4000, CENTERS, 0.1, torch.Generator().manual_seed(0))  # spread, not sharp
    blob = CENTERS[0] + 0.3 * torch.randn(4000, 2, generator=torch.Generator().manual_seed(1))
    results = {
        method: {"history": [mixture_metrics(s, CENTERS, STD).as_dict() | {"step": 6000}], "seconds": 1.0}
        for method, s in (("simga", blob), ("consensus", ring))
    }
    lines = demo.report(results, 6000)
    headline = next(line for line in lines if line.startswith("headline"))
    assert "SimGA 1/8, consensus 8/8" in headline
    assert any("covered" in line and "SimGA 0/8, consensus 0/8" in line for line in lines)
