"""Bad prompt datasets get clear errors before any generation; metadata records settings and teacher."""

from __future__ import annotations

import json

import pytest
from conftest import make_tiny_llama
from test_generation_tokenizer import char_tokenizer

from hf_distill.teachers.generation import generate_teacher_completions
from hf_distill.teachers.generation.config import TeacherGenerationConfig


@pytest.fixture(scope="module")
def teacher():
    return make_tiny_llama(seed=1)


def _run(teacher, tokenizer, rows, out, **config):
    return generate_teacher_completions(
        teacher, tokenizer, rows, out, TeacherGenerationConfig(max_new_tokens=4, **config), progress=False
    )


def test_missing_prompt_column(teacher, tmp_path):
    with pytest.raises(ValueError, match="needs a 'prompt' column.*'question'"):
        _run(teacher, char_tokenizer(), [{"question": "hi"}], tmp_path)


def test_custom_prompt_column(teacher, tmp_path):
    result = _run(teacher, char_tokenizer(), [{"question": "hi"}], tmp_path, prompt_column="question")
    assert result["question"] == ["hi"] and len(result["completion"]) == 1


@pytest.mark.parametrize("bad", ["", "   "])
def test_empty_prompt(teacher, tmp_path, bad):
    with pytest.raises(ValueError, match="row 1: empty prompt"):
        _run(teacher, char_tokenizer(), [{"prompt": "ok"}, {"prompt": bad}], tmp_path)


def test_empty_dataset(teacher, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        _run(teacher, char_tokenizer(), [], tmp_path)


def test_prompt_longer_than_teacher_context(teacher, tmp_path):
    context = teacher.config.max_position_embeddings
    rows = [{"prompt": "ok"}, {"prompt": "a" * (context + 5)}]
    with pytest.raises(ValueError, match=f"row 1: prompt has {context + 6} tokens.*context of {context}"):
        _run(teacher, char_tokenizer(), rows, tmp_path)
    # A prompt that fits alone but leaves no room for max_new_tokens is refused too.
    with pytest.raises(ValueError, match="max_new_tokens=4"):
        _run(teacher, char_tokenizer(), [{"prompt": "a" * (context - 3)}], tmp_path)
    assert not (tmp_path / "shards").exists() or not any((tmp_path / "shards").iterdir())


def test_messages_without_chat_template(teacher, tmp_path):
    rows = [{"messages": [{"role": "user", "content": "hi"}]}]
    with pytest.raises(ValueError, match="chat template"):
        _run(teacher, char_tokenizer(chat_template=None), rows, tmp_path)


def test_bad_conversations(teacher, tmp_path):
    tok = char_tokenizer()
    with pytest.raises(ValueError, match="non-empty list of messages"):
        _run(teacher, tok, [{"messages": []}], tmp_path)
    with pytest.raises(ValueError, match="ends with an assistant turn"):
        _run(
            teacher,
            tok,
            [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
            tmp_path,
        )
    with pytest.raises(ValueError, match="all messages are empty"):
        _run(teacher, tok, [{"messages": [{"role": "user", "content": " "}]}], tmp_path)


def test_column_the_pipeline_would_overwrite(teacher, tmp_path):
    with pytest.raises(ValueError, match="already has column.*completion.*reference"):
        _run(teacher, char_tokenizer(), [{"prompt": "q", "completion": "gold"}], tmp_path)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"strategy": "greedy", "num_samples": 2}, "greedy decoding yields one candidate"),
        ({"strategy": "beam", "num_beams": 2, "num_samples": 3}, "at most num_beams"),
        ({"strategy": "nucleus"}, "strategy must be one of"),
        ({"selection": "best"}, "selection must be one of"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop_sequences": [""]}, "stop_sequences"),
    ],
)
def test_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        TeacherGenerationConfig(**settings)


def test_vllm_backend_needs_vllm_and_a_model_name(teacher, tmp_path):
    with pytest.raises((ImportError, ValueError), match="vllm|model name"):
        _run("some/model", char_tokenizer(), [{"prompt": "q"}], tmp_path, backend="vllm")
    with pytest.raises(ValueError, match="model name or path"):
        _run(teacher, char_tokenizer(), [{"prompt": "q"}], tmp_path, backend="vllm")


def test_metadata_records_settings_and_teacher_and_refuses_other_settings(teacher, tmp_path):
    tok = char_tokenizer()
    _run(teacher, tok, [{"prompt": "q"}], tmp_path, stop_sequences=["\n"])
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["generation"]["strategy"] == "greedy"
    assert meta["generation"]["max_new_tokens"] == 4
    assert meta["generation"]["stop_sequences"] == ["\n"]
    assert meta["teacher"]["class"] == "LlamaForCausalLM"
    assert meta["teacher"]["num_parameters"] == sum(p.numel() for p in teacher.parameters())
    assert meta["teacher"]["tokenizer"]["vocab_size"] == 64
    assert meta["prompt_format"] == {"column": "prompt", "conversational": False}
    other_teacher = make_tiny_llama(seed=2)
    with pytest.raises(ValueError, match="different metadata"):
        _run(other_teacher, tok, [{"prompt": "q"}], tmp_path, stop_sequences=["\n"])
    with pytest.raises(ValueError, match="different metadata"):
        _run(teacher, tok, [{"prompt": "q"}], tmp_path, stop_sequences=["\n"], temperature=0.5)
