"""The top-level `hf_distill` namespace: the names users rely on, loaded lazily; docs and examples use only it."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hf_distill

REPO = Path(__file__).resolve().parents[1]

# Where each kind of public name is defined (checked by identity, so a re-export cannot drift to a copy).
DEFINED_IN = {
    "KDTrainer": "hf_distill.trainers.kd_trainer",
    "KDConfig": "hf_distill.trainers.kd_config",
    "SeqKDTrainer": "hf_distill.trainers.seqkd_trainer",
    "SeqKDConfig": "hf_distill.trainers.seqkd_config",
    "FeatureKDTrainer": "hf_distill.trainers.feature_trainer",
    "FeatureKDConfig": "hf_distill.trainers.feature_config",
    "token_kd_loss": "hf_distill.losses.token_kd",
    "LogitSource": "hf_distill.losses.token_kd",
    "KDLossSpec": "hf_distill.losses.token_kd",
    "sparse_kd_loss": "hf_distill.losses.sparse_kd",
    "cross_vocab_loss": "hf_distill.losses.cross_vocab",
    "precompute_teacher_signal": "hf_distill.teachers.precompute",
    "load_teacher_signal": "hf_distill.teachers.precompute",
    "generate_teacher_completions": "hf_distill.teachers.generation.pipeline",
    "TeacherGenerationConfig": "hf_distill.teachers.generation.config",
    "build_layer_map": "hf_distill.features.layer_maps",
    "LayerMap": "hf_distill.features.layer_maps",
    "PassAtK": "hf_distill.evaluation.pass_at_k",
    "HeldOutPerplexity": "hf_distill.evaluation.perplexity",
    "TeacherStudentAgreement": "hf_distill.evaluation.agreement",
    "write_report": "hf_distill.evaluation.report",
    "ModelCardInfo": "hf_distill.model_card",
    "run_chain": "hf_distill.progressive.runner",
    "load_chain_spec": "hf_distill.progressive.spec",
    "StopRules": "hf_distill.progressive.stopping",
}


@pytest.mark.parametrize("name", sorted(DEFINED_IN))
def test_public_name_is_the_defining_modules_object(name):
    assert name in hf_distill.__all__
    assert getattr(hf_distill, name) is getattr(importlib.import_module(DEFINED_IN[name]), name)


def test_every_exported_name_resolves():
    missing = [name for name in hf_distill.__all__ if not hasattr(hf_distill, name)]
    assert not missing
    assert set(hf_distill.__all__) <= set(dir(hf_distill))


def test_unknown_names_and_submodules():
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        hf_distill.not_a_name  # noqa: B018
    assert hf_distill.losses is importlib.import_module("hf_distill.losses")


def test_importing_the_package_is_light():
    code = "import sys, hf_distill; print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"


def _documented_python() -> list[tuple[str, str]]:
    """(where, code) for each Python block of README.md and docs/*.md, and each example script."""
    blocks = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"```(?:python|py)\n(.*?)```", text, re.S):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((f"{path.relative_to(REPO)}:{line}", match.group(1)))
    blocks += [(str(p.relative_to(REPO)), p.read_text(encoding="utf-8")) for p in sorted(REPO.glob("examples/*.py"))]
    return blocks


def _non_public_imports(code: str) -> list[str]:
    bad = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hf_distill"):
            if node.module != "hf_distill":
                bad.append(f"from {node.module} import ...")
            bad += [f"hf_distill.{a.name} (not exported)" for a in node.names if a.name not in hf_distill.__all__]
        elif isinstance(node, ast.Import):
            bad += [f"import {a.name}" for a in node.names if a.name.startswith("hf_distill.")]
    return bad


def test_docs_and_examples_import_only_top_level_names():
    blocks = _documented_python()
    assert len(blocks) > 10  # the scan found the docs
    offenders = {where: bad for where, code in blocks if (bad := _non_public_imports(code))}
    assert not offenders, offenders


def test_the_docs_check_catches_deep_imports():
    assert _non_public_imports("from hf_distill.losses.token_kd import token_kd_loss") == [
        "from hf_distill.losses.token_kd import ..."
    ]
    assert _non_public_imports("from hf_distill import _EXPORTS") == ["hf_distill._EXPORTS (not exported)"]
    assert _non_public_imports("import hf_distill.trainers") == ["import hf_distill.trainers"]
    assert _non_public_imports("from hf_distill import KDTrainer") == []


_FRESH_IMPORTS = """
import importlib, pkgutil, sys, traceback
import torch, transformers, trl, datasets, peft  # heavy dependencies stay loaded between the fresh imports
import hf_distill
names = [m.name for m in pkgutil.walk_packages(hf_distill.__path__, "hf_distill.")]
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "hf_distill" or m.startswith("hf_distill.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print(len(names))
print("\\n".join(failed))
"""


def test_every_module_imports_first():
    """Each module imports in an interpreter where no other hf_distill module is loaded (no import cycles that
    only the usual `import hf_distill.trainers` order hides)."""
    result = subprocess.run([sys.executable, "-c", _FRESH_IMPORTS], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    count, *failed = result.stdout.strip().splitlines()
    assert int(count) > 50
    failed = [line for line in failed if line]
    assert not failed, "\n".join(failed)
