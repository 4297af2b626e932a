"""The gradient-penalty cost study runs (smoke mode, a few seconds) and records what it must."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gradient_penalty_cost" / "cost.py"


def test_smoke_run_writes_ratios_and_provenance(tmp_path):
    methods = "plain,r1,r1_lazy,consensus,consensus_r1,backprop,r1_only"
    subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--methods", methods, "--out", str(tmp_path)],
                   check=True, cwd=ROOT, capture_output=True, timeout=300)
    res = json.loads((tmp_path / "results.json").read_text())
    for key in ("commit", "command", "python", "torch", "numpy", "threads", "device", "date"):
        assert res[key], key
    assert res["threads"] == 1 and res["settings"]["smoke"] is True
    assert set(res["cpu_ratios"]) == set(res["ratios"]) == {
        "r1", "r1_lazy", "consensus", "consensus_r1", "consensus_r1_over_consensus", "r1_term_over_backprop"}
    assert all(r > 0 for r in res["ratios"].values())
    assert set(res["median_seconds"]) == set(methods.split(","))
    assert res["lazy_cycles"] == res["rounds_timed"] // res["settings"]["every"] >= 1
