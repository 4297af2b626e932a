"""The first GPU run, in one script: what must be measured on CUDA, written as JSON.

    bash benchmarks/gpu_check.sh                    # on one CUDA GPU, under 8 minutes
    python benchmarks/gpu_check.py --tiny --out /tmp/gpu_check   # CPU, seconds (the test suite)

Sections (one JSON file each under ``--out``, every file with the device, commit, versions,
command and date; a section that fails records its error and the others still run):

* ``sync_budget.json``: host syncs of one training iteration of every gameopt optimiser and
  dual discriminator, counted by :class:`gameopt.testing.SyncCounter` on the real device with
  real values, and, on CUDA, cross-checked by ``torch.cuda.set_sync_debug_mode("warn")`` (the
  number of "synchronizing" warnings). The budgets are those of tests/test_sync_budget.py.
* ``step_cost.json``: ms per training step (median of timed steps, CUDA-synchronised) and peak
  device memory of every benchmark method (benchmarks/common/image_methods.py) on the DCGAN-like pair
  (32x32, benchmarks/common/dcgan.py) and on a 64x64 ResNet-like pair (defined here).
* ``dual_precision.json``: the batched trust-region solver in float64, float32 and float32 with
  float64 refinement against Ipopt (benchmarks/dual_precision/bench.py).
* ``stacked_mnist.json``: a short run of the stacked-MNIST leaders (dual_score, consensus) with
  benchmarks/common/image_gan.py (the stacked-digits game under ``--tiny``).
* ``tests.json``: the CUDA test run's counts, when ``--tests-xml`` gives pytest's JUnit XML.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))
from benchmarks.common.provenance import write_json  # noqa: E402

import gameopt  # noqa: E402
from gameopt.testing import SyncCounter  # noqa: E402


def run_meta(device: str) -> dict[str, Any]:
    """Device, commit, versions and date, recorded in every JSON."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip())
    info = {"commit": commit or None, "dirty": dirty, "command": " ".join(sys.argv), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "threads": torch.get_num_threads(), "device": device,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if device.startswith("cuda"):
        info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- players
class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, up: bool) -> None:
        super().__init__()
        self.up = up
        self.c1, self.c2 = nn.Conv2d(cin, cout, 3, 1, 1), nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = nn.functional.interpolate(x, scale_factor=2)
        h = self.c2(nn.functional.leaky_relu(self.c1(nn.functional.leaky_relu(x, 0.2)), 0.2))
        out = h + self.skip(x)
        return out if self.up else nn.functional.avg_pool2d(out, 2)


def resnet_generator(z_dim: int = 128, width: int = 64) -> nn.Module:
    """z -> 64x64x3: a linear layer to 4x4, four upsampling residual blocks (the SNGAN-style pair)."""
    w = width
    return nn.Sequential(nn.Linear(z_dim, 8 * w * 16), nn.Unflatten(1, (8 * w, 4, 4)),
                         _Block(8 * w, 4 * w, True), _Block(4 * w, 2 * w, True), _Block(2 * w, w, True),
                         _Block(w, w, True), nn.ReLU(), nn.Conv2d(w, 3, 3, 1, 1), nn.Tanh())


def resnet_discriminator(width: int = 64) -> nn.Module:
    """64x64x3 -> logit: four downsampling residual blocks, global sum pooling, linear (no batch norm)."""
    w = width
    return nn.Sequential(_Block(3, w, False), _Block(w, 2 * w, False), _Block(2 * w, 4 * w, False),
                         _Block(4 * w, 8 * w, False), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(8 * w * 16, 1))


