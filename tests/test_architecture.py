"""The package layers (pyproject.toml [tool.importlinter]) hold, and the contract really catches an upward
import: a copy of the packages with core importing the serving app fails `lint-imports`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT

pytestmark = pytest.mark.unit

PACKAGES = ("core", "onlinestore", "eventlog", "pipelines", "validations", "training", "serving", "catalog", "streaming", "monitoring",
            "assets", "featurestack")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root)})


def test_the_layers_hold():
    result = _lint(PROJECT_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    for package in PACKAGES:
        shutil.copytree(PROJECT_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path)
    settings = tmp_path / "core" / "settings.py"
    settings.write_text(settings.read_text() + "\n\ndef _upward():\n    import serving.app  # noqa: F401\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "core.settings -> serving.app" in result.stdout, result.stdout
