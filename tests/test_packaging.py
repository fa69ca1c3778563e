"""The built wheel carries the files the package reads at run time."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
import zipfile
from pathlib import Path

import hf_distill
from hf_distill import _version, model_card

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
    assert wheel.name.startswith(f"hf_distill-{_version.__version__}-")  # pyproject reads hf_distill/_version.py
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


def _root_imports(path: Path) -> list[str]:
    """Imports in ``path`` (a module inside hf_distill) that take names from the package root itself."""
    package_dir = REPO / "hf_distill"
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    package = parts[:-1]  # a module's own package; for an __init__.py, the package it defines
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name == "hf_distill"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + tuple(node.module.split(".") if node.module else ()))
            else:
                target = node.module or ""
            if target == "hf_distill":
                submodules = {p.stem for p in package_dir.iterdir() if p.suffix == ".py" or p.is_dir()}
                found += [f"from {target} import {a.name}" for a in node.names if a.name not in submodules]
    return found


def test_no_submodule_imports_the_package_root():
    # The root imports the trainers; a submodule reading a name from the root would make a cycle.
    offenders = {
        str(path.relative_to(REPO)): imports
        for path in (REPO / "hf_distill").rglob("*.py")
        if path != REPO / "hf_distill" / "__init__.py" and (imports := _root_imports(path))
    }
    assert not offenders, offenders
    assert hf_distill.__version__ == _version.__version__
