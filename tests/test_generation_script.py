"""`hf-distill generate` and scripts/generate_teacher_completions.py: a local teacher and a JSONL prompt file in,
completions out."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import make_tiny_llama
from test_generation_tokenizer import char_tokenizer

from hf_distill.cli import main as hf_distill_cli
from hf_distill.teachers.generation import generate_teacher_completions
from hf_distill.teachers.generation.config import TeacherGenerationConfig
from hf_distill.teachers.resumable import load_sharded

SCRIPT = Path(__file__).parents[1] / "scripts" / "generate_teacher_completions.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("generate_teacher_completions", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("entry", ["script", "cli"])
def test_script_matches_the_function(tmp_path, capsys, entry):
    teacher, tok = make_tiny_llama(seed=6), char_tokenizer()
    teacher.save_pretrained(tmp_path / "teacher")
    tok.save_pretrained(tmp_path / "teacher")
    prompts = [{"question": q} for q in ["abc", "def g(x):", "hi there"]]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))

    argv = [
        "--teacher",
        str(tmp_path / "teacher"),
        "--dataset",
        str(tmp_path / "prompts.jsonl"),
        "--out",
        str(tmp_path / "out"),
        "--prompt-column",
        "question",
        "--strategy",
        "sample",
        "--num-samples",
        "2",
        "--selection",
        "loglik",
        "--max-new-tokens",
        "6",
        "--stop",
        "\\n",
        "--seed",
        "3",
        "--no-progress",
        "--limit",
        "2",
        "--dtype",
        "float32",
    ]
    if entry == "script":
        assert _load_script().main(argv) == 0
    else:
        assert hf_distill_cli(["generate", *argv]) == 0
    assert "for 2/2 prompts" in capsys.readouterr().out

    expected = generate_teacher_completions(
        teacher,
        tok,
        prompts[:2],
        tmp_path / "direct",
        TeacherGenerationConfig(
            strategy="sample",
            num_samples=2,
            selection="loglik",
            max_new_tokens=6,
            stop_sequences=["\n"],
            seed=3,
            prompt_column="question",
        ),
        progress=False,
    )
    written = load_sharded(tmp_path / "out")
    assert written["completion"] == expected["completion"]
    assert all("\n" not in c for c in written["completion"])
