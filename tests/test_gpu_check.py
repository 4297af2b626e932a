"""benchmarks/gpu_check.py on a tiny CPU setting, so that the first GPU run cannot rot (issue 21)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def test_every_section_runs_and_records_where_it_ran(tmp_path):
    written = gpu_check.main(["--tiny", "--device", "cpu", "--out", str(tmp_path)])
    assert set(written) == {"sync_budget", "step_cost", "dual_precision", "stacked_mnist"}
    for name in written:
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert record["error"] is None, record["error"]
        meta = record["meta"]
        assert meta["device"] == "cpu" and meta["torch"] == torch.__version__ and meta["date"]
        assert len(meta["commit"]) == 40
    sync = written["sync_budget"]["result"]
    assert sync and all(row["within"] for row in sync.values()), sync
    cost = written["step_cost"]["result"]["dcgan8"]["methods"]
    assert all(row["ms_per_step"] > 0 for row in cost.values()), cost
    rows = written["dual_precision"]["result"]["rows"]
    assert {r["solver"] for r in rows} >= {"float64", "float32", "float32+promote"}
    assert all(r["converged"] == r["problems"] for r in rows if r["solver"] != "ipopt")
    assert all("error" not in r for r in written["stacked_mnist"]["result"].values())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_shell_script_refuses_without_cuda():
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "/tmp/gpu_check_refusal"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0 and "no CUDA" in done.stderr
