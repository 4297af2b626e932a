"""How much the instrument moves a table: the same sample files scored by two classifier pairs.

    python benchmarks/rescore_samples/compare_tables.py BEFORE/summary.json AFTER/summary.json \
        --out DIR [--min-modes 20]

AFTER must list BEFORE's files in the same order (``rescore.py`` run twice over one file list); rows
AFTER appends beyond them are left out.
Writes ``DIR/instrument_shift.json``: per row the before and after values of the strict counts and
FD, and over the rows where the runs learned (at least ``--min-modes`` agreed strict modes before) the
largest and mean absolute change of each. Gameopt's classifiers retrained on another machine with
the same seed give another instrument; this says how far apart two single runs must be before the
instrument could not explain it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common.provenance import write_json  # noqa: E402

METRICS = ("agreed_strict_modes", "strict_modes", "second_strict_modes", "strict_fraction", "frechet_distance")


def compare(before: list[dict], after: list[dict], min_modes: int = 20) -> dict:
    """Row-by-row changes from ``before`` to ``after`` and their spread over the learned rows."""
    after = after[:len(before)]
    if [(r["file"], r["data"]) for r in before] != [(r["file"], r["data"]) for r in after]:
        raise ValueError("the tables do not list the same files in the same order: re-score one file list twice")
    rows = []
    for b, a in zip(before, after):
        row = {"method": b["method"], "file": b["file"], "learned": b["file"] is not None and b["agreed_strict_modes"] >= min_modes}
        for k in METRICS:
            row[k] = {"before": b[k], "after": a[k], "change": a[k] - b[k]}
        rows.append(row)
    learned = [r for r in rows if r["learned"]]
    spread = {k: {"max_abs_change": max(abs(r[k]["change"]) for r in learned),
                  "mean_abs_change": statistics.mean(abs(r[k]["change"]) for r in learned)}
              for k in METRICS} if learned else {}
    real = [r for r in rows if r["file"] is None]
    return {"min_modes": min_modes, "n_learned": len(learned), "spread": spread, "real": real, "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--out", required=True)
    p.add_argument("--min-modes", type=int, default=20, help="a run counts as learned from this many agreed strict modes")
    args = p.parse_args(argv)
    result = compare(json.loads(Path(args.before).read_text())["rows"], json.loads(Path(args.after).read_text())["rows"],
                     args.min_modes)
    result |= {"before": args.before, "after": args.after}
    write_json(Path(args.out) / "instrument_shift.json", result)
    for k, v in result["spread"].items():
        print(f"{k}: max |change| {v['max_abs_change']:.3g}, mean {v['mean_abs_change']:.3g} over {result['n_learned']} learned rows")
    return result


if __name__ == "__main__":
    main()
