"""Collect finished image-benchmark runs into a Markdown table (and a JSON summary).

    python benchmarks/common/image_table.py runs/stacked_digits/* --out benchmarks/stacked_digits/results
    python benchmarks/common/image_table.py runs/stacked_mnist/*/ --out benchmarks/stacked_mnist/results --published stacked_mnist

Reads each run folder's ``metrics.json`` (written by ``benchmarks/common/image_gan.py``), prints one
row per run and one mean +- std row per method over seeds, and writes ``table.md``,
``summary.json``, ``curves.png`` (each metric over steps, one line per run) and each run's last
sample grid (``samples/<run folder>.png``) to ``--out``. Runs that saved their final samples
(``final_samples.npz``/``.json``) in a folder named ``<method>_s0`` (the main grid's seed 0) get
them copied too (``samples/<method>_s0.npz``).
``--published stacked_mnist`` (or ``mnist``) appends the papers' numbers the table tests and the
metrics of real data (the ceiling), computed with the same evaluator (``real_reference.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: gameopt and benchmarks.common
from benchmarks.common.provenance import write_json  # noqa: E402

METRICS = [("modes_covered", "modes covered", "{:.0f}"), ("kl", "KL", "{:.2f}"),
           ("classifier_score", "score", "{:.1f}"), ("frechet_distance", "FD (ours)", "{:.0f}")]


def load_runs(folders: list[str]) -> list[dict[str, Any]]:
    runs = []
    for f in folders:
        path = Path(f) / "metrics.json"
        if not path.exists():
            continue
        d = json.loads(path.read_text())
        s = d["settings"]
        label = s["method"]
        if s["method"] == "consensus":
            label += f" (gamma {s['gamma']:g})"
        if s["method"] == "primal_dual":
            label += f" ({s['divergence']}, alpha {s['alpha']:g})"
        if s["method"] in ("cgd", "acgd"):
            label += " (zero-sum loss)"
        if s["method"] == "consensus_lazy":
            label += f" (gamma {s['gamma']:g}, every {s['every']})"
        if s["method"] == "sga" and s.get("lam", 1.0) != 1.0:
            label += f" (lam {s['lam']:g})"
        if s["method"].startswith("lookahead") and (s.get("la_k", 5), s.get("la_alpha", 0.5)) != (5, 0.5):
            label += f" (k {s['la_k']}, alpha {s['la_alpha']:g})"
        if s.get("model", "dcgan") != "dcgan":
            label += f", {s['model']}"
        if s.get("model", "").startswith("unrolled") and s.get("d_scale", 0.5) != 0.5:
            label += f", D {s['d_scale']:g} G"
        if s.get("model", "").startswith("dcgan28") and s.get("d_width") is not None:
            label += f", D width {s['d_width']}"
        if s.get("optim") not in (None, "adam"):
            label += f", {s['optim']} {s.get('lr'):g}"
        runs.append({"folder": str(f), "label": label, "seed": s["seed"], "settings": s,
                     "final": d["history"][-1], "history": d["history"], "seconds": d["train_seconds"],
                     "skipped": d["skipped_steps"]})
    return sorted(runs, key=lambda r: (r["label"], r["final"]["step"], r["seed"]))


def _fmt(fmt: str, v: Any) -> str:
    return "diverged" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def table(runs: list[dict[str, Any]]) -> str:
    head = "| method | seed | steps | train time (s) | " + " | ".join(m[1] for m in METRICS) + " |"
    lines = [head, "|" + "---|" * (4 + len(METRICS))]
    for r in runs:
        f = r["final"]
        lines.append(f"| {r['label']} | {r['seed']} | {f['step']} | {r['seconds']:.0f} | "
                     + " | ".join(_fmt(fmt, f.get(k)) for k, _, fmt in METRICS) + " |")
    lines += ["", "| method | steps | runs | " + " | ".join(m[1] for m in METRICS) + " |",
              "|" + "---|" * (3 + len(METRICS))]
    for label, steps in dict.fromkeys((r["label"], r["final"]["step"]) for r in runs):
        group = [r["final"] for r in runs if r["label"] == label and r["final"]["step"] == steps]
        cells = []
        for k, _, fmt in METRICS:
            vals = [g[k] for g in group if k in g and math.isfinite(g[k])]
            if not vals:
                cells.append("diverged")
                continue
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{_fmt(fmt, statistics.mean(vals))} +- {_fmt(fmt, sd)}"
                         + (f" ({len(vals)}/{len(group)})" if len(vals) < len(group) else ""))
        lines.append(f"| {label} | {steps} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def key(r: dict[str, Any]) -> str:
        return f"{r['label']}, {r['final']['step']} steps"

    keys = list(dict.fromkeys(key(r) for r in runs))
    colours = {k: plt.cm.tab20(i % 20) for i, k in enumerate(keys)}
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6))
    for ax, (k, title, _) in zip(axes, METRICS):
        shown: set[str] = set()
        for r in runs:
            pts = [(h["step"], h[k]) for h in r["history"] if k in h]
            if pts:
                ax.plot(*zip(*pts), color=colours[key(r)], alpha=0.8, lw=1,
                        label=None if key(r) in shown else key(r))
                shown.add(key(r))
        ax.set_title(title)
        ax.set_xlabel("step")
    if k == "frechet_distance":
        axes[-1].set_yscale("log")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_against_time(runs: list[dict[str, Any]], cost: dict[str, Any], path: Path) -> None:
    """Each metric against *equivalent* wall time: step x the method's ms/step from ``cost``
    (``benchmarks/common/image_step_cost.py``'s step_cost.json, measured on an otherwise idle machine), the mean
    over seeds per method, each run's own points faint. The runs' own clocks are not used: they
    ran as background jobs on a shared machine."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = {m: v["ms_per_step"] for m, v in cost["methods"].items()}
    runs = [r for r in runs if r["settings"]["method"] in ms]
    labels = list(dict.fromkeys(r["label"] for r in runs))
    palette = [plt.cm.tab10(i) for i in range(10)] + ["black", "darkkhaki", "navy", "lime"]
    colours = {k: palette[i % len(palette)] for i, k in enumerate(labels)}
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.4 * len(METRICS), 3.8))
    for ax, (k, title, _) in zip(axes, METRICS):
        for label in labels:
            group = [r for r in runs if r["label"] == label]
            per_step = ms[group[0]["settings"]["method"]] / 1000
            for r in group:
                pts = [(h["step"] * per_step, h[k]) for h in r["history"] if k in h]
                ax.plot(*zip(*pts), color=colours[label], alpha=0.25, lw=0.8)
            steps = sorted({h["step"] for r in group for h in r["history"]})
            mean = [(t * per_step, statistics.mean(h[k] for r in group for h in r["history"] if h["step"] == t and k in h))
                    for t in steps if all(any(h["step"] == t and k in h for h in r["history"]) for r in group)]
            if mean:
                ax.plot(*zip(*mean), color=colours[label], lw=1.8, marker="o", ms=2.5, label=f"{label} ({len(group)})")
        ax.set_title(title)
        ax.set_xlabel("equivalent train time (s)")
    axes[-1].set_yscale("log")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