# ----------------------------------------------------------------------------- sections
def section_sync_budget(device: str, tiny: bool) -> dict[str, Any]:
    import test_sync_budget as tsb

    dev = torch.device("meta" if device == "cpu" else device)  # the CPU has no syncs to count: use meta
    rows: dict[str, Any] = {}

    def count(name: str, setup: Callable[[], Callable[[], Any]], budget: int) -> None:
        try:
            fn = setup()
            with SyncCounter():
                fn()  # first step: state is created
            sync(device)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if dev.type == "cuda":
                    torch.cuda.set_sync_debug_mode("warn")
                try:
                    with SyncCounter(trace=True) as c:
                        fn()
                finally:
                    if dev.type == "cuda":
                        torch.cuda.set_sync_debug_mode("default")
            debug = sum("synchroniz" in str(w.message) for w in caught) if dev.type == "cuda" else None
            rows[name] = {"counts": dict(c.counts), "syncs": c.syncs, "budget": budget, "within": c.syncs <= budget,
                          "cuda_sync_debug_warnings": debug, "events": c.events[:40]}
        except Exception as e:  # noqa: BLE001 - a failing case is recorded, the others still run
            rows[name] = {"error": f"{type(e).__name__}: {e}"}

    kinds = {k: tsb.BASE_STEPS[k] for k in ("consensus", "altga", "cgd")} if tiny else tsb.BASE_STEPS
    for kind, base_steps in kinds.items():
        for nf in (("skip",) if tiny else ("skip", "ignore")):
            def setup(kind=kind, nf=nf):
                gan = tsb.MetaGAN(dev)
                opt = tsb._optimizer(kind, gan, nf)
                closure = gan.zero_sum if kind in ("cgd", "acgd") else gan.losses
                return lambda: opt.step(closure)
            count(f"{kind}/{nf}", setup, 0 if nf == "ignore" else base_steps)
    for model in (("cost", "score") if tiny else ("linear", "cost", "score")):
        def setup(model=model):
            d = tsb._dual(model, dev)
            g = torch.Generator().manual_seed(0)
            real, fake = torch.randn(8, 2, generator=g).to(dev), (torch.randn(8, 2, generator=g) + 1).to(dev)
            return lambda: d.step(real, fake)
        count(f"dual_{model}", setup, 3)
    return rows


def _build_method(method: str, G: nn.Module, D: nn.Module, batch: int, image_numel: int) -> Any:
    from benchmarks.common import image_gan
    from benchmarks.common.image_methods import build_method

    args = image_gan.parse_args(["--method", method, "--batch", str(batch), "--out", "/dev/null"])
    args.image_numel, args.pd_feature_map = image_numel, None
    return build_method(G, D, args)


def section_step_cost(device: str, tiny: bool) -> dict[str, Any]:
    from benchmarks.common.dcgan import dcgan_discriminator, dcgan_generator
    from benchmarks.common.image_methods import METHODS

    if tiny:
        pairs = {"dcgan8": (lambda: (dcgan_generator(z_dim=8, width=8, size=8), dcgan_discriminator(width=8, size=8)),
                            8, 8, 4)}
        timed_steps, warmup, methods = 1, 1, ["consensus", "dual_score"]
    else:
        pairs = {"dcgan32": (lambda: (dcgan_generator(z_dim=128, width=64, size=32), dcgan_discriminator(width=64, size=32)),
                             128, 32, 64),
                 "resnet64": (lambda: (resnet_generator(128, 64), resnet_discriminator(64)), 128, 64, 64)}
        timed_steps, warmup, methods = 10, 3, list(METHODS)
    out: dict[str, Any] = {}
    for pair, (make, z_dim, size, batch) in pairs.items():
        rows: dict[str, Any] = {}
        for method in methods:
            try:
                torch.manual_seed(0)
                G, D = (m.to(device) for m in make())
                step = _build_method(method, G, D, batch, 3 * size * size)
                g = torch.Generator().manual_seed(1)
                batches = [(torch.rand(batch, 3, size, size, generator=g).mul(2).sub(1).to(device),
                            torch.randn(batch, z_dim, generator=g).to(device)) for _ in range(2)]
                for i in range(warmup):
                    step.step(*batches[i % 2])
                sync(device)
                if device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                times = []
                for i in range(timed_steps):
                    t = time.perf_counter()
                    step.step(*batches[i % 2])
                    sync(device)
                    times.append(time.perf_counter() - t)
                rows[method] = {"ms_per_step": 1e3 * statistics.median(times),
                                "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20
                                if device.startswith("cuda") else None,
                                "params": {"G": sum(p.numel() for p in G.parameters()),
                                           "D": sum(p.numel() for p in D.parameters())}}
            except Exception as e:  # noqa: BLE001
                rows[method] = {"error": f"{type(e).__name__}: {e}"}
            finally:
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
        ref = rows.get("simga", {}).get("ms_per_step")
        if ref:
            for r in rows.values():
                if "ms_per_step" in r:
                    r["ratio_to_simga"] = r["ms_per_step"] / ref
        out[pair] = {"batch": batch, "size": size, "timed_steps": timed_steps, "methods": rows}
    return out


