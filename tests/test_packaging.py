"""The built wheel carries the files the package reads at run time."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import zipfile
from pathlib import Path

import hf_distill
from hf_distill import model_card

REPO = Path(__file__).resolve().parents[1]


def _setuptools_is_recent() -> bool:
    try:
        major = int(importlib.metadata.version("setuptools").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return False
    return major >= 77  # pyproject.toml's build requirement


def test_wheel_ships_the_model_card_template(tmp_path):
    # Build with the environment's setuptools when it is recent enough (fast, offline); else let pip fetch one.
    isolation = ["--no-build-isolation"] if _setuptools_is_recent() else []
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", *isolation, "-q", "-w", tmp_path],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("hf_distill-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package_dir = Path(hf_distill.__file__).parent
    relative = model_card.DEFAULT_TEMPLATE.relative_to(package_dir.parent).as_posix()
    assert relative in names, f"{relative} missing from the wheel"
    assert model_card.template_path().read_text(encoding="utf-8") == (
        REPO / "model_cards" / Path(relative).name
    ).read_text(encoding="utf-8")