#: Published numbers each table tests: (source, method, metric -> value).
PUBLISHED = {
    "stacked_mnist": [
        "Published (primal-dual paper, Chen et al. 2018, Table 3, with Metz et al.'s architecture; the "
        "Unrolled GAN rows are the D = 1/2 G column of Metz et al.'s Table 3; modes out of 1000 and "
        "an Inception-like score, each paper with its own MNIST classifier):",
        "",
        "| method (published) | modes (/1000) | score |",
        "|---|---|---|",
        "| Unrolled GAN, 5 unrolling steps (Metz et al. 2017) | 732 | n/a |",
        "| Unrolled GAN, 10 unrolling steps (Metz et al. 2017) | 817 | n/a |",
        "| Mode-regularized GAN (Che et al. 2017) | 969 | n/a |",
        "| primal-dual paper's baseline (no primal-dual term) | 526 | 87.15 |",
        "| primal-dual (Chen et al. 2018) | 827 | 155.6 |",
    ],
    "mnist": [
        "Published (primal-dual paper, section 5.2.1; Inception score with a LeNet-5 of 98.9% test accuracy):",
        "",
        "| method (published) | score (/10) |",
        "|---|---|",
        "| baseline | 8.8 |",
        "| primal-dual | 9.8 |",
    ],
}


