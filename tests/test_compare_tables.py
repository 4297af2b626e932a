"""benchmarks/rescore_samples/compare_tables.py: the same files scored by two classifier pairs."""

import pytest

from benchmarks.rescore_samples.compare_tables import compare


def _row(file, agreed, strict=100, fd=50.0):
    return {"file": file, "data": "stacked_mnist", "method": file or "REAL", "agreed_strict_modes": agreed,
            "strict_modes": strict, "second_strict_modes": strict, "strict_fraction": strict / 2000,
            "frechet_distance": fd}


def test_spread_over_learned_rows_only_and_appended_rows_ignored():
    before = [_row(None, 832), _row("a", 90, 280, 80.0), _row("b", 70, 240), _row("noise", 1)]
    after = [_row(None, 823), _row("a", 95, 295, 79.0), _row("b", 66, 241), _row("noise", 9), _row("new", 5)]
    out = compare(before, after, min_modes=20)
    assert out["n_learned"] == 2                                   # the noise run and the real row are left out
    assert out["spread"]["agreed_strict_modes"] == {"max_abs_change": 5, "mean_abs_change": 4.5}
    assert out["spread"]["strict_modes"]["max_abs_change"] == 15
    assert out["real"][0]["agreed_strict_modes"] == {"before": 832, "after": 823, "change": -9}


def test_tables_of_other_files_are_refused():
    with pytest.raises(ValueError, match="same files in the same order"):
        compare([_row(None, 1), _row("a", 50)], [_row(None, 1), _row("b", 50)])
