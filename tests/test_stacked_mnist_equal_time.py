"""The equal-wall-time reading of the standard-size stacked-MNIST grid (benchmarks/stacked_mnist/equal_time.py)."""

import json

import pytest

from benchmarks.stacked_mnist import equal_time as et


def _run(root, players, name, method, seed, points, steps=12000):
    d = root / f"{players}_{name}_s{seed}"
    d.mkdir(parents=True)
    history = [{"step": s, "agreed_strict_modes": v, "frechet_distance": 100.0 - v} for s, v in points]
    d.joinpath("metrics.json").write_text(json.dumps(
        {"settings": {"model": players, "method": method, "seed": seed, "steps": steps}, "history": history}))
    return d


def _cost(path, model, ms, reference="altga", steps=12000):
    path.write_text(json.dumps({"model": model, "reference": reference, "reference_steps": steps,
                                "methods": {m: {"ms_per_step": v} for m, v in ms.items()}}))
    return path


def test_a_costlier_method_is_read_at_its_share_of_the_budget_between_two_evaluations(tmp_path):
    runs = tmp_path / "runs"
    points = [(0, 0), (2000, 10), (4000, 30), (6000, 50), (8000, 60), (10000, 70), (12000, 80)]
    _run(runs, "p", "altga", "altga", 0, points)
    _run(runs, "p", "consensus", "consensus", 0, points)
    _run(runs, "p", "simga", "simga", 0, points)
    _run(runs, "p", "consensus-gamma0.1", "consensus", 0, points[:2], steps=2000)   # a probe: left out
    cost = _cost(tmp_path / "cost.json", "p", {"altga": 100.0, "consensus": 240.0, "simga": 50.0})
    record = et.main([str(cost), "--runs", str(runs), "--out", str(tmp_path / "out")])
    rows = {r["name"]: r for r in record["rows"]}
    assert set(rows) == {"altga", "consensus", "simga"}
    c = rows["consensus"]
    assert c["read_at_step"] == pytest.approx(5000)       # 12000 * 100 / 240
    assert c["agreed_strict_modes"] == pytest.approx(40)  # half way from 30 (4000) to 50 (6000)
    assert c["frechet_distance"] == pytest.approx(60)
    assert c["agreed_strict_modes_between"] == [[4000, 30], [6000, 50]]
    assert c["equal_steps_agreed_strict_modes"] == 80 and c["used_its_budget"]
    assert rows["altga"]["agreed_strict_modes"] == 80
    s = rows["simga"]                                       # cheaper: its run ends before its budget
    assert s["budget_steps"] == pytest.approx(24000) and s["read_at_step"] == 12000 and not s["used_its_budget"]
    assert "run ended before its budget" in (tmp_path / "out" / "equal_time.md").read_text()


def test_seeds_are_summarised_per_method(tmp_path):
    runs = tmp_path / "runs"
    for seed, top in ((0, 80), (1, 100)):
        _run(runs, "p", "altga", "altga", seed, [(0, 0), (12000, top)])
    cost = _cost(tmp_path / "cost.json", "p", {"altga": 100.0})
    (g,) = et.main([str(cost), "--runs", str(runs), "--out", str(tmp_path / "out")])["groups"]
    assert g["seeds"] == [0, 1] and g["agreed_strict_modes"]["mean"] == 90
    assert g["agreed_strict_modes"]["sd"] == pytest.approx(14.142, abs=1e-3)


def test_step_costs_with_different_references_are_refused(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "p", "altga", "altga", 0, [(0, 0), (12000, 5)])
    a = _cost(tmp_path / "a.json", "p", {"altga": 100.0})
    b = _cost(tmp_path / "b.json", "q", {"consensus": 100.0}, reference="consensus")
    with pytest.raises(SystemExit, match="disagree on the reference"):
        et.main([str(a), str(b), "--runs", str(runs), "--out", str(tmp_path / "out")])


def test_a_run_with_another_discriminator_width_needs_its_own_step_cost(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "p", "altga", "altga", 0, [(0, 0), (12000, 5)])
    narrow = _run(runs, "p", "altga-dwidth16", "altga", 0, [(0, 0), (12000, 9)])
    record = json.loads((narrow / "metrics.json").read_text())
    record["settings"]["d_width"] = 16
    (narrow / "metrics.json").write_text(json.dumps(record))
    cost = _cost(tmp_path / "cost.json", "p", {"altga": 100.0})
    rows = et.main([str(cost), "--runs", str(runs), "--out", str(tmp_path / "out")])["rows"]
    assert [r["name"] for r in rows] == ["altga"]   # timed on the full-width D only
    narrow_cost = json.loads(cost.read_text()) | {"runner_args": ["--model", "p", "--d-width", "16"]}
    (tmp_path / "narrow.json").write_text(json.dumps(narrow_cost))
    rows = et.main([str(tmp_path / "narrow.json"), "--runs", str(runs), "--out", str(tmp_path / "out")])["rows"]
    assert [r["name"] for r in rows] == ["altga-dwidth16"]


