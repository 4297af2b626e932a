"""The package's metadata: an MIT licence shipped in the wheel, classifiers, keywords, a changelog,
and extras that pip and other installers resolve the same way."""

import shutil
import subprocess
import sys
import zipfile

import pytest
from packaging.requirements import Requirement

from markdown_blocks import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_licence_is_mit_and_shipped_as_a_file():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 gameopt developers" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND" in text
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    # PEP 639: a licence expression replaces the License :: classifiers (setuptools refuses both)
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]


def test_classifiers_keywords_and_changelog():
    classifiers = PROJECT["classifiers"]
    assert "Programming Language :: Python :: 3" in classifiers
    assert "Topic :: Scientific/Engineering :: Artificial Intelligence" in classifiers
    assert {"pytorch", "gan", "optimizer"} <= set(PROJECT["keywords"])
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog and f"## [{PROJECT['version']}]" in changelog


def test_no_extra_leaves_a_pre_release_to_the_installer():
    """A requirement that admits a pre-release names it exactly: pip would pick any pre-release when
    no final release exists (cyipopt-wheels has only 1.7.0.dev0), and uv refuses one unless it is named."""
    loose = []
    for extra, requirements in PROJECT["optional-dependencies"].items():
        for text in requirements:
            req = Requirement(text)
            if not req.specifier:
                loose.append(f"{extra}: {text} (no version range)")
            elif req.specifier.prereleases and [s.operator for s in req.specifier] != ["=="]:
                loose.append(f"{extra}: {text} (a pre-release range)")
    assert not loose, loose


def test_the_wheel_builds_without_warnings_and_holds_the_licence(tmp_path):
    """``pip wheel . --no-deps`` on a copy of the sources (with the installed setuptools, so offline)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "gameopt", src / "gameopt", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-v", "-w", str(tmp_path / "dist")],
        capture_output=True, text=True, cwd=src, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    log = result.stdout + result.stderr
    assert "DeprecationWarning" not in log and "SetuptoolsWarning" not in log, log
    (wheel,) = (tmp_path / "dist").glob("gameopt-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert "License-Expression: MIT" in metadata and "License-File: LICENSE" in metadata
    assert "Classifier: Programming Language :: Python :: 3" in metadata


@pytest.mark.parametrize("extra", ["ipopt"])
def test_the_installed_extra_satisfies_its_pin(extra):
    from importlib.metadata import PackageNotFoundError, version

    for text in PROJECT["optional-dependencies"][extra]:
        req = Requirement(text)
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            pytest.skip(f"{req.name} is not installed (pip install -e '.[{extra}]')")
        assert req.specifier.contains(installed, prereleases=True), (text, installed)
