"""Resumable, shardable loop over (setting, method) runs for the robustness studies.

Each finished run is written at once to ``<run_dir>/setting_<index>.json`` (atomically: a
temporary file renamed into place), so a killed job loses at most the run in progress and
running the same command again skips what is done. ``shard="i/k"`` takes every k-th setting
starting at i, so k single-threaded jobs split one study without coordinating.

``run_dir`` names what the results depend on (method and the options that method reads); a
``run.json`` there records them, and a later job with different options for the same directory
is refused rather than mixing results.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path


def parse_shard(spec: str) -> tuple[int, int]:
    """"i/k" -> (i, k) with 0 <= i < k."""
    try:
        i, k = (int(v) for v in spec.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like 'i/k' (e.g. 0/2), got {spec!r}") from None
    if k < 1 or not 0 <= i < k:
        raise ValueError(f"shard {spec!r}: need 0 <= i < k")
    return i, k


def write_json_atomic(path: Path, obj) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
    os.replace(tmp, path)


def prepare_run_dir(run_dir: Path, description: dict) -> Path:
    """Create ``run_dir`` with ``run.json`` = ``description``, or check an existing one matches."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = run_dir / "run.json"
    if meta.exists():
        old = json.loads(meta.read_text())
        if old != json.loads(json.dumps(description)):
            raise ValueError(
                f"{run_dir} holds runs made with other options ({old}); "
                f"this job has {description}. Use another --out or delete the directory."
            )
    else:
        write_json_atomic(meta, description)
    return run_dir


def setting_path(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / f"setting_{index:03d}.json"


def run_settings(
    settings: Iterable[dict], jobs: dict[str, tuple[Path, Callable[[dict], dict]]], shard: str = "0/1",
    log: Callable[[str], None] = print,
) -> int:
    """For this shard's settings, run every job not yet stored; returns how many runs were made.

    ``jobs = {name: (run_dir, train_one)}``: ``train_one(setting)`` returns the result stored in
    ``run_dir``. Settings are the outer loop, so the methods' paired results arrive together.
    """
    i, k = parse_shard(shard)
    ran = 0
    for s in settings:
        if s["index"] % k != i:
            continue
        for name, (run_dir, train_one) in jobs.items():
            path = setting_path(run_dir, s["index"])
            if path.exists():
                continue
            result = train_one(s)
            write_json_atomic(path, {"setting": s, **result})
            ran += 1
            log(f"{Path(run_dir).name} setting {s['index']}: {result.get('summary', '')}")
    return ran


def load_runs(run_dir: Path) -> dict[int, dict]:
    """index -> stored result for every finished setting in ``run_dir`` (empty if none)."""
    out = {}
    for p in sorted(Path(run_dir).glob("setting_*.json")):
        r = json.loads(p.read_text())
        out[r["setting"]["index"]] = r
    return out