def section_dual_precision(device: str, tiny: bool, out_dir: Path) -> dict[str, Any]:
    sys.path.insert(0, str(HERE / "dual_precision"))
    import bench

    argv = ["--device", device, "--out", str(out_dir / "dual_precision_raw.json")]
    argv += ["--smoke"] if tiny else ["--batch", "64", "--n", "64", "--ipopt", "4"]
    return bench.main(argv)


def section_stacked_mnist(device: str, tiny: bool, out_dir: Path) -> dict[str, Any]:
    from benchmarks.common import image_gan

    rows: dict[str, Any] = {}
    for method in ("dual_score", "consensus"):
        run_dir = out_dir / "stacked_mnist_runs" / method
        if tiny:
            argv = ["--data", "stacked_digits", "--size", "8", "--width", "8", "--z-dim", "8", "--batch", "8",
                    "--eval-samples", "64", "--eval-real", "300", "--steps", "2", "--eval-every", "0"]
        else:
            argv = ["--data", "stacked_mnist", "--model", "unrolled_nobn_d", "--steps", "300", "--eval-every", "0",
                    "--eval-samples", "2000", "--save-samples", "0"]
        argv += ["--method", method, "--device", device, "--no-progress", "--ckpt-every", "0", "--out", str(run_dir)]
        try:
            t = time.perf_counter()
            summary = image_gan.main(argv)
            final = summary["history"][-1]
            rows[method] = {"argv": argv, "seconds": time.perf_counter() - t,
                            "final": {k: v for k, v in final.items() if isinstance(v, (int, float))}}
        except Exception as e:  # noqa: BLE001
            rows[method] = {"argv": argv, "error": f"{type(e).__name__}: {e}"}
    return rows


def section_tests(xml_path: Path) -> dict[str, Any]:
    import xml.etree.ElementTree as ET

    root = ET.parse(xml_path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    keys = ("tests", "failures", "errors", "skipped", "time")
    out: dict[str, Any] = {k: suite.get(k) for k in keys}
    out["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                     if c.find("failure") is not None or c.find("error") is not None]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu"))
    ap.add_argument("--tiny", action="store_true", help="tiny settings (seconds on a CPU): the test suite's run")
    ap.add_argument("--sections", default="sync_budget,step_cost,dual_precision,stacked_mnist")
    ap.add_argument("--tests-xml", default=None, help="pytest --junitxml output of the CUDA test run, to record")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = {
        "sync_budget": lambda: section_sync_budget(args.device, args.tiny),
        "step_cost": lambda: section_step_cost(args.device, args.tiny),
        "dual_precision": lambda: section_dual_precision(args.device, args.tiny, out_dir),
        "stacked_mnist": lambda: section_stacked_mnist(args.device, args.tiny, out_dir),
    }
    if args.tests_xml:
        sections["tests"] = lambda: section_tests(Path(args.tests_xml))
        args.sections += ",tests"
    written: dict[str, Any] = {}
    for name in args.sections.split(","):
        t = time.perf_counter()
        try:
            result, error = sections[name](), None
        except Exception as e:  # noqa: BLE001 - the next section still runs
            result, error = None, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}"
        record = {"meta": run_meta(args.device), "tiny": args.tiny, "section": name,
                  "seconds": time.perf_counter() - t, "error": error, "result": result}
        path = out_dir / f"{name}.json"
        write_json(path, record, device=args.device, indent=1, default=str)
        written[name] = record
        print(f"{name}: {'ERROR ' + error.splitlines()[0] if error else 'ok'} ({record['seconds']:.1f} s) -> {path}")
    return written


if __name__ == "__main__":
    main()