def real_reference(kind: str, out: Path) -> str:
    """The metrics of real data under the same evaluator (cached in ``real_reference.json``)."""
    path = out / "real_reference.json"
    if path.exists():
        ref = json.loads(path.read_text())
    else:
        import torch

        from gameopt import images

        if kind == "stacked_mnist":
            ev = images.StackedMNISTEvaluator()
            fresh = ev._data.sample(26000, torch.Generator().manual_seed(1))[0]
            ref = {"what": "26,000 stacked test-split samples (fresh draw, seed 1) vs the 26,000-sample reference (seed 0)",
                   **ev(fresh), "reference_itself": ev.real_metrics()}
        else:
            ev = images.MNISTEvaluator(n_real=5000, seed=0)
            x, _ = images.load_mnist(split="test")
            idx = torch.randperm(10000, generator=torch.Generator().manual_seed(1))[:5000]
            ref = {"what": "5,000 test digits (seed 1) vs 5,000 others (seed 0)",
                   **ev(images.mnist_signed(x[idx]).unsqueeze(1)), "reference_itself": ev.real_metrics()}
        ref["classifier_test_accuracy"] = ev.classifier.test_accuracy
        write_json(path, ref)
    cells = " | ".join(_fmt(fmt, ref.get(k)) for k, _, fmt in METRICS)
    return (f"Real data under the same evaluator ({ref['what']}; classifier test accuracy "
            f"{ref['classifier_test_accuracy']:.4f}):\n\n| real data | " + cells + " |")


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders (each with metrics.json)")
    ap.add_argument("--out", default=None, help="write table.md, summary.json and curves.png here")
    ap.add_argument("--step-cost", default=None,
                    help="step_cost.json of benchmarks/common/image_step_cost.py: also plot every metric against "
                         "equivalent train time (quality_vs_time.png)")
    ap.add_argument("--published", choices=sorted(PUBLISHED), default=None,
                    help="append the published numbers and the real-data ceiling for this game")
    args = ap.parse_args(argv)
    runs = load_runs(args.runs)
    if not runs:
        raise SystemExit("no metrics.json found in the given folders")
    md = table(runs)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if args.published:
            md += "\n\n" + real_reference(args.published, out) + "\n\n" + "\n".join(PUBLISHED[args.published])
    print(md)
    if args.out:
        (out / "table.md").write_text(md + "\n")
        write_json(out / "summary.json", {"runs": [
            {k: r[k] for k in ("folder", "label", "seed", "final", "seconds", "skipped", "settings")} for r in runs]})
        plot(runs, out / "curves.png")
        if args.step_cost:
            plot_against_time(runs, json.loads(Path(args.step_cost).read_text()), out / "quality_vs_time.png")
        for r in runs:   # the last sample grid of every run, named after its folder
            grids = sorted((Path(r["folder"]) / "samples").glob("step_*.png"))
            if grids:
                (out / "samples").mkdir(exist_ok=True)
                shutil.copyfile(grids[-1], out / "samples" / f"{Path(r['folder']).name}.png")
            final = Path(r["folder"]) / "final_samples.npz"
            if Path(r["folder"]).name == f"{r['settings']['method']}_s0" and final.exists():   # the main grid's seed 0
                name = Path(r["folder"]).name
                shutil.copyfile(final, out / "samples" / f"{name}.npz")
                shutil.copyfile(final.with_suffix(".json"), out / "samples" / f"{name}.json")
    return md


if __name__ == "__main__":
    main()
