"""The consensus gamma sweep on 8 Gaussians (benchmarks/gamma_sweep/gamma_sweep_gaussians.py): runs, resumes, tabulates."""

import json

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