def test_a_metric_an_older_run_lacks_is_summarised_over_the_seeds_that_have_it(tmp_path):
    runs = tmp_path / "runs"
    old = _run(runs, "p", "altga", "altga", 0, [(0, 0), (12000, 0)])
    record = json.loads((old / "metrics.json").read_text())
    for h in record["history"]:
        del h["agreed_strict_modes"]        # evaluated before strict metrics existed
    (old / "metrics.json").write_text(json.dumps(record))
    for seed, top in ((1, 100), (2, 120)):
        _run(runs, "p", "altga", "altga", seed, [(0, 0), (12000, top)])
    cost = _cost(tmp_path / "cost.json", "p", {"altga": 100.0})
    (g,) = et.main([str(cost), "--runs", str(runs), "--out", str(tmp_path / "out")])["groups"]
    assert g["seeds"] == [0, 1, 2] and g["agreed_strict_modes"]["seeds"] == [1, 2]
    assert g["agreed_strict_modes"]["mean"] == 110 and g["frechet_distance"]["seeds"] == [0, 1, 2]
    assert "110 +- 14 (seeds 1,2)" in (tmp_path / "out" / "equal_time.md").read_text()


def test_a_variant_that_changes_the_steps_cost_needs_its_own_timing(tmp_path):
    # AltGA with --gen-steps 2 evaluates the losses three times a round, not twice: costing it as
    # plain AltGA (as the first reading did) put it at AltGA's budget
    runs = tmp_path / "runs"
    points = [(0, 0), (6000, 60), (12000, 120)]
    _run(runs, "p", "altga", "altga", 0, points)
    d = _run(runs, "p", "altga-g2", "altga", 1, points)
    record = json.loads(d.joinpath("metrics.json").read_text())
    record["settings"]["gen_steps"] = 2
    d.joinpath("metrics.json").write_text(json.dumps(record))
    untimed = _cost(tmp_path / "cost.json", "p", {"altga": 100.0})
    rows = {r["name"] for r in et.main([str(untimed), "--runs", str(runs), "--out", str(tmp_path / "a")])["rows"]}
    assert rows == {"altga"}                                  # left out, not costed as altga
    timed = _cost(tmp_path / "cost2.json", "p", {"altga": 100.0, "altga-g2": 150.0})
    rows = {r["name"]: r for r in et.main([str(timed), "--runs", str(runs), "--out", str(tmp_path / "b")])["rows"]}
    assert rows["altga-g2"]["read_at_step"] == pytest.approx(8000)
    assert rows["altga-g2"]["agreed_strict_modes"] == pytest.approx(80)


def test_groups_of_narrower_discriminators_come_after_the_full_width_ones(tmp_path):
    """Timing a narrower D later must not renumber the groups the docs already quote."""
    runs = tmp_path / "runs"
    for name in ("altga", "consensus"):
        _run(runs, "p", name, name, 0, [(0, 0), (12000, 5)])
    narrow = _run(runs, "p", "altga-dwidth32", "altga", 0, [(0, 0), (12000, 9)])  # sorts before "altga_s0"
    record = json.loads((narrow / "metrics.json").read_text())
    record["settings"]["d_width"] = 32
    (narrow / "metrics.json").write_text(json.dumps(record))
    full = _cost(tmp_path / "full.json", "p", {"altga": 100.0, "consensus": 250.0})
    narrow_cost = json.loads(full.read_text()) | {"runner_args": ["--model", "p", "--d-width", "32"]}
    (tmp_path / "narrow.json").write_text(json.dumps(narrow_cost))
    before = et.main([str(full), "--runs", str(runs), "--out", str(tmp_path / "a")])["groups"]
    after = et.main([str(full), str(tmp_path / "narrow.json"), "--runs", str(runs), "--out", str(tmp_path / "b")])["groups"]
    assert [g["name"] for g in before] == ["altga", "consensus"]
    assert [g["name"] for g in after] == ["altga", "consensus", "altga-dwidth32"]
