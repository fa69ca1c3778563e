"""The estimator against the seeds' worked figures, independent counts (real parameter counts, autograd's saved
tensors, PEFT's adapter count, BENCHMARKS.md's measured bytes per token) and its command line."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_distill.cli import main as cli_main
from hf_distill.estimate import (
    EstimateArguments,
    MemorySetup,
    accelerator,
    cost_usd,
    distillation_flops,
    estimate_distillation,
    format_estimate,
    memory_plan,
    offline_bytes_per_token,
    resolve_model_shape,
    training_hours,
)
from hf_distill.estimate.memory import activation_elements_per_token, lora_params, teacher_weight_bytes
from hf_distill.estimate.model_shape import parse_param_count, shape_from_config

TINY = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=176,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)
# Llama-3-8B's published shape, written out so no download is needed.
LLAMA3_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=8192,
)


# ---- seed 003: FLOPs of distilling 8B from 70B on 20B tokens, against pretraining the 8B on 2T tokens


def test_seed_003_flops_example():
    budget = distillation_flops(70e9, 8e9, 20e9, pretraining_tokens=2e12)
    assert budget.total == pytest.approx((2 * 70e9 + 6 * 8e9) * 20e9)  # 3.76e21, not the seed's printed 2.96e21
    assert budget.total == pytest.approx(3.76e21)
    assert budget.pretraining == pytest.approx(9.6e22)
    assert f"{budget.ratio_to_pretraining:.1%}" == "3.9%"


def test_seed_003_example_through_the_command_line(capsys):
    cli_main(["estimate", "--teacher", "70B", "--student", "8e9", "--tokens", "20e9", "--seq_len", "2048"])
    out = capsys.readouterr().out
    assert "3.760e+21" in out and "9.600e+22" in out and "3.9% of it" in out


def test_offline_teacher_runs_once_and_is_amortised_over_epochs():
    online = distillation_flops(70e9, 8e9, 1e9, epochs=3)
    offline = distillation_flops(70e9, 8e9, 1e9, epochs=3, mode="offline_topk")
    assert online.teacher == pytest.approx(3 * 2 * 70e9 * 1e9) and online.precompute == 0
    assert offline.teacher == 0 and offline.precompute == pytest.approx(2 * 70e9 * 1e9)
    assert offline.precompute_per_epoch(3) == pytest.approx(2 * 70e9 * 1e9 / 3)
    assert offline.student == online.student == pytest.approx(3 * 6 * 8e9 * 1e9)


def test_seqkd_counts_generation_and_trains_on_prompt_plus_completions():
    # 1,000 prompts of 100 tokens, 4 completions of 50 tokens each.
    budget = distillation_flops(10e9, 1e9, 100_000, mode="seqkd", seq_len=100, seqkd_num_samples=4,
                                seqkd_generation_length=50)  # fmt: skip
    trained = 1000 * 4 * (100 + 50)
    assert budget.generation == pytest.approx(2 * 10e9 * trained)
    assert budget.student == pytest.approx(6 * 1e9 * trained)


# ---- seed 003: a 70B teacher's weights


def test_seed_003_teacher_memory_fp16_and_int4():
    teacher = resolve_model_shape("70B")
    assert teacher.params == 70e9
    assert teacher_weight_bytes(teacher, "fp16") == pytest.approx(140e9)
    assert teacher_weight_bytes(teacher, "int4") == pytest.approx(35e9)
    # NF4 adds its double-quantised block scales: 8 bits per 64 weights + 32 bits per 256 blocks.
    assert teacher_weight_bytes(teacher, "nf4") == pytest.approx(70e9 * (4 + 0.125 + 0.125 / 64) / 8)


def test_nf4_keeps_embeddings_and_head_in_16_bits_when_the_shape_is_known():
    shape = shape_from_config(LlamaConfig(**LLAMA3_8B), "llama3-8b")
    embeddings = 2 * LLAMA3_8B["vocab_size"] * LLAMA3_8B["hidden_size"]  # untied input and output
    expected = (shape.params - embeddings) * 4.127 / 8 + embeddings * 2
    assert teacher_weight_bytes(shape, "nf4") == pytest.approx(expected, rel=1e-3)


# ---- seed 000: cost tables (devices x hours x price)


def test_seed_000_cost_arithmetic():
    assert cost_usd(8, 120, 2.0) == pytest.approx(1920)
    assert cost_usd(128, 500, 2.0) == pytest.approx(128_000)


def test_hours_come_from_flops_at_the_stated_mfu():
    a100 = accelerator("a100-80gb")
    flops = 8 * 312e12 * 0.4 * 3600 * 120  # what 8 A100s at 40% of peak do in 120 hours
    assert training_hours(flops, a100, 8, 0.4) == pytest.approx(120)
    assert training_hours(flops, a100, 8, 0.2) == pytest.approx(240)
    assert accelerator("a100-80gb", price_per_hour=1.5).price_per_hour == 1.5
    with pytest.raises(ValueError, match="price_per_hour"):
        accelerator("tpu-v9")
    with pytest.raises(ValueError, match="mfu"):
        training_hours(flops, a100, 8, 0.0)


# ---- model shapes


@pytest.mark.parametrize("text, value", [("70e9", 70e9), ("70B", 70e9), ("1.5b", 1.5e9), ("135M", 135e6)])
def test_parameter_counts_parse(text, value):
    assert parse_param_count(text) == pytest.approx(value)


@pytest.mark.parametrize("tied", [False, True])
def test_config_parameter_count_equals_the_real_model(tied, tmp_path):
    config = LlamaConfig(**TINY, tie_word_embeddings=tied)
    real = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    config.save_pretrained(tmp_path)
    for spec in (str(tmp_path), str(tmp_path / "config.json"), config):
        assert resolve_model_shape(spec).params == real


def test_unreadable_model_names_the_alternatives(tmp_path):
    with pytest.raises(ValueError, match="parameter count"):
        resolve_model_shape(str(tmp_path / "missing"), "teacher")


# ---- memory components


def test_activations_match_the_tensors_autograd_saves():
    """Bytes of the non-parameter tensors saved for backward by a real Llama forward (SDPA), unique storages."""
    config = LlamaConfig(**TINY, attn_implementation="sdpa")
    model = LlamaForCausalLM(config)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    batch, seq = 2, 96
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model.model(input_ids=torch.randint(0, TINY["vocab_size"], (batch, seq)))
    tokens = batch * seq
    measured = sum(size for size in saved.values() if size >= tokens * 4)  # per-token tensors, not scalars
    estimated = activation_elements_per_token(shape_from_config(config, "tiny"), seq, "sdpa", False) * tokens * 4
    assert estimated == pytest.approx(measured, rel=0.03)


def test_lora_adapter_count_equals_peft():
    from peft import LoraConfig, get_peft_model

    config = LlamaConfig(**TINY)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=8, target_modules=targets))
    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert lora_params(shape_from_config(config, "tiny"), 8) == trainable


def test_full_adamw_is_16_bytes_per_parameter_and_zero3_divides_it():
    student = resolve_model_shape("1B")
    setup = MemorySetup(student=student, teacher=None, student_dtype="fp32", mode="offline_topk")
    plan = memory_plan(setup)
    per_param = (
        plan.static["student weights"] + plan.static["optimizer states"] + plan.phases[plan.peak_phase]["gradients"]
    )
    assert per_param == pytest.approx(16 * 1e9)
    zero3 = memory_plan(setup, "zero3", 8)
    assert zero3.static["optimizer states"] == pytest.approx(plan.static["optimizer states"] / 8)
    assert memory_plan(dataclasses.replace(setup, optimizer="adamw_8bit")).static["optimizer states"] == 2e9


def test_checkpointing_keeps_only_layer_inputs_plus_one_layer():
    shape = shape_from_config(LlamaConfig(**LLAMA3_8B), "llama3-8b")
    full = activation_elements_per_token(shape, 2048, "sdpa", False)
    ckpt = activation_elements_per_token(shape, 2048, "sdpa", True)
    per_layer = (full - 3 * shape.hidden) / shape.layers
    assert ckpt == pytest.approx(shape.layers * shape.hidden + per_layer + 3 * shape.hidden)


# ---- storage: the Arrow bytes per token measured in BENCHMARKS.md section 3 (SmolLM2, vocab 49,152)


MEASURED_BYTES = [("offline_topk", 8, 34.0), ("offline_topk", 32, 130.0), ("offline_topk", 128, 514.0),
                  ("offline_sampled", None, 36.8)]  # fmt: skip


@pytest.mark.parametrize("mode, k, measured", MEASURED_BYTES)
def test_storage_matches_the_measured_bytes_per_token(mode, k, measured):
    assert offline_bytes_per_token(mode, 49152, k=k or 0) == pytest.approx(measured, rel=0.01)


# ---- fit verdict, fixes and the command line


def test_does_not_fit_names_changes_that_do(tmp_path):
    LlamaConfig(**LLAMA3_8B).save_pretrained(tmp_path / "student")
    args = EstimateArguments(teacher="70B", student=str(tmp_path / "student"), tokens=1e9, seq_len=4096,
                             micro_batch_size=4, accelerator="a100-80gb", num_devices=1)  # fmt: skip
    estimate = estimate_distillation(args)
    assert not estimate.fits("none")
    assert estimate.fixes["none"] == []  # 140 GB of teacher alone: no single change fits one device
    eight = estimate_distillation(dataclasses.replace(args, num_devices=8))
    # 97 GB of bf16 activations per device (16k tokens x 32 layers): sharding alone is not enough ...
    assert not eight.fits("zero3") and not eight.fits("fsdp")
    assert "turn on activation checkpointing" in eight.fixes["zero3"]
    # ... and the fix it names does fit, while an unsharded device still cannot hold the 140 GB teacher.
    assert eight.fits("zero3", checkpointing=True) and eight.fits("fsdp", checkpointing=True)
    assert not eight.fits("none", checkpointing=True)
    assert "DOES NOT FIT" in format_estimate(eight)


def test_estimate_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        cli_main(["estimate", "--help"])
    text = capsys.readouterr().out
    for item in dataclasses.fields(EstimateArguments):
        assert f"--{item.name}" in text
        assert item.metadata.get("help"), item.name


def test_missing_models_are_a_clear_error():
    with pytest.raises(ValueError, match="--teacher and --student"):
        EstimateArguments(teacher="70B")


def test_recipe_prints_the_estimate_before_training(tmp_path, capsys):
    from conftest import make_tiny_llama, make_word_tokenizer

    from hf_distill.recipe.parsing import parse_recipe_args
    from hf_distill.recipe.runner import build_trainer, print_estimate

    teacher_dir = tmp_path / "teacher"
    make_tiny_llama(vocab_size=64, num_layers=4).save_pretrained(teacher_dir)
    make_word_tokenizer(64).save_pretrained(teacher_dir)
    config = str(__import__("pathlib").Path(__file__).parents[1] / "recipes" / "configs" / "cpu_smollm2.yaml")
    recipe, args, model_args = parse_recipe_args([
        "--config", config, "--output_dir", str(tmp_path / "out"), "--model_name_or_path", str(teacher_dir),
        "--teacher_model_name_or_path", str(teacher_dir), "--student_num_layers", "2", "--num_eval_files", "2",
        "--max_steps", "2", "--max_length", "16",
    ])  # fmt: skip
    run = build_trainer(recipe, args, model_args)
    print_estimate(recipe, run)
    out = capsys.readouterr().out
    student = run.trainer.model
    student_params = sum(p.numel() for p in student.parameters())
    matmul_params = student_params - student.model.embed_tokens.weight.numel()  # untied: the lookup is no matmul
    teacher_params = sum(p.numel() for p in run.trainer.teacher_model.parameters())
    assert f"({teacher_params:.3g} params) -> student" in out and f"({student_params:.3g} params)" in out
    tokens = 2 * 4 * 16  # max_steps x batch x max_length
    assert f"{6 * matmul_params * tokens:10.3e}" in out  # student training FLOPs
    assert "Memory per device" in out and not math.isnan(student_params)
