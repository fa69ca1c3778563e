"""Inference speed and memory: the arithmetic on a fake clock, token counts, model size and the memory bound on
tiny random Llamas, and the report columns."""

from __future__ import annotations

import pytest
import torch

from hf_distill.evaluation import inference_speed as speed
from hf_distill.evaluation import markdown_table


class FakeClock:
    """Stands in for `perf_counter`: only the model's forward passes move it, by known amounts."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def with_fake_forward_times(model, clock: FakeClock, prefill_s: float, decode_s: float):
    """Each forward over more than one new position (the prefill) takes ``prefill_s``; each single-token
    forward (a decode step) ``decode_s``."""
    original = model.forward

    def forward(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        clock.now += prefill_s if ids.shape[1] > 1 else decode_s
        return original(*args, **kwargs)

    model.forward = forward
    return model


def test_speeds_follow_from_the_token_timestamps(tiny_llama, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(speed, "perf_counter", clock)
    model = with_fake_forward_times(tiny_llama(), clock, prefill_s=0.5, decode_s=0.125)
    prompts = [[5, 6, 7, 8, 9, 10, 11, 12], [7, 8, 9, 10, 11, 12, 13, 14]]
    result = speed.measure_inference_speed(model, prompts, new_tokens=6, repeats=2, warmup=1)
    assert result.time_to_first_token_s == pytest.approx(0.5)
    assert result.prefill_tokens_per_s == pytest.approx(8 / 0.5)  # 8 prompt tokens in the prefill
    assert result.decode_tokens_per_s == pytest.approx(1 / 0.125)  # 5 decode steps of 0.125 s
    assert (result.prompt_tokens, result.new_tokens) == (8, 6)


def test_generation_emits_exactly_the_requested_tokens_even_past_eos(tiny_llama):
    model = tiny_llama().eval()
    prompt = [5, 9, 13, 17]
    with torch.no_grad():
        first = int(model(torch.tensor([prompt])).logits[0, -1].argmax())
    model.generation_config.eos_token_id = first  # greedy decoding would stop at once without min_new_tokens
    timing = speed.time_generation(model, prompt, 7)
    assert timing.new_tokens == 7 and len(timing.token_times) == 7
    assert timing.start < timing.token_times[0] and timing.token_times == sorted(timing.token_times)


@pytest.mark.parametrize("tied", [False, True])
def test_model_size_is_the_parameter_bytes(tiny_llama, tied):
    model = tiny_llama(tie_word_embeddings=tied)
    config = model.config
    h, v, layers = config.hidden_size, config.vocab_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * config.intermediate_size + 2 * h  # q, o, k, v, MLP, 2 norms
    expected = 4 * (v * h * (1 if tied else 2) + layers * per_layer + h)  # embeddings (+ head), layers, final norm
    assert speed.parameter_bytes(model) == expected


def test_peak_memory_holds_the_weights_and_the_kv_cache(tiny_llama):
    model = tiny_llama(vocab_size=64, hidden_size=64, num_layers=3, num_heads=4, num_kv_heads=2).eval()
    prompt, new = list(range(3, 43)), 20
    peak = speed.generation_peak_bytes(model, prompt, new)
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    # Keys and values of every position but the last generated one, float32, for each layer.
    kv_cache = 2 * 3 * 2 * 16 * (len(prompt) + new - 1) * 4
    assert weights + kv_cache <= peak <= weights + 4 * kv_cache + 2 * len(prompt) * 64 * 64 * 4


def test_report_carries_the_speed_columns(tiny_llama):
    teacher, student = tiny_llama(hidden_size=64, seed=1), tiny_llama(seed=2)
    rows = speed.inference_speed_rows({"teacher": teacher, "KD student": student}, [[4, 5, 6, 7]], new_tokens=3)
    assert set(rows) == {"teacher", "KD student"} and all(set(row) == set(speed.SPEED_METRICS) for row in rows.values())
    assert rows["teacher"]["model_size_mb"] > rows["KD student"]["model_size_mb"]
    table = markdown_table({name: {"perplexity": 2.0, **row} for name, row in rows.items()})
    header = table.splitlines()[0]
    assert all(metric in header for metric in ("perplexity", *speed.SPEED_METRICS))


def test_bad_requests_are_refused(tiny_llama):
    model = tiny_llama()
    with pytest.raises(ValueError, match="prompt"):
        speed.measure_inference_speed(model, [])
    with pytest.raises(ValueError, match="new_tokens"):
        speed.measure_inference_speed(model, [[3, 4]], new_tokens=1)


def test_recipe_rows_gain_the_speed_columns_for_teacher_and_trained_students(tiny_llama):
    from types import SimpleNamespace

    from conftest import make_word_tokenizer

    from hf_distill.recipe.arguments import RecipeArguments
    from hf_distill.recipe.runner import BEFORE_ROW, KD_ROW, TEACHER_ROW, evaluate_rows, speed_note

    teacher, student = tiny_llama(hidden_size=64, seed=1), tiny_llama(seed=2)
    texts = {f"file{i}.py": " ".join(f"w{(7 * i + j) % 60 + 3}" for j in range(40)) for i in range(3)}
    run = SimpleNamespace(
        trainer=SimpleNamespace(teacher_model=teacher, accelerator=SimpleNamespace(unwrap_model=lambda m: m)),
        data=SimpleNamespace(eval_texts=texts),
        tokenizer=make_word_tokenizer(64),
    )
    recipe = RecipeArguments(inference_prompts=2, inference_prompt_tokens=12, inference_new_tokens=4)
    args = SimpleNamespace(max_length=32)
    rows = evaluate_rows(recipe, args, run, {BEFORE_ROW: student, KD_ROW: student})
    assert {"perplexity", *speed.SPEED_METRICS} <= set(rows[TEACHER_ROW])
    assert {"perplexity", "top1_agreement", *speed.SPEED_METRICS} <= set(rows[KD_ROW])
    assert not set(speed.SPEED_METRICS) & set(rows[BEFORE_ROW])  # the untrained student has the trained one's shapes
    assert "12-token prompts, 4 new tokens" in speed_note(recipe)
    off = evaluate_rows(RecipeArguments(), args, run, {KD_ROW: student})
    assert not set(speed.SPEED_METRICS) & set(off[KD_ROW]) and speed_note(RecipeArguments()) == ""
