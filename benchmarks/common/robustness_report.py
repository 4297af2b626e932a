"""Success rates, intervals, paired tests and outcome figures for the robustness studies.

Input everywhere: ``runs = {method: {setting_index: result}}`` as ``setting_runner.load_runs``
returns them (each result holds its ``setting`` dict), and ``criteria = {name: fn(result) ->
bool}``. Only settings finished by every method are counted, so the comparison stays paired.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from benchmarks.common.binomial import clopper_pearson_interval, mcnemar_exact, wilson_interval

Criteria = dict[str, Callable[[dict], bool]]


def paired_indices(runs: dict[str, dict[int, dict]]) -> list[int]:
    sets = [set(r) for r in runs.values()]
    return sorted(set.intersection(*sets)) if sets else []


def rate(k: int, n: int) -> dict:
    return {"k": k, "n": n, "rate": k / n if n else math.nan,
            "wilson95": list(wilson_interval(k, n)), "clopper_pearson95": list(clopper_pearson_interval(k, n))}


def summarise(runs: dict[str, dict[int, dict]], criteria: Criteria,
              scores: dict[str, Callable[[dict], float]] | None = None, **extra) -> dict:
    """Per criterion: each method's k/n with 95% intervals, the paired table and McNemar's p
    (for exactly two methods). Per score (a number per run, e.g. modes covered): each
    method's mean, and for two methods how often each is higher and the paired Wilcoxon p."""
    from scipy import stats

    idx = paired_indices(runs)
    methods = list(runs)
    out = {"settings": len(idx), "methods": methods, "criteria": {}, **extra}
    out["status"] = {m: dict(Counter(runs[m][i].get("status", "ok").split(" at ")[0] for i in idx)) for m in methods}
    for name, fn in criteria.items():
        ok = {m: [bool(fn(runs[m][i])) for i in idx] for m in methods}
        entry = {m: rate(sum(v), len(idx)) for m, v in ok.items()}
        if len(methods) == 2:
            a, b = methods
            only_a = sum(x and not y for x, y in zip(ok[a], ok[b]))
            only_b = sum(y and not x for x, y in zip(ok[a], ok[b]))
            both = sum(x and y for x, y in zip(ok[a], ok[b]))
            entry["paired"] = {f"only_{a}": only_a, f"only_{b}": only_b, "both": both,
                               "neither": len(idx) - only_a - only_b - both, "mcnemar_p": mcnemar_exact(only_a, only_b)}
        out["criteria"][name] = entry
    out["scores"] = {}
    for name, fn in (scores or {}).items():
        vals = {m: [float(fn(runs[m][i])) for i in idx] for m in methods}
        entry = {m: {"mean": sum(v) / len(v) if v else math.nan} for m, v in vals.items()}
        if len(methods) == 2:
            a, b = methods
            d = [x - y for x, y in zip(vals[a], vals[b])]
            entry["paired"] = {f"{a}_higher": sum(x > 0 for x in d), f"{b}_higher": sum(x < 0 for x in d),
                               "wilcoxon_p": float(stats.wilcoxon(d).pvalue) if any(d) else 1.0}
        out["scores"][name] = entry
    return out


def fmt_rate(r: dict) -> str:
    lo, hi = r["wilson95"]
    return f"{r['k']}/{r['n']} ({100 * r['rate']:.0f}%, {100 * lo:.0f}-{100 * hi:.0f})"


def write_summary(summaries: dict[str, dict], path: Path, title: str) -> None:
    """One markdown table: config x criterion, both methods with Wilson 95% intervals, paired counts, McNemar p."""
    lines = [f"# {title}", "",
             "k/n (rate, Wilson 95% interval in %); paired: settings where only the dual / only the "
             "standard GAN succeeds; p: exact McNemar test on those pairs.", ""]
    for name, s in summaries.items():
        lines += [f"## {name}", "", f"options: `{s.get('options')}`", "",
                  f"settings: {s['settings']} (seed {s.get('seed')}, lr reading {s.get('lr_reading')}, "
                  f"iteration scale {s.get('iter_scale')}); run status: {s['status']}", "",
                  "| criterion | dual | standard GAN | only dual / only GAN | McNemar p |", "|---|---|---|---|---|"]
        for crit, e in s["criteria"].items():
            p = e.get("paired", {})
            lines.append(f"| {crit} | {fmt_rate(e['dual'])} | {fmt_rate(e['gan'])} | "
                         f"{p.get('only_dual', '-')} / {p.get('only_gan', '-')} | {p.get('mcnemar_p', math.nan):.3g} |")
        if s.get("scores"):
            lines += ["", "| score (mean per setting) | dual | standard GAN | dual higher / GAN higher | Wilcoxon p |",
                      "|---|---|---|---|---|"]
            for sc, e in s["scores"].items():
                p = e.get("paired", {})
                lines.append(f"| {sc} | {e['dual']['mean']:.2f} | {e['gan']['mean']:.2f} | "
                             f"{p.get('dual_higher', '-')} / {p.get('gan_higher', '-')} | {p.get('wilcoxon_p', math.nan):.3g} |")
        lines.append("")
    Path(path).write_text("\n".join(lines))


