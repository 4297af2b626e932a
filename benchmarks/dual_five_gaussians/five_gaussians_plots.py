"""Figures of the 5-Gaussians robustness study: every run's final samples, and the paper's Fig. 4
breakdown (how many modes each method covers over the settings)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmarks.common.robustness_report import paired_indices


def _centres(radius: float = 2.0, k: int = 5) -> np.ndarray:
    a = np.arange(k) * 2 * math.pi / k
    return np.stack([radius * np.cos(a), radius * np.sin(a)], 1)


def plot_samples_grid(runs: dict[str, dict[int, dict]], criteria: dict, path: Path, title: str,
                      per_row: int = 10, lim: float = 3.0) -> None:
    """One small panel per (setting, method): the stored final samples and the 5 centres.

    Each setting's dual and standard-GAN panels sit side by side (dual left). Frame colour:
    green = success under the strictest criterion, orange = only under the loosest, grey = failure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(criteria)
    loose, strict = criteria[names[0]], criteria[names[-1]]
    idx = paired_indices(runs)
    methods = list(runs)
    cols = per_row * len(methods)
    rows = max(1, math.ceil(len(idx) / per_row))
    fig, axes = plt.subplots(rows, cols, figsize=(0.75 * cols, 0.8 * rows + 0.6), squeeze=False)
    c = _centres()
    for ax in axes.flat:
        ax.set_axis_off()
    for j, i in enumerate(idx):
        for k, m in enumerate(methods):
            ax = axes[j // per_row][(j % per_row) * len(methods) + k]
            ax.set_axis_on()
            r = runs[m][i]
            x = np.asarray(r.get("samples") or np.zeros((0, 2)))
            if len(x):
                ax.scatter(x[:, 0], x[:, 1], s=0.3, c="tab:blue", alpha=0.5, linewidths=0)
            ax.scatter(c[:, 0], c[:, 1], s=4, c="k", marker="x", linewidths=0.6)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_xticks([])
            ax.set_yticks([])
            colour = "tab:green" if strict(r) else "tab:orange" if loose(r) else "0.7"
            for s in ax.spines.values():
                s.set_color(colour)
                s.set_linewidth(2.0 if colour != "0.7" else 0.8)
            ax.set_title(f"{i} {m[0]}", fontsize=5, pad=1)
    fig.suptitle(f"5-Gaussians final samples, {title}: per setting dual (d) | standard GAN (g); "
                 f"green: {names[-1]}, orange: only {names[0]}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97), pad=0.2, h_pad=0.2, w_pad=0.1)
    fig.savefig(path, dpi=70)
    plt.close(fig)


def plot_modes_histogram(runs: dict[str, dict[int, dict]], shares: tuple[float, ...], path: Path, title: str) -> None:
    """The paper's Fig. 4 (left): settings by number of modes covered, per method, at each share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = paired_indices(runs)
    methods = list(runs)
    fig, axes = plt.subplots(1, len(shares), figsize=(4 * len(shares), 3.2), squeeze=False)
    bins = np.arange(7) - 0.5
    for ax, q in zip(axes[0], shares):
        data = [[sum(c >= q * runs[m][i]["eval_samples"] for c in runs[m][i]["mode_counts"]) for i in idx]
                for m in methods]
        ax.hist(data, bins=bins, label=methods)
        ax.set_xlabel(f"modes covered (>= {q:.0%} of samples within 3 std)")
        ax.set_ylabel("settings")
        ax.legend(fontsize=8)
    fig.suptitle(f"{title} ({len(idx)} settings)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
