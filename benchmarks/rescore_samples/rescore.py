"""Re-score committed GAN samples with the metrics that noise cannot fool, and draw them beside real data.

    python benchmarks/rescore_samples/rescore.py            # every committed sample file
    python benchmarks/rescore_samples/rescore.py benchmarks/mnist/results/samples/altga_s0.npz

For each ``<name>.npz`` (key ``images``: uint8 ``(N, C, 28, 28)``, C = 3 for stacked MNIST, 1 for
MNIST) under ``benchmarks/stacked_mnist/results/samples`` and ``benchmarks/mnist/results/samples``
it writes, beside the file:

- ``<name>_rescored.json``: both classifiers' all-label and strict mode counts, strict fraction,
  strict KL, Frechet distance, precision/recall, the agreed strict modes (see
  ``gameopt.images.StackedMNISTEvaluator``), and the real-data row at the same sample count;
- ``<name>_grid.png``: 64 samples (left) beside 64 real test samples (right).

and, in this folder, ``results/summary.json`` and ``results/table.md`` (one row per file, the
real-data row first). The reference statistics are ``--n-real`` test-split samples (stacked
MNIST: 26,000, the published protocol's count; MNIST: 8,000, so that the real row's 2,000 fresh
test digits lie outside the reference). One thread.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from benchmarks.common.provenance import write_json  # noqa: E402
HERE = Path(__file__).resolve().parent
DEFAULT_GLOBS = ("benchmarks/stacked_mnist/results/samples/*_s*.npz", "benchmarks/mnist/results/samples/*_s*.npz")
KEYS = ("modes_covered", "strict_modes", "second_modes_covered", "second_strict_modes", "agreed_strict_modes",
        "strict_fraction", "second_strict_fraction", "strict_kl", "frechet_distance", "second_frechet_distance",
        "precision", "recall", "second_precision", "second_recall")


def provenance(argv: list[str]) -> dict:
    """Commit, command line, versions, threads, device and date of this run."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "gameopt"], cwd=ROOT, capture_output=True,
                                    text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", None
    return {"commit": commit, "gameopt_tree_dirty": dirty,
            "command": " ".join(["python", "benchmarks/rescore_samples/rescore.py", *argv]),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "threads": torch.get_num_threads(), "device": "cpu", "machine": platform.machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def clean(d: dict) -> dict:
    """NaN, should a metric give one, becomes null: valid JSON."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def classifier_info(model: torch.nn.Module) -> dict:
    info = dict(getattr(model, "info", {}))
    for local in ("cache_file", "weights_file"):   # this machine's paths
        info.pop(local, None)
    return {"class": type(model).__name__, **info}


def classifier_digests(ev) -> str:
    """``first/second``: the weights digests of an evaluator's two classifiers (the instrument)."""
    from gameopt.images.classifier import weights_digest

    return "/".join(getattr(m, "info", {}).get("weights_sha256") or weights_digest(m)
                    for m in (ev.classifier, ev.second_classifier))


def evaluator_for(channels: int, n_real: int | None, smoke: bool = False):
    from gameopt import images

    # smoke: untrained classifiers (the plumbing only, in seconds; the numbers mean nothing)
    kw = {"classifier": images.LeNet5().eval(), "second_classifier": images.LeNet5().eval()} if smoke else {}
    if channels == 3:
        return images.StackedMNISTEvaluator(n_real=n_real or 26000, seed=0, **kw)
    return images.MNISTEvaluator(n_real=n_real or 8000, seed=0, **kw)


def real_grid_images(channels: int, n: int) -> torch.Tensor:
    """``n`` real test samples for the picture (seed 1)."""
    from gameopt import images

    g = torch.Generator().manual_seed(1)
    if channels == 3:
        return images.StackedMNIST("test").sample(n, g)[0]
    x, _ = images.load_mnist(split="test")
    return images.mnist_signed(x[torch.randperm(len(x), generator=g)[:n]]).unsqueeze(1)


def rescore(paths: list[Path], n_real: int | None, run: dict, smoke: bool = False) -> list[dict]:
    from gameopt.images import save_grid

    evaluators: dict[int, object] = {}
    real_rows: dict[tuple[int, int], dict] = {}
    rows = []
    for path in paths:
        with np.load(path) as z:
            raw = z["images"]
        if raw.dtype != np.uint8 or raw.ndim != 4 or raw.shape[1] not in (1, 3):
            raise ValueError(f"{path}: expected uint8 (N, 1 or 3, 28, 28) under 'images', got {raw.dtype} {raw.shape}")
        channels, n = raw.shape[1], raw.shape[0]
        if channels not in evaluators:
            t0 = time.perf_counter()
            evaluators[channels] = evaluator_for(channels, n_real, smoke)
            print(f"evaluator for {channels} channel(s) ready in {time.perf_counter() - t0:.0f} s", flush=True)
        ev = evaluators[channels]
        if (channels, n) not in real_rows:
            real_rows[(channels, n)] = {**clean(ev.real_metrics(n=n)), "classifiers": classifier_digests(ev)}
        t0 = time.perf_counter()
        x = torch.from_numpy(raw).float() / 127.5 - 1.0
        metrics = clean(ev(x))
        data = "stacked_mnist" if channels == 3 else "mnist"
        record = {
            "what": f"{n} committed samples of {path.name} ({data}) re-scored by two classifiers",
            "samples": _relative(path),
            "n_samples": n,
            "metrics": metrics,
            "real_same_n": real_rows[(channels, n)],
            "real_same_n_what": (f"{n} fresh real test-split samples (seed 1) scored like generated ones against "
                                 f"the {ev.n_real} reference samples (seed 0)"),
            "classifiers": {"first": classifier_info(ev.classifier), "second": classifier_info(ev.second_classifier)},
            "settings": {"n_real": ev.n_real, "k": ev.k, "strict_threshold": ev.strict_threshold,
                         "shifts": "1 pixel up, down, left, right; background fill -1"},
            "seconds": round(time.perf_counter() - t0, 1),
            **run,
        }
        stem = path.with_suffix("")
        write_json(f"{stem}_rescored.json", record)
        save_grid(x[:64], f"{stem}_grid.png", real=real_grid_images(channels, 64), nrow=8,
                  title=f"{path.stem} ({data}): {metrics['agreed_strict_modes']} agreed strict modes, "
                        f"{metrics['modes_covered']} all-label")
        print(f"{path.name}: " + ", ".join(f"{k} {metrics[k]:.3g}" if isinstance(metrics[k], float)
                                            else f"{k} {metrics[k]}" for k in KEYS[:8]), flush=True)
        method = path.stem if path.parent.name == "samples" else f"{path.parent.name}/{path.stem}"   # players' folder
        rows.append({"file": record["samples"], "data": data, "method": method, "n": n, **metrics,
                     "classifiers": classifier_digests(ev)})
    for (channels, n), real in sorted(real_rows.items()):
        rows.insert(0, {"file": None, "data": "stacked_mnist" if channels == 3 else "mnist",
                        "method": "REAL (test split)", "n": n, **real})
    return rows


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _merge(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` rows, then ``new``'s file rows; a real-data row of ``new`` must equal ``old``'s for its
    data and sample count (the same reference, scored by the same classifier weights), else the
    table would mix two instruments."""
    real = {(r["data"], r["n"]): r for r in old if r["file"] is None}
    merged = list(old)
    for r in new:
        if r["file"] is not None:
            merged.append(r)
            continue
        have = real.get((r["data"], r["n"]))
        if have is None:
            merged.insert(0, r)
            continue
        if have.get("classifiers", r["classifiers"]) != r["classifiers"]:
            raise SystemExit(f"rescore --append: the table was scored by classifier weights {have['classifiers']} "
                             f"(first/second digest), these files by {r['classifiers']}: re-score every file "
                             "without --append (gameopt's shipped reference classifiers give one instrument on "
                             "every machine)")
        if any(not math.isclose(have[k], v, rel_tol=1e-6, abs_tol=1e-9) if isinstance(v, float) else have[k] != v
               for k, v in r.items() if k in have):
            raise SystemExit(f"rescore --append: the real-data row for {r['data']} ({r['n']} samples) differs from "
                             "the table's (another reference, or classifiers retrained on another machine before "
                             "gameopt shipped its reference weights): re-score every file without --append")
    return merged


def fmt(v, spec: str) -> str:
    return "n/a" if v is None else spec.format(v)


def table(rows: list[dict]) -> str:
    cols = [("method", "method", "{}"), ("modes_covered", "all-label modes L", "{:d}"),
            ("second_modes_covered", "all-label modes C", "{:d}"), ("strict_modes", "strict modes L", "{:d}"),
            ("second_strict_modes", "strict modes C", "{:d}"), ("agreed_strict_modes", "agreed strict", "{:d}"),
            ("strict_fraction", "strict frac L", "{:.3f}"), ("second_strict_fraction", "strict frac C", "{:.3f}"),
            ("strict_kl", "strict KL L", "{:.2f}"), ("frechet_distance", "FD L", "{:.1f}"),
            ("second_frechet_distance", "FD C", "{:.1f}"), ("precision", "P L", "{:.3f}"),
            ("recall", "R L", "{:.3f}"), ("second_precision", "P C", "{:.3f}"), ("second_recall", "R C", "{:.3f}")]
    out = []
    for data in ("stacked_mnist", "mnist"):
        sub = [r for r in rows if r["data"] == data]
        if not sub:
            continue
        out += [f"### {data} ({sub[0]['n']} samples per row)", "",
                "| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
        for r in sub:
            out.append("| " + " | ".join(fmt(r.get(k), spec) for k, _, spec in cols) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", help="sample .npz files (default: every committed *_s*.npz)")
    p.add_argument("--n-real", type=int, default=None, help="reference samples (default 26000 stacked, 8000 MNIST)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "results"), help="folder of summary.json and table.md")
    p.add_argument("--append", action="store_true",
                   help="score only the files not yet in --out's summary.json and add their rows after the "
                        "existing ones (for a grid that lands run by run); the real-data rows must agree")
    p.add_argument("--smoke", action="store_true",
                   help="seconds: random uint8 samples in --out, untrained classifiers, 64 reference samples")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.smoke:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for name, c in (("smoke_stacked_s0", 3), ("smoke_mnist_s0", 1)):
            np.savez_compressed(Path(args.out) / f"{name}.npz", images=rng.integers(0, 256, (16, c, 28, 28), dtype=np.uint8))
        args.files = [str(Path(args.out) / "smoke_stacked_s0.npz"), str(Path(args.out) / "smoke_mnist_s0.npz")]
        args.n_real = 64
    paths = [Path(f).resolve() for f in args.files] or sorted(
        q for g in DEFAULT_GLOBS for q in ROOT.glob(g))
    if not paths:
        raise SystemExit("no sample files found")
    t0 = time.perf_counter()
    run = provenance(argv)  # taken once, at the start: the code that computes every row
    out = Path(args.out)
    old = json.loads((out / "summary.json").read_text()) if args.append and (out / "summary.json").is_file() else None
    if old is not None:
        done = {r["file"] for r in old["rows"] if r["file"]}
        paths = [q for q in paths if _relative(q) not in done]
        if not paths:
            print(f"every file is already in {out / 'summary.json'}: nothing to score")
            return old["rows"]
    rows = rescore(paths, args.n_real, run, smoke=args.smoke)
    out.mkdir(parents=True, exist_ok=True)
    if old is None:
        summary = {"rows": rows, "seconds": round(time.perf_counter() - t0, 1), **run}
    else:
        rows = _merge(old["rows"], rows)
        appended = {"files": [_relative(q) for q in paths], "seconds": round(time.perf_counter() - t0, 1), **run}
        summary = old | {"rows": rows, "appended": old.get("appended", []) + [appended]}
    write_json(out / "summary.json", summary)
    legend = ("L: gameopt's LeNet-5 (`mnist_classifier`); C: the second classifier (`mnist_second_classifier`, "
              "a batch-norm CNN). Strict: every channel's top probability >= 0.9 and its label unchanged by "
              "1-pixel shifts in four directions; agreed strict: strict for both classifiers with the same mode. "
              "P/R: precision/recall (Kynkaanniemi et al. 2019, k = 3) against as many reference samples. "
              "FD and P/R in each classifier's own feature space (not comparable to published FID).")
    (out / "table.md").write_text(table(rows) + "\n" + legend + "\n")
    print(table(rows))
    print(f"{time.perf_counter() - t0:.0f} s; wrote {out / 'summary.json'}, {out / 'table.md'}")
    return rows


if __name__ == "__main__":
    main()
