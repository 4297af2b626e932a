"""Every public name has a docstring that names its arguments and the errors it raises.

What "public" means and what each check looks for is in ``docs/_ext/public_api.py`` (the docs build
uses the same walk to write the API pages). Shapes, sign conventions and defaults cannot be checked
by a program; reviews do that, with the arguments' section this test insists on as the place.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "_ext"))

import public_api  # noqa: E402


def _describe(name: str, failed: set[str], items: dict[str, public_api.PublicObject]) -> str:
    item = items[name]
    why = []
    if "docstring" in failed:
        why.append("no docstring")
    if "args" in failed:
        why.append(f"arguments not mentioned: {', '.join(public_api.missing_parameters(item))}")
    if "raises" in failed:
        why.append("raises an exception its docstring does not name (add a Raises: section)")
    return f"{name}: {'; '.join(why)}"


def test_every_public_name_is_documented():
    items = {item.qualname: item for item in public_api.public_objects()}
    gaps = public_api.all_problems()
    assert not gaps, "public names whose docstrings are incomplete:\n" + "\n".join(
        _describe(name, failed, items) for name, failed in sorted(gaps.items())
    )


def test_public_api_walk_finds_the_names_users_import():
    names = {item.qualname for item in public_api.public_objects()}
    for expected in ("gameopt.ConsensusOptimizer", "gameopt.ConsensusOptimizer.backward",
                     "gameopt.GameOptimizer.state_dict", "gameopt.images.mode_kl",
                     "gameopt.solvers.solve_linear_dual", "gameopt.toy_games.mixture_metrics",
                     "gameopt.primal_dual.StepBandwidth.__call__", "gameopt.CompetitiveOptimizer",
                     "gameopt.ExtragradientOptimizer.step", "gameopt.LookaheadMinmax.load_state_dict",
                     "gameopt.dual.LinearisedTrustRegion", "gameopt.frameworks.through_wrappers",
                     "gameopt.game_optimizer.SharedState"):
        assert expected in names
    # a module's __all__ keeps its implementation details (per-optimiser state records) out
    for internal in ("gameopt.consensus.ConsensusState", "gameopt.field.FieldState",
                     "gameopt.competitive.nash.flatten", "gameopt.lookahead.LookaheadState"):
        assert internal not in names
    # each object once, under the shortest path users import it from
    assert "gameopt.consensus.ConsensusOptimizer" not in names
    assert not any(part.startswith("_") for name in names for part in name.split(".")[:-1])


def test_api_index_places_every_public_module():
    """docs/api/index.md lists each module's generated page in a section (and no stale ones)."""
    index = (Path(__file__).resolve().parents[1] / "docs" / "api" / "index.md").read_text()
    listed = set(re.findall(r"^generated/(\S+)$", index, flags=re.M))
    modules = {m.__name__ for m in public_api.public_modules()}
    assert not modules - listed, f"add these modules to a section of docs/api/index.md: {sorted(modules - listed)}"
    assert not listed - modules, f"docs/api/index.md lists modules that are gone: {sorted(listed - modules)}"


# The checker itself, on objects made to fail each check.

def _undocumented(x):
    return x


def _half_documented(x, scale=1.0):
    """Returns ``x``, scaled."""
    return x * scale


def _raises_silently(x):
    """Returns ``x`` when it is positive."""
    if x <= 0:
        raise ValueError("x must be positive")
    return x


def _raises_documented(x):
    """Returns ``x`` when it is positive.

    Raises:
        ValueError: ``x`` is not positive.
    """
    if x <= 0:
        raise ValueError("x must be positive")
    return x


class _Model:
    """A model whose constructor argument is not mentioned."""

    def __init__(self, width: int) -> None:
        self.width = width

    def forward(self, x):
        return x


@pytest.mark.parametrize(
    "obj, owner, expected",
    [
        (_undocumented, None, {"docstring"}),
        (_half_documented, None, {"args"}),
        (_raises_silently, None, {"raises"}),
        (_raises_documented, None, set()),
        (_Model, None, {"args"}),
        (_Model.forward, _Model, {"docstring"}),  # owner given: a method
    ],
)
def test_checker_fails_what_it_should(obj, owner, expected):
    name = f"x.{obj.__name__}"
    assert public_api.problems(public_api.PublicObject(name, obj, owner)) == expected
