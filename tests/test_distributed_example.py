"""examples/distributed_consensus.py under torchrun, as docs/integrations.md runs it (2 gloo ranks)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_example_equals_one_process_on_the_full_batch():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "examples/distributed_consensus.py", "--steps", "10", "--batch", "64", "--verify"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "2 processes, backend gloo, global batch 64 (32 per rank)" in done.stdout
    diff = re.search(r"verify: max \|param\(distributed\) - param\(one process, full batch\)\| = (\S+)", done.stdout)
    assert diff, done.stdout[-2000:]
    assert float(diff.group(1)) < 1e-10
