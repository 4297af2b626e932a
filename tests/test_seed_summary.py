"""benchmarks/rescore_samples/seed_summary.py: one row per method over its seeds, from a re-score."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks/rescore_samples/seed_summary.py"


def _row(method: str, data: str = "mnist", **metrics: float) -> dict:
    return {"file": f"x/{method}.npz", "data": data, "method": method, "n": 2000, **metrics}


def _summary(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"rows": rows}))
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_groups_seeds_of_a_method_with_mean_sd_min_max(tmp_path):
    rows = [_row("REAL (test split)", strict_fraction=0.97, frechet_distance=0.4),
            _row("altga_s0", strict_fraction=0.6, frechet_distance=20.0),
            _row("altga_s1", strict_fraction=0.5, frechet_distance=30.0),
            _row("altga_s2", strict_fraction=0.7, frechet_distance=10.0),
            _row("consensus_ema_s0", strict_fraction=0.8, frechet_distance=5.0),
            _row("consensus-gamma0.1_s3", strict_fraction=0.4, frechet_distance=50.0)]
    done = _run(str(_summary(tmp_path, rows)), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "out" / "seeds.json").read_text())
    assert "provenance" in record
    groups = {(g["data"], g["method"]): g for g in record["groups"]}
    assert set(groups) == {("mnist", "REAL (test split)"), ("mnist", "altga"), ("mnist", "consensus_ema"),
                           ("mnist", "consensus-gamma0.1")}
    alt = groups[("mnist", "altga")]
    assert alt["seeds"] == [0, 1, 2]
    sf = alt["strict_fraction"]
    assert sf["mean"] == pytest.approx(0.6) and sf["min"] == pytest.approx(0.5) and sf["max"] == pytest.approx(0.7)
    assert sf["sd"] == pytest.approx(0.1)  # sample standard deviation (n - 1)
    assert alt["frechet_distance"]["values"] == [20.0, 30.0, 10.0]
    one = groups[("mnist", "consensus-gamma0.1")]
    assert one["seeds"] == [3] and one["strict_fraction"]["sd"] is None  # one seed: no spread
    table = (tmp_path / "out" / "seeds.md").read_text()
    assert "altga" in table and "0.60 +- 0.10" in table


def test_same_method_and_seed_twice_is_refused(tmp_path):
    rows = [_row("altga_s0", strict_fraction=0.6), _row("altga_s0", strict_fraction=0.5)]
    done = _run(str(_summary(tmp_path, rows)), "--out", str(tmp_path / "out"))
    assert done.returncode != 0
    assert "altga" in done.stderr and "seed 0" in done.stderr
