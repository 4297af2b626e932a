"""Where a results file came from: commit, exact command, versions, threads, device and date.

Every study script writes its results JSON through :func:`write_json` (or puts
:func:`provenance` into each record it appends), so any committed number can be traced to the
command and the code that produced it::

    from benchmarks.common.provenance import write_json
    write_json(out / "results.json", results, device="cpu")

The record is a plain dict under the key ``"provenance"``::

    {"commit": "48e42db...", "dirty": false, "command": "python benchmarks/x/x.py --out ...",
     "python": "3.12.3", "torch": "2.13.0", "numpy": "2.3.1", "threads": 1,
     "device": "cpu (x86_64)", "date": "2026-12-06T22:10:12+00:00"}

``commit`` is ``null`` outside a git checkout; ``dirty`` says whether tracked files differed
from that commit (the numbers may then come from uncommitted code).
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["provenance", "write_json", "command_line"]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def command_line(argv: list[str] | None = None) -> str:
    """The command as a user would type it from the checkout root: ``python <script> <args>``.

    ``argv`` defaults to ``sys.argv``; a script path inside the checkout is written relative to it,
    so the line names no machine's folders.
    """
    argv = list(sys.argv if argv is None else argv)
    if argv:
        script = Path(argv[0])
        try:
            argv[0] = script.resolve().relative_to(ROOT).as_posix()
        except (ValueError, OSError):
            argv[0] = script.name
    return shlex.join(["python", *argv])


def _device_name(device: Any) -> str:
    name = str(device) if device is not None else "cpu"
    if name.startswith("cuda"):
        try:
            import torch

            return f"{name} ({torch.cuda.get_device_name(torch.device(name))})"
        except Exception:  # noqa: BLE001 - a record must not fail the run
            return name
    return f"{name} ({platform.machine() or 'unknown machine'})"


def provenance(device: Any = "cpu", argv: list[str] | None = None, threads: int | None = None) -> dict[str, Any]:
    """The provenance record of the running process.

    Args:
        device: the device the numbers were measured on (``"cpu"``, ``"cuda"``, a torch.device).
        argv: the command line (default ``sys.argv``), see :func:`command_line`.
        threads: intra-op threads; default ``torch.get_num_threads()`` at the time of the call.
    """
    import numpy
    import torch

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "commit": commit,
        "dirty": bool(status) if status is not None else None,
        "command": command_line(argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "threads": int(threads if threads is not None else torch.get_num_threads()),
        "device": _device_name(device),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(path: str | Path, data: dict[str, Any], *, device: Any = "cpu", indent: int | None = 2,
               **json_kwargs: Any) -> Path:
    """Write ``data`` as JSON with a ``"provenance"`` record first; returns the path.

    ``data`` must be a dict (a results file is an object, so the record has a key to live under);
    an existing ``"provenance"`` key in it is replaced.
    """
    if not isinstance(data, dict):
        raise TypeError(f"write_json needs a dict of results, got {type(data).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"provenance": provenance(device=device), **{k: v for k, v in data.items() if k != "provenance"}}
    path.write_text(json.dumps(record, indent=indent, **json_kwargs) + "\n")
    return path
