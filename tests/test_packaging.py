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
    package_dir = Path(hf_distill.__file__).parent
    relative = model_card.DEFAULT_TEMPLATE.relative_to(package_dir.parent).as_posix()
    with zipfile.ZipFile(wheel) as archive:
        assert relative in archive.namelist(), f"{relative} missing from the wheel"
        shipped = archive.read(relative).decode("utf-8")
    assert shipped == (REPO / relative).read_text(encoding="utf-8")
    assert "$model_name" in shipped  # the template itself, not a link target path or a stub


def test_package_has_no_symbolic_links():
    # A link inside the package breaks on Windows checkouts (git writes it as a small text file).
    links = [str(p.relative_to(REPO)) for p in (REPO / "hf_distill").rglob("*") if p.is_symlink()]
    assert not links, f"symbolic links in the package: {links}"


def test_top_level_model_cards_readme_points_to_the_template():
    readme = (REPO / "model_cards" / "README.md").read_text(encoding="utf-8")
    relative = model_card.DEFAULT_TEMPLATE.relative_to(REPO).as_posix()
    assert relative in readme
    assert sorted(p.name for p in (REPO / "model_cards").iterdir()) == ["README.md"]  # no second copy
