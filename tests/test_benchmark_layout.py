"""The benchmarks folder stays navigable, light and portable (benchmarks/README.md is the index)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
STUDIES = sorted(p.name for p in BENCH.iterdir() if p.is_dir() and p.name not in ("common", "__pycache__"))


def _tracked(*paths: str) -> list[str]:
    done = subprocess.run(["git", "ls-files", *paths], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip("not a git checkout")
    return done.stdout.split()


@pytest.mark.parametrize("study", STUDIES)
def test_every_study_has_a_readme_and_a_row_in_the_index(study):
    readme = BENCH / study / "README.md"
    assert readme.is_file(), f"benchmarks/{study}/ has no README.md"
    text = readme.read_text()
    for part in ("question", "command", "time", "answer"):
        assert part in text.lower(), f"benchmarks/{study}/README.md does not give its {part}"
    assert "smoke" in text, f"benchmarks/{study}/README.md does not say how its smoke mode runs"
    assert f"[{study}]({study}/README.md)" in (BENCH / "README.md").read_text(), f"{study} is not in benchmarks/README.md"


def test_no_checkpoints_or_large_files_are_committed():
    heavy = []
    for f in _tracked("benchmarks"):
        path = ROOT / f
        # 2000 uint8 stacked-MNIST samples are 4.7 MB raw; noise does not compress, so samples get that much
        limit = 4_800_000 if path.suffix == ".npz" and "samples" in path.parts else 3_000_000
        if path.suffix in (".pt", ".pth", ".ckpt") or (path.is_file() and path.stat().st_size > limit):
            heavy.append(f)
    assert not heavy, f"commit small results only (no checkpoints, nothing over 3 MB; 2000 uint8 samples): {heavy}"


def test_committed_samples_are_uint8():
    import numpy as np

    for f in _tracked("benchmarks/*.npz", "benchmarks/**/*.npz"):
        with np.load(ROOT / f) as z:
            assert all(z[k].dtype == np.uint8 for k in z.files), f


def test_stacked_mnist_samples_keep_their_path_and_names():
    names = [f for f in _tracked("benchmarks") if f.endswith(".npz") and "/stacked_mnist/" in f]
    # <method>_s<seed>.npz, or <method>-<variant>_s<seed>.npz for a run with other settings (gamma0.1, joint);
    # _ema before _s<seed>: the run's EMA of G (dcgan28_grid.sh export names them so)
    assert names and all(re.search(r"/[a-z][a-z0-9_]*(-[a-z0-9.]+)?(_ema)?_s\d+\.npz$", f) for f in names), names  # r3gan: a digit


def test_no_developer_paths_and_no_unsafe_loads():
    pattern = r"/work/|/home/[a-z]|/Users/|weights_only=False"
    done = subprocess.run(["git", "grep", "-n", "-I", "-E", pattern, "--", ".", ":!tests/test_benchmark_layout.py", ":!tests/test_readme.py"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.stdout == "", done.stdout[:2000]


#: Scripts that write JSON which is not a study's results file (per-setting resumable records, a
#: rank's rows handed to rank 0), and the helper itself.
NOT_RESULTS = {"benchmarks/common/provenance.py", "benchmarks/common/setting_runner.py"}


def test_every_script_writing_json_records_provenance():
    """A study script writes its results through benchmarks.common.provenance (write_json, or
    provenance() in each record it appends), never with a bare json.dump of its own."""
    missing = []
    for f in _tracked("benchmarks/*.py", "benchmarks/**/*.py", "examples/*.py"):
        src = (ROOT / f).read_text()
        writes = "json.dump(" in src or ".write_text(json.dumps" in src or "write_json(" in src or "jsonl" in src
        if f in NOT_RESULTS or not writes:
            continue
        if "from benchmarks.common.provenance import" not in src:
            missing.append(f)
    assert not missing, f"write results with benchmarks.common.provenance.write_json: {missing}"