HP_AXES = (
    ("g_lr", "generator lr", True), ("g_mom", "generator beta1", False), ("batch", "batch", False),
    ("iters", "iterations", False), ("d_lr", "discriminator lr (GAN only)", True),
)


def outcome_figure(runs: dict[str, dict[int, dict]], criteria: Criteria, path: Path, title: str,
                   loose: str | None = None, strict: str | None = None, score: tuple[str, str] | None = None) -> None:
    """A grid of scatter plots: each method's outcome against the drawn hyper-parameters.

    Rows = methods; columns = generator lr against each other hyper-parameter. Colour: success
    under ``strict`` (default: the last criterion), under ``loose`` only (default: the first),
    or failure; marker: architecture. With ``score=(key, label)`` the colour is that result
    value instead (e.g. an Inception score) and the criteria are ignored.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(criteria)
    loose, strict = loose or (names[0] if names else None), strict or (names[-1] if names else None)
    idx = paired_indices(runs)
    methods = list(runs)
    pairs = [("g_lr", b) for b, _, _ in HP_AXES[1:]]
    labels = {k: (lab, log) for k, lab, log in HP_AXES}
    fig, axes = plt.subplots(len(methods), len(pairs), figsize=(3.3 * len(pairs), 3.0 * len(methods)), squeeze=False)
    archs = sorted({runs[methods[0]][i]["setting"]["arch"] for i in idx}) if idx else []
    markers = dict(zip(archs, "os^D"))
    vmin = vmax = None
    if score is not None:
        vals = [runs[m][i][score[0]] for m in methods for i in idx]
        vmin, vmax = (min(vals), max(vals)) if vals else (0, 1)
    for r, m in enumerate(methods):
        for c, (xa, ya) in enumerate(pairs):
            ax = axes[r][c]
            for arch in archs:
                sel = [i for i in idx if runs[m][i]["setting"]["arch"] == arch]
                xs = [runs[m][i]["setting"][xa] for i in sel]
                ys = [runs[m][i]["setting"][ya] for i in sel]
                if score is not None:
                    col = [runs[m][i][score[0]] for i in sel]
                    sc = ax.scatter(xs, ys, c=col, cmap="viridis", vmin=vmin, vmax=vmax, marker=markers[arch], s=22,
                                    label=arch)
                else:
                    col = ["tab:green" if criteria[strict](runs[m][i]) else
                           "tab:orange" if criteria[loose](runs[m][i]) else "0.75" for i in sel]
                    ax.scatter(xs, ys, c=col, marker=markers[arch], s=22, edgecolors="k", linewidths=0.3, label=arch)
            ax.set_xscale("log")
            if labels[ya][1]:
                ax.set_yscale("log")
            ax.set_xlabel(labels[xa][0])
            ax.set_ylabel(labels[ya][0])
            if c == 0:
                ax.set_title(m, loc="left", fontweight="bold")
    handles = [plt.Line2D([], [], ls="", marker=markers[a], color="k", label=a) for a in archs]
    if score is None:
        handles += [plt.Line2D([], [], ls="", marker="o", color=c, label=lab) for c, lab in
                    (("tab:green", f"success: {strict}"), ("tab:orange", f"only {loose}"), ("0.75", "failure"))]
    else:
        fig.colorbar(sc, ax=axes, shrink=0.6, label=score[1])
    fig.legend(handles=handles, loc="upper right", fontsize=8)
    fig.suptitle(f"{title} ({len(idx)} settings)")
    if score is None:
        fig.tight_layout(rect=(0, 0, 0.88, 0.95))
    fig.savefig(path, dpi=80)
    plt.close(fig)
