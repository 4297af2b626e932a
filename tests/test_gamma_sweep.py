"""The consensus gamma sweep on 8 Gaussians (benchmarks/gamma_sweep/gamma_sweep_gaussians.py): runs, resumes, tabulates."""

import json

import pytest

from benchmarks.gamma_sweep import gamma_sweep_gaussians as sweep


def test_sweep_runs_skips_finished_runs_and_tabulates(tmp_path, monkeypatch):
    argv = ["--steps", "8", "--seeds", "0", "--gammas", "0,1", "--optims", "adam,rmsprop", "--out", str(tmp_path)]
    md = sweep.main(argv)
    rows = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert sorted((r["optim"], r["gamma"]) for r in rows) == [("adam", 0.0), ("adam", 1.0), ("rmsprop", 0.0), ("rmsprop", 1.0)]
    assert all(r["final"]["step"] == 8 and 0 <= r["final"]["kl"] <= 2.08 for r in rows)
    assert "| adam | 0 (SimGA) | 1 |" in md and "| rmsprop | 1 | 1 |" in md
    calls = []
    monkeypatch.setattr(sweep, "train", lambda *a, **k: calls.append(a))
    assert sweep.main(argv) == md and calls == []   # finished runs are not trained again


def _stat(values):
    import statistics
    return {"values": values, "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else None, "min": min(values), "max": max(values)}


def test_mnist_gamma_table_places_each_group_and_the_alias_and_refuses_a_cell_filled_twice(tmp_path):
    from benchmarks.gamma_sweep import gamma_table_mnist as gt
    groups = [{"data": "mnist", "method": "samples/consensus-rmsprop-g0.3", "seeds": [0, 1, 2],
               "agreed_strict_fraction": _stat([0.5, 0.6, 0.7]),
               "strict_fraction": _stat([0.6, 0.7, 0.8]), "second_strict_fraction": _stat([0.5, 0.6, 0.7])},
              {"data": "mnist", "method": "samples/consensus", "seeds": [0, 1],
               "strict_fraction": _stat([0.73, 0.75]), "second_strict_fraction": _stat([0.66, 0.68])},
              {"data": "mnist", "method": "samples/altga", "seeds": [0],
               "strict_fraction": _stat([0.61]), "second_strict_fraction": _stat([0.55])}]
    seeds = tmp_path / "seeds.json"
    seeds.write_text(json.dumps({"groups": groups}))
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"groups": groups[2:]}))
    md = gt.main([str(seeds), "--baseline", f"{base}:altga", "--out", str(tmp_path / "out")])
    lines = md.splitlines()
    assert lines[2].startswith("| adam | 1 | 0,1 |  | 0.740 +- 0.014 | 0.670 +- 0.014 |")   # the alias: consensus is Adam at gamma 1
    assert lines[3].startswith("| rmsprop | 0.3 | 0,1,2 | 0.600 +- 0.100 | 0.700 +- 0.100 | 0.600 +- 0.100 |")
    assert lines[3].endswith("| 0.500, 0.600, 0.700 |")   # the agreed fraction per seed
    assert lines[4].startswith("| altga | - | 0 |  | 0.610 | 0.550 |")   # one seed: no sd
    record = json.loads((tmp_path / "out" / "gamma.json").read_text())
    assert [(c["optim"], c["gamma"]) for c in record["cells"]] == [("adam", 1.0), ("rmsprop", 0.3)]
    assert "provenance" in record and (tmp_path / "out" / "gamma.png").stat().st_size > 0
    with pytest.raises(ValueError, match="rmsprop gamma 0.3 appears twice"):
        gt.cells(groups, {"consensus": "consensus-rmsprop-g0.3"})
