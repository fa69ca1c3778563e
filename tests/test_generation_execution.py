"""The execution filter keeps completions that pass their unit tests and contains the ones that misbehave."""

from __future__ import annotations

import pytest
from conftest import make_tiny_llama
from test_generation_tokenizer import char_tokenizer

from hf_distill.sandbox import CodeExecutionNotAllowedError
from hf_distill.teachers.generation import generate_teacher_completions
from hf_distill.teachers.generation.config import TeacherGenerationConfig
from hf_distill.teachers.generation.execution import UnitTestExecutionCheck, extract_code
from hf_distill.teachers.generation.selection import Candidate, select_candidates

ROW = {
    "prompt": 'def add(a, b):\n    """Return a + b."""\n',
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}
CORRECT = "    return a + b\n"
WRONG = "    return a - b\n"
LOOPS = "    while True:\n        pass\n"
SHELL = "    import os\n    os.system('echo pwned > /tmp/hf_distill_pwned')\n    return a + b\n"


@pytest.fixture
def check():
    return UnitTestExecutionCheck(timeout=3.0, memory_mb=256, allow_code_execution=True)


def _candidate(text: str, index: int) -> Candidate:
    return Candidate(text=text, token_ids=list(range(len(text))), finished=True, sample_index=index)


def test_keeps_the_correct_completion_and_rejects_the_wrong_one(check):
    config = TeacherGenerationConfig(strategy="sample", num_samples=2, selection="all")
    kept = select_candidates([_candidate(WRONG, 0), _candidate(CORRECT, 1)], config, ROW, execution_check=check)
    assert [c.text for c in kept] == [CORRECT]
    assert kept[0].passed is True


def test_first_selection_returns_the_first_passing_candidate(check):
    config = TeacherGenerationConfig(strategy="sample", num_samples=3, selection="first")
    candidates = [_candidate(WRONG, 0), _candidate(CORRECT, 1), _candidate(CORRECT + "\n", 2)]
    kept = select_candidates(candidates, config, ROW, execution_check=check)
    assert [c.sample_index for c in kept] == [1]
    assert candidates[0].passed is False
    assert candidates[2].passed is None  # not executed: the selection was already decided


def test_infinite_loop_is_contained_and_reported_failed(check):
    result = check(ROW, LOOPS)
    assert result.passed is False and result.status == "timeout"


def test_os_system_is_blocked_and_reported_failed(check, tmp_path):
    result = check(ROW, SHELL)
    assert result.passed is False
    assert "os.system" in result.detail


def test_chat_style_answer_with_a_code_block(check):
    answer = "Here you go:\n```python\ndef add(a, b):\n    return b + a\n```\nDone."
    assert extract_code(answer) == "def add(a, b):\n    return b + a\n"
    assert check(ROW, answer).passed is True
    assert check(ROW, "```python\ndef add(a, b):\n    return 0\n```").passed is False
    # An answer cut by max_new_tokens inside its code block: the block runs to the end of the text.
    assert extract_code("```python\ndef add(a, b):\n    return a + b\n") == "def add(a, b):\n    return a + b\n"


def test_execution_needs_explicit_opt_in(monkeypatch):
    monkeypatch.delenv("HF_DISTILL_ALLOW_CODE_EXECUTION", raising=False)
    with pytest.raises(CodeExecutionNotAllowedError):
        UnitTestExecutionCheck()


def test_missing_test_column_is_a_clear_error(check):
    with pytest.raises(ValueError, match="'test' column"):
        check({"prompt": "x"}, "y")


def test_pipeline_keeps_only_completions_that_pass_the_check(tmp_path):
    """Any callable check works; here one that accepts completions containing a vowel."""
    teacher, tok = make_tiny_llama(seed=5), char_tokenizer()
    prompts = [{"prompt": p} for p in ["abc", "x = 1", "hello", "q"]]
    config = TeacherGenerationConfig(strategy="sample", num_samples=4, max_new_tokens=5, selection="all", seed=2)
    everything = generate_teacher_completions(teacher, tok, prompts, tmp_path / "all", config, progress=False)

    def has_vowel(row, completion):
        return any(v in completion for v in "aeiou")

    checked = generate_teacher_completions(
        teacher, tok, prompts, tmp_path / "checked", config, execution_check=has_vowel, progress=False
    )
    expected = [(r["prompt_index"], r["sample_index"]) for r in everything if has_vowel(r, r["completion"])]
    assert 0 < len(expected) < len(everything), "the test needs candidates on both sides of the check"
    assert list(zip(checked["prompt_index"], checked["sample_index"])) == expected
    assert set(checked["passed"]) == {True}
